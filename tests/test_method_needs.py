"""Methods own their knowledge: what a method needs is declared by the method (drift_exp/methods/protocol.Needs) and
read by the config check, the hub check and the plan; adding a method is its module and its conf/method/ file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from drift_exp import hub, plan
from drift_exp.config import MethodConfig
from drift_exp.errors import ConfigError
from drift_exp.methods import ULTRAFEEDBACK, WILDFEEDBACK, Needs, build_method, data_family, method_needs
from drift_exp.records import FeedbackRecord

from .conftest import ROOT


@pytest.mark.parametrize(("kind", "guided", "n", "family", "needs"), [
    ("drift", True, 1, WILDFEEDBACK, Needs("dsat", 1, 1, 1)),
    ("drift", True, 3, ULTRAFEEDBACK, Needs("pref", 3, 3, 3)),
    ("spin", False, 1, WILDFEEDBACK, Needs("sat", 1, 1, 1)),
    ("spin", False, 2, ULTRAFEEDBACK, Needs("pref", 2, 2, 2)),
    # guided IterDPO on WildFeedback: a guided chosen and a context-only rejected, no reward model
    ("iterdpo", True, 1, WILDFEEDBACK, Needs("dsat", 2, 1, 1, reward_model=False)),
    ("iterdpo", True, 2, WILDFEEDBACK, Needs("dsat", 4, 2, 2, reward_model=False)),
    # unguided, or UltraFeedback: two samples of one request ranked by the reward model
    ("iterdpo", False, 1, WILDFEEDBACK, Needs("dsat", 2, 2, 1, reward_model=True)),
    ("iterdpo", True, 1, ULTRAFEEDBACK, Needs("pref", 2, 2, 1, reward_model=True)),
])
def test_each_method_declares_its_needs(kind, guided, n, family, needs):
    cfg = MethodConfig(name=kind, kind=kind, guided=guided, n_samples=n)
    assert build_method(cfg).needs(family) == needs


@pytest.mark.parametrize(("kind", "guided"), [("drift", True), ("spin", False), ("iterdpo", True), ("iterdpo", False)])
def test_the_declaration_agrees_with_what_the_method_does(kind, guided):
    """requests() asks for exactly samples_per_record samples per record, no request for more than
    samples_per_request, of the declared record kind; needs_scorer at run time is the declared reward_model."""
    q = [{"role": "user", "content": "q"}]
    dsat = FeedbackRecord(id="d", prompt=q, rejected="bad", feedback="no", meta={"kind": "dsat"})
    sat = FeedbackRecord(id="s", prompt=q, chosen="good", feedback="thanks", meta={"kind": "sat"})
    pref = FeedbackRecord(id="p", prompt=q, chosen="a", rejected="b", meta={"kind": "pref"})
    method = build_method(MethodConfig(name=kind, kind=kind, guided=guided, n_samples=2))
    for records in ([dsat, sat], [pref]):
        family = ULTRAFEEDBACK if records == [pref] else WILDFEEDBACK
        needs = method.needs(family)
        assert method.record_kind(records) == needs.record_kind
        assert method.needs_scorer(records) == needs.reward_model
        targets = [r for r in records if r.kind == needs.record_kind]
        requests = method.requests(targets, 1)
        assert sum(r.n for r in requests) == needs.samples_per_record * len(targets)
        assert max(r.n for r in requests) == needs.samples_per_request


def test_data_family_from_the_config_alone():
    assert data_family("auto") == data_family("annotation") == data_family("released") == WILDFEEDBACK
    assert data_family("ultrafeedback_binarized") == data_family("ultrafeedback_raw") == ULTRAFEEDBACK


MISSING_RM = ["method=iterdpo", "data=sample", "eval.benchmarks=[]", "scorer.path=/nonexistent/reward-model"]


def test_guided_iterdpo_on_wildfeedback_never_needs_the_reward_model(monkeypatch, capsys):
    """The bug: guided IterDPO on WildFeedback never loads the reward model, yet a missing scorer.path refused it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (_, cfg), = plan.compose(MISSING_RM)
    assert not method_needs(cfg.method, cfg.data.format).reward_model and hub.scorer_uses(cfg) == []
    plan.validate(cfg)  # the config check of every run: passes
    hub.check_hub(cfg)  # offline, and nothing from the hub is needed
    assert not [n for n in hub.needed(cfg) if n.key == "scorer.path"]
    assert plan.main(MISSING_RM) == 0, capsys.readouterr().out


@pytest.mark.parametrize("extra", [["method=iterdpo_unguided"], ["eval.benchmarks=[proxy]"],
                                   ["data=uf_sample"]])
