"""The pairs preview (iter_k/pairs_preview.md and the W&B table pairs/preview): enough to judge a pair, built from
the real pair builders' output and the iteration's completions and requests files."""

import json
from pathlib import Path

from drift_exp.config import MethodConfig, PromptFormat
from drift_exp.methods import build_method
from drift_exp.preview import COLUMNS, preview_rows, render_markdown, write_preview
from drift_exp.records import Completion, FeedbackRecord, PreferencePair, write_jsonl

CONTEXT = [{"role": "user", "content": "x" * 400 + " who wrote pride and prejudice"}]
DSAT = FeedbackRecord(id="wf-dsat", prompt=CONTEXT, rejected="Charlotte Brontë.",
                      feedback="no that's wrong, it was jane austen", meta={"kind": "dsat"})
DSAT2 = FeedbackRecord(id="wf-dsat2", prompt=[{"role": "user", "content": "hi"}], rejected="bye",
                       feedback="rude", meta={"kind": "dsat"})
SAT = FeedbackRecord(id="wf-sat", prompt=[{"role": "user", "content": "2+2?"}], chosen="4", feedback="thanks",
                     meta={"kind": "sat"})
INSTRUCTION = "Write a better reply that fixes what the user complained about."


def iteration(folder: Path, kind: str, records: list[FeedbackRecord], samples: dict, finished: dict,
              **cfg) -> tuple[object, list[PreferencePair]]:
    """Requests, completions (with `finished` per sample) and pairs of one iteration, by the real pair builder,
    written to `folder` as the pipeline writes them."""
    method = build_method(MethodConfig(name=kind, kind=kind, instruction=INSTRUCTION, **cfg))
    requests = method.requests(records, 1)
    completions = [Completion(record_id=r.record_id, slot=r.slot, outputs=samples[(r.record_id, r.slot)],
                              finished=finished[(r.record_id, r.slot)]) for r in requests]
    write_jsonl(folder / "requests.jsonl", requests)
    write_jsonl(folder / "completions.jsonl", completions)
    pairs = method.pairs(records, completions)
    for p in pairs:
        p.meta["iteration"] = 1
    return method, pairs


def test_drift_pairs_show_the_complaint_the_instruction_and_what_was_cut(tmp_path):
    for fmt in (PromptFormat.plain, PromptFormat.chat):
        folder = tmp_path / fmt.value
        folder.mkdir()
        method, pairs = iteration(folder, "drift", [DSAT, DSAT2],
                                  {("wf-dsat", "chosen"): ["Jane Austen wrote it.", "It was Jane Aus"],
                                   ("wf-dsat2", "chosen"): [" \n", "Hello!"]},
                                  {("wf-dsat", "chosen"): [True, False], ("wf-dsat2", "chosen"): [False, True]},
                                  prompt_format=fmt, n_samples=2)
        assert method.stats["skipped_empty_sample"] == 1 and len(pairs) == 3
        path = write_preview(folder, pairs, 1, "drift", records=[DSAT, DSAT2], stats=method.stats)
        rows = preview_rows(pairs, 5, 1, "drift", [DSAT, DSAT2],
                            [Completion(**json.loads(line)) for line in (folder / "completions.jsonl").open()])
        assert [r["chosen_cut"] for r in rows] == [False, True, False]  # sample 0 ended with EOS, 1 hit the limit
        assert [r["rejected_cut"] for r in rows] == [None] * 3  # the DSAT reply comes from the data
        text = path.read_text()
        assert text.startswith("# Iteration 1: 3 of 3 pairs (drift)\n")
        assert "1 policy sample came back empty and was skipped" in text
        assert text.count("> no that's wrong, it was jane austen") == 2 and "> rude" in text
        assert text.count(f"> {INSTRUCTION}") == 3, fmt  # read back from the guided request of either format
        assert "**Chosen** (21 chars, ended with EOS)" in text
        assert "**Chosen** (15 chars, cut at the token limit)" in text
        assert "**Rejected** (17 chars)" in text
        assert "> user: …" + "x" * 270 + " who wrote pride and prejudice\n" in text  # its last 300 characters


