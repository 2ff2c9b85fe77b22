"""`python -m drift_exp.report`: the paper's numbers match the paper cell by cell, ours sit beside them, and a
real sweep on the tiny model renders to Markdown, CSV and PNG.

The paper's tables are parsed here from tests/fixtures/paper_tables.md (a verbatim excerpt of the paper),
independently of drift_exp/paper_numbers.csv and of the report's own code.
"""

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drift_exp.report import build_report
from drift_exp.report.__main__ import main as report_main
from drift_exp.report.wandb_offline import read_offline_run

from .conftest import ROOT
from .helpers import EXPERIMENT, wandb_teardown, wb, write_experiment_run, write_run

FIXTURE = Path(__file__).parent / "fixtures" / "paper_tables.md"
DATA_FILE = ROOT / "drift_exp" / "paper_numbers.csv"
METHODS = {"<i>SPIN</i>": "spin", "<i>IterDPO</i>": "iterdpo", "<i>DRIFT (Ours)</i>": "drift"}
LABEL_TO_METRIC = {"Elo": "elo", "Task": "task", "Creative": "creative", "Reasoning": "reasoning", "Math": "math",
                   "Info Seek": "info_seek", "Coding": "coding", "Length": "length", "Win": "win", "LC": "lc"}
MISSING = "–"


# ---------------------------------------------------------------- the paper, parsed from the fixture

def _blocks() -> dict[str, list[list[str]]]:
    """Caption id ('3', '4', '5', '6', '7') -> the table's rows (tab-separated cells), header included.
    A table starts after its caption line and ends at the first blank line after its rows."""
    blocks: dict[str, list[list[str]]] = {}
    current = None
    for line in FIXTURE.read_text().splitlines():
        m = re.match(r"Table (\d): ", line)
        if m:
            current = blocks.setdefault(m.group(1), [])
        elif current is not None and not line.strip():
            current = current if not current else None
        elif current is not None:
            current.append(line.split("\t"))
    return blocks


def paper_cells() -> set[tuple]:
    """(table, data, model, setting, method, iteration, metric, value) for every number of the excerpt."""
    cells = set()
    blocks = _blocks()
    for table, data in (("3", "wildfeedback"), ("4", "ultrafeedback")):
        columns = [("qwen7b", "elo"), ("qwen7b", "task"), ("qwen14b", "elo"), ("qwen14b", "task"),
                   ("qwen7b", "win"), ("qwen7b", "lc"), ("qwen14b", "win"), ("qwen14b", "lc")]
        rows = blocks[table]
        assert [c.strip() for c in rows[2] if c.strip()] == ["Elo", "Score", "Elo", "Score", "Win", "LC", "Win", "LC"]
        setting, method = ("full" if table == "4" else None), None
        for cells_ in rows[3:]:
            head, values = cells_[0].strip(), [v.strip() for v in cells_[1:]]
            if head.endswith("Setting"):
                setting = head.split()[0].lower()
            elif head in METHODS:
                method = METHODS[head]
            else:
                key = (("", "", "base", 0) if head == "Base" else (data, "", "seed", 0) if head == "Seed"
                       else (data, setting, method, int(head.removeprefix("iter"))))
                assert len(values) == 8
                for (model, metric), v in zip(columns, values, strict=True):
                    cells.add((table, key[0], model, key[1], key[2], key[3], metric, v))
    method = None
    for row in blocks["6"][1:]:
        head = row[0].strip()
        if head in METHODS:
            method = METHODS[head]
            continue
        m = re.fullmatch(r"iter(\d)(?: \((Unguided|Full)\))?", head)
        name = method + ("-unguided" if m.group(2) == "Unguided" else "")
        setting = "controlled" if method == "spin" else "full"  # SPIN = Table 3's controlled SPIN
        cells.add(("6", "wildfeedback", "qwen7b", setting, name, int(m.group(1)), "task", row[1].strip()))
        cells.add(("6", "wildfeedback", "qwen7b", setting, name, int(m.group(1)), "win", row[2].strip()))
    header7 = [LABEL_TO_METRIC[c.strip()] for c in blocks["7"][0][1:]]
    for row in blocks["7"][1:]:
        head = row[0].strip()
        if head in METHODS:
            method = METHODS[head]
            continue
        key = (("", "", "base", 0) if head == "Base" else
               ("wildfeedback", "controlled" if method == "spin" else "full", method, int(head.removeprefix("iter"))))
        for metric, v in zip(header7, row[1:], strict=True):
            cells.add(("7", key[0], "gemma12b", key[1], key[2], key[3], metric, v.strip()))
    header5 = [LABEL_TO_METRIC[c.strip()] for c in blocks["5"][0][1:]]
    for row in blocks["5"][1:]:
        name = row[0].strip()
        m = re.fullmatch(r"Qwen2\.5-(7B|14B)-(?:Instruct|(WildFeedback|UltraFeedback)-(\w+?)((?:-iter\d|-4k)*))",
                         name)
        if not m:
            continue  # another model of the leaderboard, or the "-RPO" variant
        model, data, method = "qwen" + m.group(1).lower(), (m.group(2) or "").lower(), (m.group(3) or "base").lower()
        it = re.search(r"iter(\d)", m.group(4) or "")
        controlled = "4k" in (m.group(4) or "") or (method == "spin" and data == "wildfeedback")
        setting = "" if method in ("base", "seed") else "controlled" if controlled else "full"
        for metric, v in zip(header5, row[1:], strict=True):
            cells.add(("5", data, model, setting, method, int(it.group(1)) if it else 0, metric, v.strip()))
    text = FIXTURE.read_text()
    it4, it5 = re.search(r"up to iter4 \((\d+\.\d+)\).*\((\d+\.\d+) at iter5\)", text).groups()
    cells |= {("figure2", "wildfeedback", "qwen7b", "full", "drift", 4, "task", it4),
              ("figure2", "wildfeedback", "qwen7b", "full", "drift", 5, "task", it5)}
    return cells


