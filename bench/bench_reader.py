"""Wall time and peak memory of reading WildFeedback's `sat_dsat_annotation.json` at full size.

The real file is ONE 1.6 GB JSON array of ~1.28 M flat utterance rows. This script GENERATES a synthetic file in
the same schema (never committed; default under /tmp, deleted afterwards unless --keep) and times, each in its own
subprocess (interpreter start and imports included):

  extract   drift_exp.data.wildfeedback.load on a cold cache (streams the array with ijson, extracts, writes the
            record cache)
  cached    the same call again (the record cache hits: no parsing)
  json.load plain `json.load` of the file, for comparison (what the reader did before streaming)

Peak RSS is each child's own ru_maxrss (os.wait4), so one child's peak never leaks into another's line.
Targets on the 2-core dev machine: extract <= 15 s, <= 1 GB peak RSS and <= 1.3x the CPU seconds of json.load;
cached <= 2 s.

The synthetic file: conversations of 1-20 turns (mean ~4.3 turns, ~8.6 utterances) ending on an Agent row;
content lengths drawn log-normally around ~1 KB (User rows shorter, Agent rows longer; ~1.25 KB a row with the
keys, like the real file); ~15 % of conversations non-ASCII (Chinese, Cyrillic, emoji); ~12 % of conversations
have a DSAT (a third of those followed by a SAT on the revision: DSAT->SAT seed pairs), ~5 % a SAT only.

Usage: python bench/bench_reader.py [--size-gb 1.6] [--file PATH] [--keep | --reuse] [--repeats N] [--skip-json-load]
       [--tree DIR]
(--keep leaves the generated file for later `--reuse` runs; delete it afterwards.) On a shared machine the wall
times move with other work: the table gives each run's CPU seconds and how busy the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the of and to a in is you that it for on with as this are be at or your have from an can will not "
         "please write code function python error model data file table list example email letter story "
         "summary translate explain why how what when answer question result value number string return "
         "class import print loop array json user server request response because however therefore").split()
FOREIGN = ("请 帮 我 写 一 篇 关于 中国 历史 的 文章 谢谢 这个 问题 怎么 解决 代码 错误 "
           "пожалуйста напиши код функция ошибка спасибо вопрос ответ пример текст "
           "😊 🎂 « » — é à ü ß ñ").split()


def _corpus(words: list[str], rng: random.Random, n_words: int = 400_000) -> str:
    out, line = [], 0
    for _ in range(n_words):
        out.append(rng.choice(words))
        line += 1
        if line > rng.randint(12, 40):
            out.append(rng.choice(['.\n', '.\n\n', ', "quoted"', '\t-', ' 42.']))
            line = 0
    return " ".join(out)


def _text(rng: random.Random, corpus: str, mean: float) -> str:
    n = max(1, min(int(rng.lognormvariate(0, 0.9) * mean / 1.5), 20_000))
    start = rng.randrange(0, len(corpus) - n - 1)
    return corpus[start:start + n]


def _row(uid: int, role: str, content: str, sat: bool, dsat: bool, rng: random.Random) -> dict:
    user = role == "User"
    return {"UtterranceId": uid, "TurnId": uid // 2 + 1, "Role": role, "Content": content,
            "State": ("INITIAL" if uid == 0 else "FEEDBACK" if (sat or dsat) else rng.choice(["REFINEMENT", ""]))
            if user else "",
            "Preceeding": ("NO" if uid == 0 else "YES") if user else "",
            "Satisfaction": sat, "Satisfaction-Justificiation": "The user thanks the assistant." if sat else "",
            "Disatisfaction": dsat,
            "Dissatisfaction-Justificiation": "The user points out that the reply ignored the request." if dsat
            else ""}


def generate(path: Path, size_bytes: int, seed: int = 0) -> dict:
    """Write a synthetic annotation file of about `size_bytes`; return its counts."""
    rng = random.Random(seed)
    english, foreign = _corpus(WORDS, rng), _corpus(WORDS + FOREIGN * 3, rng)
    n_rows = n_conv = 0
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        first = True
        while written < size_bytes:
            turns = min(1 + int(rng.expovariate(1 / 3.3)), 20)
            corpus = foreign if rng.random() < 0.15 else english
            flags: dict[int, tuple[bool, bool]] = {}  # user utterance id -> (sat, dsat)
            u = rng.random()
            if u < 0.17:
                turns = max(turns, 2)  # a judgement needs a reply before it
            if u < 0.12:  # a DSAT conversation
                d = 2 * rng.randint(1, turns - 1)
                flags[d] = (False, True)
                if d + 2 < 2 * turns and rng.random() < 0.33:
                    flags[d + 2] = (True, False)  # DSAT -> SAT: a seed pair
            elif u < 0.17:  # a SAT conversation
                flags[2 * rng.randint(1, turns - 1)] = (True, False)
            parts = []
            for uid in range(2 * turns):
                user = uid % 2 == 0
                sat, dsat = flags.get(uid, (False, False))
                content = _text(rng, corpus, 420 if user else 1500)
                parts.append(json.dumps(_row(uid, "User" if user else "Agent", content, sat, dsat, rng),
                                        ensure_ascii=False))
            chunk = ("" if first else ",") + ",".join(parts)
            first = False
            f.write(chunk)
            written += len(chunk) if corpus is english else len(chunk.encode("utf-8"))
            n_rows += 2 * turns
            n_conv += 1
        f.write("]")
    return {"bytes": path.stat().st_size, "utterances": n_rows, "conversations": n_conv}


CHILD_LOAD = """
import json, sys, time
t0 = time.perf_counter()
from drift_exp.config import DataConfig
from drift_exp.data import wildfeedback
t1 = time.perf_counter()
records, stats = wildfeedback.load(DataConfig(name="bench", source=sys.argv[1], format="annotation"))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "records": len(records), "cache": stats.get("cache"),
                  "stats": {k: v for k, v in stats.items() if k != "source"}}))