def test_the_reward_model_is_checked_where_it_is_loaded(extra, capsys):
    (_, cfg), = plan.compose([*MISSING_RM, *extra])
    assert hub.scorer_uses(cfg)
    with pytest.raises(ConfigError, match=r"^scorer.path='/nonexistent/reward-model': no such file or folder"):
        plan.validate(cfg)
    assert plan.main([*MISSING_RM, *extra]) == 1
    assert ": scorer.path: " in capsys.readouterr().out.split("problem(s):", 1)[1]


def test_hub_needs_name_the_method_that_ranks():
    (_, cfg), = plan.compose(["method=iterdpo_unguided", "model=qwen7b", "eval.benchmarks=[]"])
    (need,) = [n for n in hub.needed(cfg) if n.key == "scorer.path"]
    assert need.what == "the reward model of iterdpo-unguided's ranking"
    (_, cfg), = plan.compose(["method=iterdpo", "model=qwen7b", "eval.benchmarks=[]"])
    assert not [n for n in hub.needed(cfg) if n.key == "scorer.path"]


def test_a_method_rule_is_the_methods_own():
    (_, cfg), = plan.compose(["method=iterdpo", "data=uf_sample", "generation.temperature=0"])
    with pytest.raises(ConfigError, match=r"IterDPO's \(UltraFeedback\) two samples of a prompt would be identical"):
        plan.validate(cfg)
    (_, cfg), = plan.compose(["method=iterdpo", "data=sample", "generation.temperature=0"])
    plan.validate(cfg)  # guided on WildFeedback: a chosen and a rejected request of one sample each


# ------------------------------------------------------------------------------------------------ end to end

FAST = ["setting.max_records=3", "generation.max_new_tokens=8", "trainer.warm_start_epochs=0", "eval.benchmarks=[]",
        "tracking.mode=disabled", "run.stop_after=pairs"]


def run_cli(cwd: Path, run_dir: Path, *overrides: str, module: str = "drift_exp") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(cwd), HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    args = [f"hydra.run.dir={run_dir}", *overrides] if module == "drift_exp" else list(overrides)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.e2e
def test_guided_iterdpo_runs_without_the_reward_model(tmp_path, model_cache):
    proc = run_cli(ROOT, tmp_path / "run", *MISSING_RM, *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pairs = (tmp_path / "run" / "iter_1" / "pairs.jsonl").read_text().splitlines()
    assert pairs and all('"policy_guided"' in line for line in pairs)
    proc = run_cli(ROOT, tmp_path / "run2", *MISSING_RM, *FAST, "method=iterdpo_unguided")
    assert proc.returncode == 2 and "scorer.path='/nonexistent/reward-model': no such file" in proc.stdout + proc.stderr


THROWAWAY_MODULE = '''"""A method made up for a test: chosen = a policy sample of the context before a SAT
reply, rejected = the same sample backwards."""

from collections import Counter

from drift_exp.methods.prompts import plain_request
from drift_exp.methods.protocol import Builder, each_sample, pair


class Mirror(Builder):
    iterates_on = "sat"

    def requests(self, records, iteration):
        return [plain_request(r, "chosen", self.cfg.n_samples) for r in records]

    def pairs(self, records, completions, scorer=None):
        self.stats = Counter()
        out = [pair(rec, f"s{i}", chosen=text, rejected=text[::-1], sampled="chosen", sample_index=i)
               for rec, i, text in each_sample(records, completions, self.stats)]
        self.stats["pairs"] = len(out)
        return out


PAIR_BUILDER = Mirror
'''


@pytest.mark.e2e
def test_a_new_method_is_its_module_and_its_conf_file(tmp_path, model_cache):
    """A copy of the package with exactly two files added runs the new method through requests, generation and
    pairs on the tiny model; the config check, the plan and the record selection read its needs."""
    copy = tmp_path / "copy"
    for name in ("drift_exp", "conf", "sweeps"):  # the package and the config tree, wherever they live
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    methods = copy / "drift_exp" / "methods"
    conf_method = next(copy.rglob("conf/method"))
    (methods / "mirror.py").write_text(THROWAWAY_MODULE)
    (conf_method / "mirror.yaml").write_text("name: mirror\nkind: mirror\nguided: false\n")

    proc = run_cli(copy, tmp_path, "method=mirror", module="drift_exp.plan")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    proc = run_cli(copy, run_dir, "method=mirror", *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    assert stats["used"]["kind"] == "sat" and stats["used"]["records"] == 3  # its declared record kind
    requests = [json.loads(line) for line in (run_dir / "iter_1" / "requests.jsonl").read_text().splitlines()]
    assert len(requests) == 3 and {r["slot"] for r in requests} == {"chosen"}
    pairs = [json.loads(line) for line in (run_dir / "iter_1" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["rejected"] == p["chosen"][::-1] for p in pairs)
