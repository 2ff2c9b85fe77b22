"""generation.batch_invariant: vLLM's batch-invariant kernels switched on (VLLM_BATCH_INVARIANT=1 before vllm is
imported), on in every sweep, a result-affecting setting, refused on hardware vLLM does not support for it.

This machine has no GPU and no vLLM: the tests check the switch and the refusals on the real code paths;
that vLLM then generates the same tokens for 1 or 8 replicas is vLLM's claim (its 0.32 documentation)."""

import os
import sys
import types

import pytest
from omegaconf import OmegaConf

from drift_exp.config import GenerationConfig, result_fields
from drift_exp.errors import ConfigError
from drift_exp.generation.vllm import BATCH_INVARIANT_ENV, VLLMGenerator, set_batch_invariance
from drift_exp.records import GenRequest
from drift_exp.sweeps import compose_jobs, sweep_files


def test_the_switch_is_set_in_the_environment_the_engine_inherits(monkeypatch):
    monkeypatch.delenv(BATCH_INVARIANT_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    set_batch_invariance(True)
    assert os.environ[BATCH_INVARIANT_ENV] == "1"
    set_batch_invariance(False)  # off is written too, so a stray VLLM_BATCH_INVARIANT=1 cannot decide it
    assert os.environ[BATCH_INVARIANT_ENV] == "0"


def test_a_process_that_imported_vllm_with_the_other_setting_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))  # as if vllm had been imported here
    monkeypatch.setenv(BATCH_INVARIANT_ENV, "0")
    with pytest.raises(ConfigError, match=r"generation.batch_invariant=true: vllm is already imported .*=0"):
        set_batch_invariance(True)
    set_batch_invariance(False)  # the same setting again is fine
    assert os.environ[BATCH_INVARIANT_ENV] == "0"


def test_without_a_supported_gpu_the_engine_is_not_started(monkeypatch, tmp_path):
    """No GPU here: generate_share stops with the key named, before vllm is imported (vLLM is not installed,
    so reaching the import would be an ImportError instead)."""
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    gen = VLLMGenerator(GenerationConfig(backend="vllm", batch_invariant=True))
    req = GenRequest(record_id="r", slot="chosen", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ConfigError, match=r"generation.batch_invariant=true needs a GPU .*batch_invariant=false"):
        gen.generate_share(str(tmp_path), [req], seed=1, replica=0, replicas=1)


def test_a_result_affecting_setting_off_by_default():
    assert GenerationConfig().batch_invariant is False
    assert result_fields(GenerationConfig())["batch_invariant"] is False  # enters the resume key


def test_every_sweep_runs_batch_invariant_and_a_cpu_override_keeps_it():
    for name, path in sweep_files().items():
        assert OmegaConf.select(OmegaConf.load(path), "generation.batch_invariant") is True, name
    jobs = compose_jobs("table7", ["model=tiny", "generation=hf"])
    # generation=hf keeps the setting (HF ignores it: its completions never depend on the replica count).
    assert len(jobs) == 3 and all((cfg.generation.backend, cfg.generation.batch_invariant) == ("hf", True)
                                  for _, cfg in jobs)