"""

CHILD_JSON = """
import json, sys, time
t0 = time.perf_counter()
with open(sys.argv[1], encoding="utf-8") as f:
    rows = json.load(f)
print(json.dumps({"import_s": 0.0, "load_s": time.perf_counter() - t0, "records": len(rows)}))
"""


def run_child(code: str, path: Path, env: dict, cwd: Path | None = None) -> dict:
    """Run `code` in a fresh interpreter; return its JSON line plus wall time and its own peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, env=env, text=True,
                            cwd=cwd)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"child failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    # ru_maxrss is in KiB on Linux; CPU seconds tell the work apart from waiting on a busy machine.
    result.update(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, peak_rss_mb=usage.ru_maxrss / 1024)
    return result


def _busy() -> float:
    """The 1-minute load average over the core count: above ~1, other work is slowing the wall times."""
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=1.6)
    ap.add_argument("--file", type=Path, default=Path(tempfile.gettempdir()) / "wf_bench" / "sat_dsat_annotation.json")
    ap.add_argument("--reuse", action="store_true", help="use --file as it is (generated by an earlier --keep run)")
    ap.add_argument("--keep", action="store_true", help="keep the generated file")
    ap.add_argument("--repeats", type=int, default=1, help="cold + cached runs; the table shows the fastest")
    ap.add_argument("--skip-json-load", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tree", type=Path, default=None,
                    help="import drift_exp from this source tree (e.g. an older commit's `git archive`) for a "
                         "before/after comparison on the same file; default: the current one")
    args = ap.parse_args()

    args.file.parent.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(prefix="wf_bench_cache_"))
    env = dict(os.environ, DRIFT_EXP_CACHE=str(cache))
    tree = args.tree.resolve() if args.tree else None
    if tree:  # `python -c` puts its working directory first on sys.path: run the children inside the tree
        env["PYTHONPATH"] = str(tree)
    try:
        t0 = time.perf_counter()
        if not args.reuse:
            info = generate(args.file, int(args.size_gb * 1e9), args.seed)
            print(f"generated {args.file}: {info['bytes'] / 1e9:.2f} GB, {info['utterances']:,} utterances, "
                  f"{info['conversations']:,} conversations in {time.perf_counter() - t0:.0f} s", flush=True)
        runs: dict[str, list[dict]] = {"extract (cold, cache miss)": [], "cached rerun": [], "plain json.load": []}
        for _ in range(args.repeats):
            shutil.rmtree(cache / "records", ignore_errors=True)
            for name in ("extract (cold, cache miss)", "cached rerun"):
                busy = _busy()
                runs[name].append({**run_child(CHILD_LOAD, args.file, env, tree), "busy": busy})
        if not args.skip_json_load:
            busy = _busy()
            runs["plain json.load"].append({**run_child(CHILD_JSON, args.file, env), "busy": busy})
        print(f"\nfile: {args.file.stat().st_size / 1e9:.2f} GB; {os.cpu_count()} cores; fastest of "
              f"{args.repeats} run(s); busy = load average / cores when the run started")
        print("\n| run | wall s (whole process) | CPU s | load s (in process) | peak RSS MB | records/rows | cache "
              "| busy |")
        print("|---|---|---|---|---|---|---|---|")
        for name, rs in runs.items():
            if not rs:
                continue
            r = min(rs, key=lambda x: x["wall_s"])
            print(f"| {name} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['load_s']:.2f} | {r['peak_rss_mb']:.0f} "
                  f"| {r['records']:,} | {r.get('cache') or '-'} | {r['busy']:.1f} |")
        cold, hot = runs["extract (cold, cache miss)"][0], runs["cached rerun"][0]
        if runs["plain json.load"]:
            fast = min(runs["extract (cold, cache miss)"], key=lambda x: x["wall_s"])
            print(f"\nextract / json.load: {fast['cpu_s'] / runs['plain json.load'][0]['cpu_s']:.2f}x CPU s "
                  f"(goal: <= 1.3x)" + (f"; drift_exp from {tree}" if tree else ""))
        print("\nstats:", json.dumps(cold["stats"]))
        assert (cold["cache"], hot["cache"]) == ("miss", "hit"), (cold["cache"], hot["cache"])
        assert hot["stats"] | {"cache": None} == cold["stats"] | {"cache": None}, "the cache changed the stats"
    finally:
        if not (args.keep or args.reuse):
            args.file.unlink(missing_ok=True)
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