@pytest.fixture(scope="module")
def paper() -> set[tuple]:
    return paper_cells()


def test_fixture_parses_every_table(paper):
    counts = {t: sum(c[0] == t for c in paper) for t in ("3", "4", "5", "6", "7", "figure2")}
    # Table 3: 12 rows x 8; Table 4: 7 x 8; Table 5: 36 Qwen rows x 8; Table 6: 10 x 2; Table 7: 7 x 6.
    assert counts == {"3": 96, "4": 56, "5": 288, "6": 20, "7": 42, "figure2": 2}


def test_data_file_is_the_paper_cell_for_cell(paper):
    with open(DATA_FILE, newline="") as f:
        shipped = {(r["table"], r["data"], r["model"], r["setting"], r["method"], int(r["iteration"]), r["metric"],
                    r["value"]) for r in csv.DictReader(f)}
    assert shipped - paper == set(), "in paper_numbers.csv but not in the paper"
    assert paper - shipped == set(), "in the paper but not in paper_numbers.csv"


def test_a_cell_repeated_across_tables_has_one_value(paper):
    values: dict[tuple, set[str]] = {}
    for cell in paper:
        values.setdefault(cell[1:7], set()).add(cell[7])
    assert {k: v for k, v in values.items() if len(v) > 1} == {}


# ---------------------------------------------------------------- runs made up for the report


@pytest.fixture(scope="module")
def fake_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fake") / "table3"
    write_run(root, "wildfeedback", "qwen7b", "drift", "full", {
        0: {"wildbench": wb(49.0), "alpaca_eval": {"win_rate": 40.0, "lc_win_rate": 41.0}},
        1: {"wildbench": wb(51.0, creative=52.0, elo=1200.0), "alpaca_eval": {"win_rate": 45.0},
            "proxy": {"reward_mean": 1.5, "reward_std": 0.5, "n": 16}},
        2: {"wildbench": {"task_macro": float("nan")}, "alpaca_eval": {"win_rate": None}},
    })
    write_run(root, "wildfeedback", "qwen7b", "spin", "controlled", {0: {}, 1: {"wildbench": wb(40.0)}})
    build_report([root], root / "report", log_to_wandb=False)
    return root / "report"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(text: str) -> float | None:
    """A results.csv cell as a program reads it: a number, or None for an empty cell."""
    return None if text == "" else float(text)