def test_unguided_and_sat_pairs_show_no_instruction_and_spin_marks_its_sampled_rejected(tmp_path):
    method, pairs = iteration(tmp_path, "drift", [DSAT], {("wf-dsat", "chosen"): ["Austen."]},
                              {("wf-dsat", "chosen"): [True]}, guided=False)
    (row,) = preview_rows(pairs, 5, 1, "drift_unguided", [DSAT], [], [])
    assert row["instruction"] is None and row["complaint"] == DSAT.feedback  # why the rejected was rejected
    method, pairs = iteration(tmp_path, "spin", [SAT], {("wf-sat", "rejected"): ["5"]},
                              {("wf-sat", "rejected"): [False]})
    path = write_preview(tmp_path, pairs, 1, "spin", records=[SAT], stats=method.stats)
    text = path.read_text()
    assert "complaint" not in text and "Instruction" not in text  # a SAT record's follow-up is no complaint
    assert "**Chosen** (1 chars)" in text and "**Rejected** (1 chars, cut at the token limit)" in text
    assert "0 policy samples came back empty and were skipped" in text


def test_ranked_iterdpo_pairs_show_rewards_and_each_samples_cut(tmp_path):
    class LengthScorer:  # known scores (the answer's length), to know which sample is chosen
        def score(self, questions, answers):
            return [float(len(a)) for a in answers]

    method = build_method(MethodConfig(name="iterdpo", kind="iterdpo", guided=False))
    (req,) = method.requests([DSAT], 1)
    comp = Completion(record_id=DSAT.id, slot=req.slot, outputs=["short", "a longer one"], finished=[True, False])
    write_jsonl(tmp_path / "completions.jsonl", [comp])
    pairs = method.pairs([DSAT], [comp], LengthScorer())
    (row,) = preview_rows(pairs, 5, 2, "iterdpo_unguided", [DSAT], [comp], [])
    assert (row["chosen"], row["chosen_cut"], row["rejected"], row["rejected_cut"]) == (
        "a longer one", True, "short", False)
    assert (row["reward_chosen"], row["reward_rejected"], row["iteration"]) == (12.0, 5.0, 2)
    text = render_markdown([row], 2, 1, "iterdpo_unguided")
    assert "reward 12.000 vs 5.000" in text and "came back empty" not in text  # no stats given: no claim


def test_without_the_iterations_files_the_preview_still_shows_the_pairs(tmp_path):
    pairs = [PreferencePair(id="r1-s0", prompt=[{"role": "user", "content": "q"}], chosen="# A heading\nchosen",
                            rejected="", meta={"record_id": "r1", "sampled": "chosen", "sample_index": 0})]
    text = write_preview(tmp_path, pairs, 1, "drift").read_text()
    assert "> # A heading" in text and "> (empty)" in text  # a reply's Markdown stays quoted
    assert "**Chosen** (18 chars)" in text


def test_pairs_preview_wandb_table_is_typed(tmp_path, monkeypatch):
    import wandb

    from drift_exp.report.wandb_offline import read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    method, pairs = iteration(tmp_path, "drift", [DSAT], {("wf-dsat", "chosen"): ["Austen.", "Jane"]},
                              {("wf-dsat", "chosen"): [True, False]}, n_samples=2)
    run = wandb.init(project="t", dir=str(tmp_path), mode="offline")
    try:
        write_preview(tmp_path, pairs, 1, "drift", run=run, records=[DSAT], stats=method.stats)
    finally:
        run.finish()
    wandb.teardown()  # the offline files are complete once W&B's service has ended
    (folder,) = Path(tmp_path, "wandb").glob("offline-run-*")
    logged = read_offline_run(folder)
    (row,) = [r for r in logged.history if "pairs/preview" in r]
    assert row["iteration"] == 1  # the table sits on the iteration axis
    table = json.loads((folder / "files" / row["pairs/preview"]["path"]).read_text())
    assert table["columns"] == COLUMNS
    rows = [dict(zip(COLUMNS, line, strict=True)) for line in table["data"]]
    assert [(r["pair"], r["iteration"], r["method"], r["chosen_chars"], r["chosen_cut"], r["rejected_cut"])
            for r in rows] == [("wf-dsat-s0", 1, "drift", 7, False, None), ("wf-dsat-s1", 1, "drift", 4, True, None)]
    assert rows[0]["complaint"] == DSAT.feedback and rows[0]["instruction"] == INSTRUCTION
    assert rows[0]["reward_chosen"] is None
