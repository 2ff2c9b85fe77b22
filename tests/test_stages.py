"""Stage markers: done stages are reused, changed ones refused or (with overwrite) discarded downstream."""

import json

import pytest

from drift_exp.errors import StageConflict
from drift_exp.stages import RunDir, key_of
from drift_exp.training.dpo import derive_batch


def finish_iteration(rd: RunDir, k: int, parent: str, temperature: float) -> str:
    key = parent
    for name, section in [("requests", {"n": 1}), ("generate", {"temperature": temperature}),
                          ("pairs", {}), ("train", {"lr": 1e-6})]:
        st = rd.stage(k, name, key, section)
        assert not st.done
        (st.folder / f"{name}.out").write_text("x")
        st.finish({"made": name})
        key = st.key
    return key


def test_done_stage_is_reused_with_its_stats(tmp_path):
    rd = RunDir(tmp_path, overwrite=False)
    finish_iteration(rd, 1, "p", 0.7)
    st = rd.stage(1, "requests", "p", {"n": 1})
    assert st.done and st.stats == {"made": "requests"}


def test_changed_setting_is_refused_naming_it(tmp_path):
    rd = RunDir(tmp_path, overwrite=False)
    finish_iteration(rd, 1, "p", 0.7)
    key = rd.stage(1, "requests", "p", {"n": 1}).key
    with pytest.raises(StageConflict, match=r"iter_1/generate .*temperature: 0\.7 -> 1\.0.*run\.overwrite=true"):
        rd.stage(1, "generate", key, {"temperature": 1.0})


def test_overwrite_discards_the_stage_and_everything_after(tmp_path):
    rd = RunDir(tmp_path, overwrite=False)
    k1 = finish_iteration(rd, 1, "p", 0.7)
    finish_iteration(rd, 2, k1, 0.7)
    rd = RunDir(tmp_path, overwrite=True)
    key = rd.stage(1, "requests", "p", {"n": 1}).key
    st = rd.stage(1, "generate", key, {"temperature": 1.0})
    assert not st.done
    assert set(json.loads((tmp_path / "iter_1" / "DONE").read_text())) == {"requests"}
    assert not (tmp_path / "iter_2").exists()


def test_an_upstream_change_changes_every_downstream_key():
    assert key_of("a", {"x": 1}) != key_of("b", {"x": 1})
    assert key_of("a", {"x": 1}) == key_of("a", {"x": 1})


@pytest.mark.parametrize("world,expect", [(1, (4, 1)), (2, (2, 1)), (4, (1, 1))])
def test_global_batch_is_kept_whatever_the_world_size(world, expect):
    assert derive_batch(4, 4, world) == expect


def test_gradient_accumulation_makes_up_the_global_batch():
    micro, accum = derive_batch(64, 4, 8)
    assert (micro, accum) == (4, 2) and micro * accum * 8 == 64
    assert derive_batch(12, 5, 1) == (4, 3)


def test_indivisible_global_batch_is_a_config_error():
    from drift_exp.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.global_batch_size=4 is not divisible by the world size 3"):
        derive_batch(4, 4, 3)


def test_a_changed_eval_config_reruns_only_the_eval(tmp_path):
    rd = RunDir(tmp_path, overwrite=False)
    k1 = finish_iteration(rd, 1, "p", 0.7)
    finish_iteration(rd, 2, k1, 0.7)
    st = rd.stage(1, "eval", k1, {"benchmarks": ["proxy"]})
    st.finish({"proxy": 1.0})
    again = rd.stage(1, "eval", k1, {"benchmarks": ["proxy", "wildbench"]})  # no refusal, no overwrite needed
    assert not again.done
    assert set(json.loads((tmp_path / "iter_1" / "DONE").read_text())) == {"requests", "generate", "pairs", "train"}
    assert (tmp_path / "iter_2" / "DONE").exists()  # later iterations untouched