def md_tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(### heading, header, rows) of every Markdown table."""
    tables, heading, lines = [], None, text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("### "):
            heading = line[4:]
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("| ---"):
            body = []
            for row in lines[i + 2:]:
                if not row.startswith("| "):
                    break
                body.append([c.strip() for c in row.strip("|").split(" | ")])
            tables.append((heading, [c.strip() for c in line.strip("|").split(" | ")], body))
    return tables


def test_report_prints_the_papers_tables_exactly(fake_report, paper):
    text = (fake_report / "report.md").read_text()
    section = text[text.index("## The paper's numbers"):]
    printed = set()
    for heading, header, body in md_tables(section):
        table = re.match(r"(?:Table (\d)|Figure (2)):", heading).groups()
        table = table[0] or "figure2"
        assert header[:4] == ["data", "setting", "method", "iter"]
        for row in body:
            data, setting, method, it = ("" if v == MISSING else v for v in row[:4])
            for col, value in zip(header[4:], row[4:], strict=True):
                if value != MISSING:
                    model, label = col.split(" ", 1)
                    printed.add((table, data, model, setting, method, int(it), LABEL_TO_METRIC[label], value))
    assert printed == paper


def test_results_put_the_paper_beside_ours(fake_report, paper):
    rows = {(r["setting"], r["method"], r["iteration"], r["seed"]): r for r in read_csv(fake_report / "results.csv")}
    by_key = {(c[1], c[2], c[3], c[4], c[5], c[6]): c[7] for c in paper}
    for (setting, method, it, _), r in rows.items():
        data = "" if method == "base" else "wildfeedback"
        for metric in ("elo", "task", "creative", "reasoning", "math", "info_seek", "coding", "win", "lc"):
            expected = by_key.get((data, "qwen7b", setting, method, int(it), metric))
            assert r[f"{metric}_paper"] == (expected or ""), (setting, method, it, metric)  # as printed
    drift1 = {k: num(v) if k not in ("setting", "method", "data", "model", "runs", "elo_pool") else v
              for k, v in rows[("full", "drift", "1", "42")].items()}
    assert (drift1["task"], drift1["task_paper"], drift1["task_delta"]) == (51.0, 50.61, pytest.approx(0.39))
    assert (drift1["elo"], drift1["elo_delta"]) == (1200.0, pytest.approx(5.19))
    assert (drift1["creative"], drift1["creative_delta"]) == (52.0, pytest.approx(-0.09))
    assert (drift1["win"], drift1["win_delta"], drift1["lc"], drift1["lc_delta"]) == (45.0, pytest.approx(1.1), None,
                                                                                     None)
    assert drift1["proxy"] == 1.5 and drift1["loss"] == pytest.approx(0.5)  # written in full, not rounded
    seed = rows[("", "seed", "0", "42")]  # the warm start: one row for both runs
    assert (num(seed["task"]), seed["task_paper"], num(seed["task_delta"])) == (49.0, "49.11", pytest.approx(-0.11))
    assert len(seed["runs"].split()) == 2
    # A paper row no run produced keeps the table's shape, ours missing.
    iterdpo = rows[("controlled", "iterdpo", "2", "")]
    assert (iterdpo["task"], iterdpo["task_paper"], iterdpo["task_delta"]) == ("", "48.94", "")
    assert rows[("", "base", "0", "")]["elo_paper"] == "1194.67"


def test_missing_values_are_empty_cells_in_the_csv_and_dashes_in_markdown_never_zero(fake_report):
    drift2 = next(r for r in read_csv(fake_report / "results.csv") if (r["method"], r["iteration"]) == ("drift", "2"))
    for metric in ("task", "win", "elo", "creative", "lc", "proxy"):  # NaN, None, absent
        assert drift2[metric] == "" and drift2[f"{metric}_delta" if metric != "proxy" else metric] == ""
    assert MISSING not in (fake_report / "results.csv").read_text()
    text = (fake_report / "report.md").read_text()
    row = next(r for h, _, body in md_tables(text) if h.startswith("wildfeedback") for r in body
               if r[:3] == ["full", "drift", "2"])
    assert row[4:7] == [f"{MISSING} / 1199.09", f"{MISSING} / 51.69", f"{MISSING} / 52.45"]
    cells = [c for _, _, body in md_tables(text) for r in body for c in r]
    assert not [c for c in cells if c == "0.00" or c.startswith("0.00 ")]  # nothing made up as zero
    assert "51.00 / 50.61 (+0.39)" in text


def test_a_program_reads_the_csv_files(fake_report):
    pd = pytest.importorskip("pandas")
    table = pd.read_csv(fake_report / "results.csv")
    means = table.groupby("method").mean(numeric_only=True)
    # drift's rows: iteration 1 (51.0), iteration 2 (NaN: missing) and the paper's rows no run made (missing).
    assert means.loc["drift", "task"] == 51.0 and means.loc["drift", "task_paper"] > 40
    assert means.loc["drift", "task"] == pytest.approx(table[table.method == "drift"]["task"].dropna().mean())
    for column in ("iteration", "task", "task_paper", "task_delta", "elo", "loss", "proxy", "steps"):
        assert pd.api.types.is_numeric_dtype(table[column]), column
    long = pd.read_csv(fake_report / "results_long.csv")
    assert list(long.columns) == ["experiment", "method", "data", "model", "setting", "seed", "iteration", "metric",
                                  "value"]
    assert pd.api.types.is_float_dtype(long["value"]) and long["value"].notna().all()
    task = long[(long.metric == "task") & (long.method == "drift")].set_index("iteration")["value"]
    assert task.to_dict() == {1: 51.0}  # iteration 2's NaN is no row
    by_metric = long.pivot_table(index=["experiment", "iteration"], columns="metric", values="value")
    assert by_metric.loc[("wildfeedback-qwen7b-drift-full-s42", 1), "proxy"] == 1.5
    assert set(long.method) == {"seed", "drift", "spin"}


def test_figure2_tells_coinciding_series_apart(tmp_path):
    from drift_exp.report.figures import coinciding

    for method in ("drift", "spin", "iterdpo"):
        write_run(tmp_path, "sample", "tiny", method, "controlled",
                  {0: {"proxy": {"reward_mean": -0.2}}, 1: {"proxy": {"reward_mean": -0.2}}})
    write_run(tmp_path, "sample", "tiny", "drift", "full", {0: {"proxy": {"reward_mean": -0.2}},
                                                            1: {"proxy": {"reward_mean": 0.3}}})
    report = build_report([tmp_path], tmp_path / "report", log_to_wandb=False)
    text = report.markdown.read_text()
    note = next(line for line in text.splitlines() if line.startswith("Figure 2 (sample, tiny)"))
    assert "spin (controlled) = iterdpo (controlled) = drift (controlled)" in note and "drift (full)" not in note
    assert coinciding([("a", [(0, 1.0), (1, 2.0)]), ("b", [(0, 1.0), (1, 2.0)]), ("c", [(0, 1.0)])]) == [["a", "b"]]
    assert coinciding([("a", [(0, 1.0)]), ("b", [(0, 1.5)])]) == []


def test_coverage_figures_are_linked_from_the_report(tmp_path):
    root = tmp_path / "table6"
    write_run(root, "sample", "tiny", "drift", "full", {1: {"proxy": {"reward_mean": 0.1}}})
    cov = tmp_path / "coverage" / "drift-vs-spin"
    cov.mkdir(parents=True)
    (cov / "coverage.json").write_text(json.dumps({"average": {"drift": 0.6, "spin": 0.4}, "n_prompts": 3}))
    for name in ("fig3_coverage.png", "fig4_topography_0.png"):
        (cov / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    out = tmp_path / "report"
    assert report_main([str(root), "--out", str(out), "--coverage", str(cov), "--no-wandb"]) == 0
    text = (out / "report.md").read_text()
    links = re.findall(r"!\[(fig[34]_[a-z_0-9]+)\]\(([^)]+)\)", text)
    assert [name for name, _ in links] == ["fig3_coverage", "fig4_topography_0"]
    for _, link in links:
        assert (out / link).resolve() == (cov / Path(link).name).resolve()
    assert "drift 0.600, spin 0.400" in text


def test_each_data_set_gets_its_own_paper_rows(tmp_path):
    write_run(tmp_path, "wildfeedback", "qwen14b", "drift", "full", {1: {"wildbench": wb(57.0)}})
    write_run(tmp_path, "ultrafeedback", "qwen14b", "drift", "full", {1: {"wildbench": wb(58.0)}})
    report = build_report([tmp_path], tmp_path / "report", log_to_wandb=False)
    rows = read_csv(report.csv)
    base = {r["data"]: r["elo_paper"] for r in rows if r["method"] == "base"}
    assert base == {"wildfeedback": "1213.17", "ultrafeedback": "1213.17"}  # the same base model, both tables
    assert {r["data"] for r in rows if r["method"] == "seed"} == {"wildfeedback"}  # Table 4 has no Seed row
    uf = {(r["method"], r["iteration"]): r for r in rows if r["data"] == "ultrafeedback"}
    assert (uf[("drift", "1")]["task_paper"], num(uf[("drift", "1")]["task_delta"])) == ("58.52", pytest.approx(-0.52))
    assert uf[("spin", "2")]["win_paper"] == "13.66"


def write_base(run: Path, ev: dict) -> None:
    """base/metrics.json as drift_exp.evaluation.base writes it."""
    (run / "base").mkdir(parents=True, exist_ok=True)
    data, model, *_ = run.name.split("-")
    (run / "base" / "metrics.json").write_text(json.dumps({"stage": "base", "experiment": run.name, "data": data,
                                                           "model": model, "seed": 42, "eval": ev}))


def test_base_row_comes_from_base_and_seed_from_iteration_0_with_the_proxy_marked(tmp_path):
    official = {"judge": "gpt-4o-2024-05-13", "template": {"template": "official", "proxy": False}}
    paraphrase = {"judge": "gpt-4o-2024-05-13", "template": {"template": "project", "proxy": True}}
    drift = write_run(tmp_path, "wildfeedback", "qwen7b", "drift", "full", {
        0: {"wildbench": {**wb(49.5, elo=1190.0), **official}}, 1: {"wildbench": {**wb(50.0), **paraphrase}}})
    spin = write_run(tmp_path, "wildfeedback", "qwen7b", "spin", "controlled", {0: {}, 1: {}})
    for run in (drift, spin):  # the sweep's jobs share one base evaluation
        write_base(run, {"wildbench": {**wb(48.0, elo=1194.0), **official}, "alpaca_eval": {"win_rate": 37.0}})
    report = build_report([tmp_path], tmp_path / "report", log_to_wandb=False)
    rows = {(r["method"], r["iteration"]): r for r in read_csv(report.csv)}
    base, seed = rows[("base", "0")], rows[("seed", "0")]
    assert (num(base["task"]), base["task_paper"], num(base["task_delta"])) == (48.0, "48.66", pytest.approx(-0.66))
    assert (num(base["elo"]), base["elo_paper"], num(base["elo_delta"]), num(base["win"])) == (
        1194.0, "1194.67", pytest.approx(-0.67), 37.0)
    assert len(base["runs"].split()) == 2 and base["wb_template"] == "official"
    assert (num(seed["task"]), num(seed["elo"]), seed["elo_paper"]) == (49.5, 1190.0, "1193.66")
    text = report.markdown.read_text()
    (_, header, body), *_ = md_tables(text)
    assert [r[1] for r in body[:2]] == ["base", "seed"]
    assert body[0][4:6] == ["1194.00 / 1194.67 (-0.67)", "48.00 / 48.66 (-0.66)"]
    drift1 = next(r for r in body if r[:3] == ["full", "drift", "1"])
    assert drift1[5] == "50.00† / 50.61 (-0.61)"  # judged with the paraphrase: marked, and explained
    assert "† WildBench judged with this project's paraphrase" in text


def test_figures_are_pngs(fake_report):
    names = sorted(p.name for p in fake_report.glob("*.png"))
    assert names == ["figure2_wildfeedback-qwen7b.png", "figure5_wildfeedback-qwen7b-drift-full-s42.png",
                     "figure5_wildfeedback-qwen7b-spin-controlled-s42.png"]
    for name in names:
        assert_png(fake_report / name)


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = imread(path).shape
    assert height > 200 and width > 400


# ---------------------------------------------------------------- W&B

def test_wandb_without_api_key_fails_fast_and_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    t0 = time.perf_counter()
    assert report_main(["--wandb", "my-team/drift_exp", "--out", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert "W&B API key" in err and "WANDB_API_KEY" in err and "Traceback" not in err


class FakeRun:
    def __init__(self, k: int, method: str, task: float):
        self.id, self.job_type, self.group = f"r{method}{k}", "warm_start" if k == 0 else "iteration", "exp"
        self.config = {"iteration": k, "experiment": f"wildfeedback-qwen7b-{method}-full-s42", "seed": 42,
                       "method": {"name": method}, "data": {"name": "wildfeedback"}, "model": {"name": "qwen7b"},
                       "setting": {"name": "full"}, "run": {"sweep_name": "table3"},
                       "tracking": {"project": "drift_exp", "entity": None}}
        self.summary_metrics = {"train/loss": 0.3, "train/rewards/margins": 1.2, "eval/wildbench/task_macro": task,
                        "eval/wildbench/groups/Creative Tasks": task + 1, "eval/alpaca_eval/win_rate": 44.0,
                        "_runtime": 3}

    def scan_history(self, keys):
        return [{"train/loss": 0.7 - 0.1 * i, "train/rewards/chosen": 0.1 * i, "train/rewards/rejected": -0.1 * i,
                 "train/global_step": i + 1} for i in range(3)]


def test_wandb_runs_become_the_same_rows(tmp_path, monkeypatch):
    import wandb

    seen = {}

    class FakeApi:
        def __init__(self, timeout=None):
            seen["timeout"] = timeout

        def runs(self, path, filters=None, lazy=True):
            seen["path"], seen["filters"], seen["lazy"] = path, filters, lazy
            return [FakeRun(0, "drift", 49.0), FakeRun(1, "drift", 51.0), FakeRun(2, "drift", 50.0)]

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(wandb, "Api", FakeApi)
    report = build_report([], tmp_path / "out", wandb_path="team/drift_exp", tags=["method:drift"], sweep="table3",
                          log_to_wandb=False)
    assert seen["path"] == "team/drift_exp" and seen["filters"] == {"$and": [{"tags": {"$in": ["method:drift"]}}]}
    assert seen["lazy"] is False and seen["timeout"] == 30  # config and summary in one query; no endless wait
    rows = {(r["method"], r["iteration"]): r for r in read_csv(report.csv)}
    assert (num(rows[("drift", "1")]["task"]), rows[("drift", "1")]["task_paper"]) == (51.0, "50.61")
    assert num(rows[("drift", "2")]["creative"]) == 51.0
    assert num(rows[("seed", "0")]["task_delta"]) == pytest.approx(-0.11)
    assert num(rows[("drift", "1")]["margins"]) == 1.2
    assert_png(tmp_path / "out" / "figure5_wildfeedback-qwen7b-drift-full-s42.png")


def test_wandb_experiment_runs_become_the_same_rows(tmp_path, monkeypatch):
    """The one-run-per-experiment layout read through the API's interface (history rows keyed by `iteration`),
    from a real offline run of that layout."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    run = read_offline_run(write_experiment_run(tmp_path))

    class Api:
        def __init__(self, timeout=None):
            pass

        def runs(self, path, filters=None, lazy=True):
            return [run]

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(wandb, "Api", Api)
    report = build_report([], tmp_path / "out", wandb_path="team/drift_exp", sweep="table3", log_to_wandb=False)
    rows = {(r["method"], r["iteration"]): r for r in read_csv(report.csv)}
    assert (num(rows[("drift", "1")]["task"]), num(rows[("drift", "2")]["creative"])) == (51.0, 51.0)
    assert num(rows[("seed", "0")]["task"]) == 49.0 and num(rows[("base", "0")]["task"]) == 48.0
    assert num(rows[("drift", "2")]["margins"]) == pytest.approx(2.4)  # the last training row of iteration 2
    assert num(rows[("drift", "1")]["loss"]) == pytest.approx(0.49)
    from drift_exp.report.wandb_io import records_of

    recs = {r.iteration: r for r in records_of(run, "team/drift_exp") if r.method != "base"}
    assert [h["step"] for h in recs[2].metrics["train"]["history"]] == [7, 8, 9]
    assert recs[2].metrics["heldout"] == {"reward_accuracy": pytest.approx(0.7)}
    assert_png(tmp_path / "out" / f"figure5_{EXPERIMENT}.png")


def test_report_is_logged_to_wandb_offline_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    root = tmp_path / "sweep"
    write_run(root, "sample", "tiny", "drift", "controlled", {0: {}, 1: {"proxy": {"reward_mean": 0.1}}})
    report = build_report([root], tmp_path / "out")
    assert report.wandb and Path(report.wandb).is_dir() and Path(report.wandb).is_relative_to(tmp_path / "out")
    wandb_teardown()  # the run's file is written by W&B's service process: let it finish writing
    run = read_offline_run(Path(report.wandb))
    assert run.job_type == "report"
    assert {"tables/results", "tables/paper/table3", "figures/figure2_sample-tiny"} <= run.keys
    # The tables hold numbers as numbers and None where a value is missing (W&B can sort and plot them).
    results = json.loads((Path(report.wandb) / "files" / run.summary["tables/results"]["path"]).read_text())
    rows = [dict(zip(results["columns"], line, strict=True)) for line in results["data"]]
    drift1 = next(r for r in rows if (r["method"], r["iteration"]) == ("drift", 1))
    assert (drift1["proxy"], drift1["seed"], drift1["task"], drift1["setting"]) == (0.1, 42, None, "controlled")
    assert next(r for r in rows if r["method"] == "seed")["setting"] is None
    assert not [v for r in rows for v in r.values() if v in ("–", "") or (isinstance(v, str) and v.isdigit())]
    paper = json.loads((Path(report.wandb) / "files" / run.summary["tables/paper/table3"]["path"]).read_text())
    values = [v for line in paper["data"] for v in line[4:]]
    assert all(v is None or isinstance(v, float) for v in values) and any(isinstance(v, float) for v in values)
    assert all(isinstance(line[3], int) for line in paper["data"])


# ---------------------------------------------------------------- a real sweep on the tiny model

TINY = ["model=tiny", "data=sample", "generation=hf", "launcher=inline", "eval=default", "iterations=1",
        "generation.max_new_tokens=16",
        "trainer.max_length=256", "trainer.warm_start_epochs=1", "tracking.mode=disabled"]


@pytest.mark.e2e
def test_sweep_end_to_end_then_report(tmp_path, model_cache):
    from .helpers import ScoringJudge, judged_sweep_overrides

    sweep_dir = tmp_path / "table7"
    env = dict(os.environ, WANDB_MODE="offline")
    judge = ScoringJudge()  # WildBench judged on 3 tasks, WB-Elo against a fixture leaderboard
    cmd = [sys.executable, "-m", "drift_exp", "-m", "+sweep=table7", *TINY, f"hydra.sweep.dir={sweep_dir}",
           f"eval.base_cache_dir={tmp_path / 'base_cache'}", *judged_sweep_overrides(judge.url, tmp_path)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        judge.close()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    runs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    # The CPU overrides (shorter generations and lengths, one warm-start epoch) change results, so they name one
    # variant for every job of the sweep: <experiment>+generation.max_new_tokens_16+...
    assert [r.partition("+")[0] for r in runs] == ["sample-tiny-drift-full-s42", "sample-tiny-iterdpo-full-s42",
                                                  "sample-tiny-spin-controlled-s42"]
    assert len({r.partition("+")[2] for r in runs}) == 1 and "+trainer.max_length_256" in runs[0]
    # Every job has its base/ stage, but the untouched model was evaluated once: the other jobs copied it.
    bases = [json.loads((sweep_dir / r / "base" / "metrics.json").read_text()) for r in runs]
    assert sorted(b["shared"]["reused"] for b in bases) == [False, True, True]
    # The same numbers; paths in them point into each job's own base/ copy.
    evals = {json.dumps(b["eval"]).replace(str(sweep_dir / r), "<run>") for b, r in zip(bases, runs, strict=True)}
    assert len({b["shared"]["key"] for b in bases}) == 1 and len(evals) == 1
    for r in runs:
        assert "eval" in json.loads((sweep_dir / r / "base" / "DONE").read_text())
        assert (sweep_dir / r / "base" / "eval" / "proxy" / "rewards.jsonl").exists()

    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "drift_exp.report", str(sweep_dir), "--out", str(out), "--no-wandb"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = read_csv(out / "results.csv")
    assert {(r["method"], r["setting"], r["iteration"]) for r in rows} == {
        ("base", "", "0"), ("seed", "", "0"), ("spin", "controlled", "1"), ("iterdpo", "full", "1"),
        ("drift", "full", "1")}
    by_method = {r["method"]: r for r in rows}
    # Base: base/ of the three runs (one row); Seed: iteration 0 (the warm start), both with numbers.
    assert len(by_method["base"]["runs"].split()) == 3 and len(by_method["seed"]["runs"].split()) == 3
    assert float(by_method["base"]["proxy"]) == pytest.approx(bases[0]["eval"]["proxy"]["reward_mean"], abs=1e-4)
    seed_metrics = json.loads((sweep_dir / runs[0] / "iter_0" / "metrics.json").read_text())
    assert float(by_method["seed"]["proxy"]) == pytest.approx(seed_metrics["eval"]["proxy"]["reward_mean"], abs=1e-4)
    assert by_method["base"]["loss"] == ""  # nothing was trained for the Base row
    for r in rows:
        assert math.isfinite(float(r["proxy"]))
        if r["method"] != "base":
            assert math.isfinite(float(r["loss"])) and math.isfinite(float(r["margins"]))
        assert r["task_paper"] == r["win"] == ""  # no AlpacaEval judge here, no paper row for tiny
        assert math.isfinite(float(r["task"]))  # WildBench, judged by the local judge
    # WB-Elo: one pool of the 5 distinct policies (base, seed, three iteration-1 policies) and the fixture
    # leaderboard's 2 models; each row also relative to the Base row.
    assert {r["elo_pool"] for r in rows} == {"pool"}
    base_elo = float(by_method["base"]["elo"])
    for r in rows:
        assert float(r["elo_vs_base"]) == pytest.approx(float(r["elo"]) - base_elo, abs=0.011)
        assert math.isfinite(float(r["elo_alone"]))  # each run's own rating, from its evaluation
    assert float(by_method["base"]["elo_vs_base"]) == 0
    assert "5 policies of these runs and the leaderboard's 2 models (1 anchored" in (out / "report.md").read_text()
    text = (out / "report.md").read_text()
    (heading, header, body), *_ = md_tables(text)
    assert heading == "sample · tiny" and header[:4] == ["setting", "method", "iter", "seed"]
    assert [r[1:3] for r in body] == [["base", "0"], ["seed", "0"], ["spin", "1"], ["iterdpo", "1"], ["drift", "1"]]
    proxy = header.index("proxy reward")
    assert float(body[0][proxy]) == pytest.approx(float(by_method["base"]["proxy"]), abs=1e-4)
    assert float(body[1][proxy]) == pytest.approx(float(by_method["seed"]["proxy"]), abs=1e-4)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["figure2_sample-tiny.png", *(f"figure5_{r}.png" for r in runs)]
    for name in pngs:
        assert_png(out / name)
        assert f"![{name[:-4]}]({name})" in text


def test_held_out_numbers_per_iteration_reach_the_tables(tmp_path):
    """data.holdout's pairs, evaluated after each training stage (train.heldout in metrics.json), are columns of
    the Markdown table and of results.csv, one value per iteration."""
    root = tmp_path / "sweep"
    run = write_run(root, "sample", "tiny", "drift", "controlled", {0: {}, 1: {}, 2: {}})
    for k, (acc, margin) in enumerate(((0.8, 8.9), (1.0, 31.0), (0.5, -2.0))):
        path = run / f"iter_{k}" / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["train"]["heldout"] = {"loss": 0.5, "reward_accuracy": acc, "margin_mean": margin, "pairs": 6}
        path.write_text(json.dumps(metrics))
    report = build_report([root], tmp_path / "out", log_to_wandb=False)
    rows = {r["iteration"]: r for r in read_csv(report.csv) if r["method"] != "base"}
    assert [(num(rows[k]["heldout_acc"]), num(rows[k]["heldout_margin"])) for k in ("0", "1", "2")] == [
        (0.8, 8.9), (1.0, 31.0), (0.5, -2.0)]
    assert num(rows["1"]["heldout_pairs"]) == 6
    assert "held-out acc" in report.markdown.read_text()
