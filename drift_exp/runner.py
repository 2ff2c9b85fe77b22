"""The stage runner: every stage of drift_exp.names.STAGES goes through `Runner.run`.

`build_schedule` looks up every stage of the run in schedule order (data/, base/, then iteration
0..K), computes what its DONE marker records (its resume key, `section`) and checks it against the
marker before anything runs or is written (drift_exp/stages.py: the resume rule). `Runner.run` then
takes one scheduled stage through the same steps, whatever the stage:

    done already?     reuse its recorded numbers
    inputs            every file of `reads` must be there (a finished stage's output that is gone is an error)
    run               in process (BODIES), or its worker job: inline in this process, or as a child
                      process / under accelerate launch (drift_exp/launch.py), as the table's `where` says
    finish            the DONE marker with its stats (atomic outputs first)
    tracking          its numbers to the experiment's W&B run, as a history row of its iteration
                      (the Base row: the summary); only for stages that finish now
    run.stop_after    stop here?

A new stage is an entry in STAGES plus, when it runs in the orchestrator or needs more than its job's
stats, its body in BODIES.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from drift_exp.config import Config, result_fields, scorer_path
from drift_exp.data.load import detect_format, load_records, select_records
from drift_exp.data.wildfeedback import EXTRACTOR_VERSION
from drift_exp.errors import UserError
from drift_exp.evaluation import flat_metrics
from drift_exp.evaluation.base import base_eval_stage, eval_identity
from drift_exp.heldout import used_counts
from drift_exp.launch import run_job
from drift_exp.methods import PairBuilder, seed_pairs
from drift_exp.names import (
    EVAL,
    EVERY,
    LOOP,
    ONCE_BASE,
    ONCE_DATA,
    PAIRS,
    PREPARE,
    REQUESTS,
    STAGES,
    TRAIN,
    WANDB_HELDOUT,
    WANDB_SIGNAL,
    WARM,
    WARM_START,
    StageDef,
    StopPoint,
    experiment_name,
    parse_stop_after,
    stage_id,
    stages_at,
)
from drift_exp.preview import write_preview
from drift_exp.provenance import data_identity
from drift_exp.records import Completion, FeedbackRecord, read_jsonl, record_count, write_json, write_jsonl
from drift_exp.stages import RunDir, Stage, read_markers
from drift_exp.tracking import Tracker, prefixed
from drift_exp.training.diagnostics import flat_signal
from drift_exp.training.logsink import TRAIN_LOG, TrainLogTail

log = logging.getLogger("drift_exp.pipeline")

_ABSENT = object()  # an optional record key (`key?`) that does not apply to this run


# ---------------------------------------------------------------------------------------------------
# The schedule


@dataclass
class Step:
    """One stage of the run: its table entry, its iteration (None: data/ and base/) and its marker."""

    spec: StageDef
    k: int | None
    stage: Stage | None  # None for base/eval, which keeps its own marker (drift_exp.evaluation.base)

    @property
    def id(self) -> str:
        return stage_id(self.k if self.spec.scope != ONCE_BASE else "base", self.spec.name)

    @property
    def done(self) -> bool:
        return self.stage is not None and self.stage.done


@dataclass
class Schedule:
    """Every stage of the run in schedule order, looked up and checked against its DONE marker."""

    steps: list[Step]
    records: list[FeedbackRecord]
    prepare_stats: dict[str, Any] | None  # extracted now (prepare not done yet): written by the prepare stage

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def at(self, k: int | None) -> list[Step]:
        return [s for s in self.steps if s.k == k]


def build_schedule(rd: RunDir, cfg: Config, method: PairBuilder) -> Schedule:
    """Look up every stage in order; a finished stage whose config changed raises StageConflict here,
    before anything is written. Reads the records (extracting them when prepare has not finished:
    which stages follow depends on them)."""
    (prep_spec,) = (s for s in STAGES if s.scope == ONCE_DATA)
    prep = rd.stage(None, prep_spec.name, "", section(prep_spec, cfg, None, scored=False))
    stats = None
    if prep.done:
        records = read_jsonl(rd.require(prep.folder / "records.jsonl", prep.id), FeedbackRecord,
                             record_count(prep.stats))  # the count prepare recorded (a file cut short)
    else:
        records, stats = load_records(cfg.data, cfg.seed)
    scored = method.needs_scorer(records)
    steps = [Step(prep_spec, None, prep)]
    if cfg.eval.benchmarks and cfg.eval.base_model:  # the Base row (its marker is checked when it runs)
        steps += [Step(s, None, None) for s in STAGES if s.scope == ONCE_BASE]
    parent = prep.key  # each stage's fingerprint hangs off the last non-leaf stage before it
    for k in range(0, cfg.iterations + 1):
        for spec in stages_at(k):
            st = rd.stage(k, spec.name, parent, section(spec, cfg, k, scored))
            steps.append(Step(spec, k, st))
            if not spec.leaf:
                parent = st.key
    return Schedule(steps, records, stats)


def section(spec: StageDef, cfg: Config, k: int | None, scored: bool) -> dict[str, Any]:
    """What the stage's DONE marker records (its `records` in the table): the result-affecting fields only.
    scored: whether the method ranks its pairs with the reward model."""
    out: dict[str, Any] = {}
    for entry in spec.records:
        optional = entry.endswith("?")
        key, _, source = entry.rstrip("?").partition("=")
        value = _value(source or key, spec, cfg, k, scored)
        if value is _ABSENT:
            assert optional, f"{spec.name}: {key} is not optional"
            continue
        out[key] = value
    return out


def _value(source: str, spec: StageDef, cfg: Config, k: int | None, scored: bool) -> Any:
    if source == "iteration":
        return k
    if source == "data_file":  # a replaced data file is a changed setting
        return data_identity(cfg.data.source)
    if source == "extractor":  # what the WildFeedback extractor yields changes with its version
        return EXTRACTOR_VERSION if detect_format(cfg.data) == "annotation" else _ABSENT
    if source == "scorer":  # the reward model, where this stage uses it: IterDPO's ranking, the proxy evaluation
        uses = scored if spec.name == PAIRS else "proxy" in cfg.eval.benchmarks
        return {**result_fields(cfg.scorer), "path": scorer_path(cfg)} if uses else None
    if source == "eval_identity":  # base/eval: the key of the shared Base-row cache
        return eval_identity(cfg)
    value: Any = cfg
    for part in source.split("."):
        value = getattr(value, part)
    return result_fields(value)


# ---------------------------------------------------------------------------------------------------
# The runner


class Runner:
    """Takes each scheduled stage through reuse / inputs / run / finish / tracking / stop_after."""

    def __init__(self, rd: RunDir, cfg: Config, method: PairBuilder, tracker: Tracker, schedule: Schedule):
        self.rd, self.cfg, self.method, self.tracker, self.schedule = rd, cfg, method, tracker, schedule
        self._targets: list[FeedbackRecord] | None = None

    @property
    def targets(self) -> list[FeedbackRecord]:
        """The records the method iterates on (DSAT for DRIFT / IterDPO, SAT for SPIN; Table 2)."""
        if self._targets is None:
            records = self.schedule.records
            self._targets = select_records(records, self.method.record_kind(records), self.cfg.setting, self.cfg.seed)
        return self._targets

    def run(self, step: Step) -> bool:
        """Run one stage unless it is done; True when run.stop_after says to stop after it."""
        st, spec = step.stage, step.spec
        if spec.scope == ONCE_BASE:  # keeps its own marker (the shared cache, drift_exp.evaluation.base)
            stats = BODIES[spec](self, step)
            if stats is not None:  # evaluated now: the Base row goes to the run's summary
                self.tracker.summary(prefixed(spec.wandb, stats))
        elif not st.done:
            for name in spec.reads:
                self.rd.require(st.folder / name, self._writer(step, name))
            body = BODIES.get(spec)
            stats = body(self, step) if body is not None else self.launch(spec.job, step.k)
            if stats is not None:  # None: left unfinished on purpose (a rerun retries it)
                st.finish(stats)
                if spec.wandb:  # one history row of iteration k, x = iteration
                    self.tracker.log_iteration(step.k, prefixed(spec.wandb, stats))
        return self._stop_after(step)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.tracker.close()  # the one W&B run of the experiment, also after a failed stage

    def launch(self, job: str, k: int, on_train_log: Callable[[dict[str, Any]], None] | None = None
               ) -> dict[str, Any]:
        """Run a worker job: in this process (launcher=inline), else as a child process or under accelerate.
        on_train_log: gets each training log as the job writes it (iter_k/train_log.jsonl)."""
        if self.cfg.launcher.name == "inline":
            from drift_exp import worker

            opts = {"forward": on_train_log} if on_train_log is not None else {}
            return worker.JOBS[job](self.cfg, self.rd.root, k, **opts)
        folder = self.rd.folder(k)
        poll = TrainLogTail(folder / TRAIN_LOG, on_train_log) if on_train_log is not None else None
        return run_job(self.cfg, self.rd.root, job, k, poll)

    def _writer(self, step: Step, name: str) -> str:
        """The id of the stage of the same iteration that writes file `name` (for the missing-file message)."""
        writer = next((s for s in self.schedule.at(step.k) if name in s.spec.writes and s is not step), step)
        return writer.id

    def _stop_after(self, step: Step) -> bool:
        point = stop_point(step, self.schedule)
        if point is None or not self.cfg.run.stop_after or parse_stop_after(self.cfg.run.stop_after) != point:
            return False
        log.info("stopping after %s (run.stop_after)", self.cfg.run.stop_after)
        return True


def stop_point(step: Step, schedule: Schedule) -> StopPoint | None:
    """The run.stop_after value that names the end of this step: the data stage, the end of iteration 0
    (warm_start), or a stage of an iteration k >= 1; None for the others (base/eval, iteration 0's first stages)."""
    if step.spec.scope == ONCE_DATA:
        return StopPoint(step.spec.name, None)
    if step.k == 0:
        return StopPoint(WARM_START, None) if step is schedule.at(0)[-1] else None
    if step.k is not None:
        return StopPoint(step.spec.name, step.k)
    return None


# ---------------------------------------------------------------------------------------------------
# What the stages do in the orchestrator (the heavy work is in drift_exp/worker.py's jobs)


def _prepare(r: Runner, step: Step) -> dict[str, Any]:
    """Filter: extract the DSAT signals (and SAT replies, DSAT->SAT seeds) from the wild data."""
    cfg, records, st = r.cfg, r.schedule.records, step.stage
    stats = dict(r.schedule.prepare_stats or {})
    kind = r.method.record_kind(records)
    stats["used"] = {"setting": cfg.setting.name, "kind": kind, "records": len(r.targets),
                     "available": sum(rec.kind == kind for rec in records),
                     "seed_pairs": sum(rec.kind == "seed" for rec in records) if cfg.trainer.warm_start_epochs else 0}
    stats["used"].update(used_counts(cfg, records))  # data.holdout (drift_exp/heldout.py)
    log.info("data: %s", {k: v for k, v in stats.items() if k != "source"})
    write_jsonl(st.folder / "records.jsonl", records)
    write_json(st.folder / "stats.json", stats)
    return stats


def _base_eval(r: Runner, step: Step) -> dict[str, Any] | None:
    """The Base row: the untouched starting model, evaluated once (shared by every job of a sweep)."""
    return base_eval_stage(r.rd.root, r.cfg, lambda: r.launch(step.spec.job, 0))


def _warm_start(r: Runner, step: Step) -> dict[str, Any]:
    """Iteration 0: DPO on the DSAT->SAT seed pairs (skipped, and recorded so, without any)."""
    st = step.stage
    pairs = seed_pairs(r.schedule.records)
    write_jsonl(st.folder / "pairs.jsonl", pairs)
    if pairs and r.cfg.trainer.warm_start_epochs > 0:
        return _train(r, step)
    why = "no DSAT->SAT seed pairs in the data" if not pairs else "trainer.warm_start_epochs=0"
    log.warning("warm start skipped: %s; iteration 1 samples from the base model", why)
    write_json(st.folder / "metrics.json", {"iteration": 0, "skipped": why})
    return {"skipped": why}


def _requests(r: Runner, step: Step) -> dict[str, Any]:
    """What to ask the current policy pi_{k-1} (Table 2)."""
    requests = r.method.requests(r.targets, step.k)
    write_jsonl(step.stage.folder / "requests.jsonl", requests)
    return {"requests": len(requests), "records": len(r.targets), "samples": sum(q.n for q in requests)}


def _pairs(r: Runner, step: Step) -> dict[str, Any]:
    """Chosen / rejected per Table 2 (DRIFT: the fresh sample vs the real DSAT reply)."""
    cfg, st, k, records = r.cfg, step.stage, step.k, r.schedule.records
    completions = read_jsonl(st.folder / "completions.jsonl", Completion)
    scorer = None
    if r.method.needs_scorer(records):
        from drift_exp.scoring import RewardScorer

        scorer = RewardScorer(replace(cfg.scorer, path=scorer_path(cfg)))
    pairs = r.method.pairs(records, completions, scorer)
    del scorer
    for p in pairs:
        p.meta["iteration"] = k
    if not pairs:
        raise UserError(f"{st.folder}: iteration {k} built no preference pairs ({dict(r.method.stats)})")
    write_jsonl(st.folder / "pairs.jsonl", pairs)
    write_preview(st.folder, pairs, k, cfg.method.name, r.tracker.run, records=records,
                  stats=r.method.stats)  # pairs_preview.md + W&B table
    return dict(r.method.stats)


def _train(r: Runner, step: Step) -> dict[str, Any]:
    """One DPO stage from pi_{k-1} (the worker job), then iteration k's metrics.json."""
    cfg, st, k = r.cfg, step.stage, step.k
    # The curves: train/* against the optimizer steps summed over the iterations before this one.
    offset = sum(read_markers(r.rd.folder(j)).get(TRAIN, {}).get("stats", {}).get("steps", 0) for j in range(k))
    (st.folder / TRAIN_LOG).unlink(missing_ok=True)  # an interrupted attempt's log
    stats = r.launch(step.spec.job, k, on_train_log=lambda row: r.tracker.log_train(k, offset, row))
    metrics = {"iteration": k, "experiment": experiment_name(cfg), "method": cfg.method.name,
               "data": cfg.data.name, "model": cfg.model.name, "setting": cfg.setting.name, "seed": cfg.seed,
               "policy_start": stats["policy_start"], "train": stats}
    metrics.update({name: m.get("stats", {}) for name, m in read_markers(st.folder).items() if name != TRAIN})
    write_json(st.folder / "metrics.json", metrics)
    # The section 5 whole-stage summaries and the held-out pairs' numbers, on the iteration axis.
    r.tracker.log_iteration(k, {**flat_signal(stats.get("signal", {}), prefix=WANDB_SIGNAL.rstrip("/")),
                                **prefixed(WANDB_HELDOUT.rstrip("/"), stats.get("heldout") or {})})
    return {key: v for key, v in stats.items() if key not in ("history", "signal")}


def _eval(r: Runner, step: Step) -> dict[str, Any] | None:
    """Evaluate pi_k on eval.benchmarks; its numbers go into iteration k's metrics.json."""
    cfg, st, k = r.cfg, step.stage, step.k
    metrics = r.launch(step.spec.job, k) if cfg.eval.benchmarks else {}
    path = st.folder / "metrics.json"
    summary = json.loads(path.read_text()) if path.exists() else {"iteration": k}
    summary["eval"] = metrics
    write_json(path, summary)
    failed = metrics.get("wildbench", {}).get("n_failed", 0)
    if failed:  # left unfinished: a rerun sends only the failed judge calls (the rest are cached)
        log.warning("%s: %d judge calls failed; rerun the command to retry them", st.id, failed)
        return None
    return flat_metrics(metrics)


def _spec(name: str, scope: str) -> StageDef:
    return next(s for s in STAGES if (s.name, s.scope) == (name, scope))


# The stages that do more than run their worker job and record its stats (the generate stage does just that).
BODIES: dict[StageDef, Callable[[Runner, Step], dict[str, Any] | None]] = {
    _spec(PREPARE, ONCE_DATA): _prepare,
    _spec(EVAL, ONCE_BASE): _base_eval,
    _spec(TRAIN, WARM): _warm_start,
    _spec(REQUESTS, LOOP): _requests,
    _spec(PAIRS, LOOP): _pairs,
    _spec(TRAIN, LOOP): _train,
    _spec(EVAL, EVERY): _eval,
}


def final_policy(rd: RunDir, cfg: Config) -> str:
    from drift_exp.models import base_model_path

    return rd.checkpoint_after(cfg.iterations, base_model_path(cfg.model))

