"""Where the heavy stages run (launcher.name):

- inline: in this process, one after the other (CPU, tests, one small GPU)
- local:  generation as a child process (vLLM gets the GPUs to itself and frees them on exit);
          training under `accelerate launch` across this node's GPUs, with DeepSpeed ZeRO-3
- slurm:  as local inside a SLURM allocation (hydra-submitit-launcher submits the experiment);
          training spans every node of the allocation through `srun` + accelerate's static rendezvous

The orchestrator waits for each child, checks its exit code and, on failure, stops with the
child's last lines; the stage is not marked done, so rerunning the command retries it. A child never
opens W&B (tracking.CHILD_ENV): the orchestrator is the experiment's one writer, and reads the training
job's curves from iter_k/train_log.jsonl while it waits (`poll`).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drift_exp.config import Config
from drift_exp.errors import UserError
from drift_exp.names import ACCELERATE, BASE_FOLDER, ONCE_BASE, iteration_folder, job_stage, stage_id
from drift_exp.tracking import CHILD_ENV


class StageFailed(UserError):
    """A stage's child process exited with an error."""


def run_job(cfg: Config, run_dir: Path, job: str, k: int, poll: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run worker job `job` of iteration k (base_eval: the starting model, in base/) as its own process, as
    the stage table says (a plain child, or accelerate launch); return the stats it wrote. The inline
    launcher calls the job functions in the orchestrator instead (drift_exp/runner.py). poll: called while
    the child runs and once after it exits (the runner reads the training curves with it)."""
    spec = job_stage(job)
    folder = run_dir / (BASE_FOLDER if spec.scope == ONCE_BASE else iteration_folder(k))
    ds_config = None
    if spec.where == ACCELERATE and cfg.launcher.deepspeed:
        from drift_exp.training.deepspeed import write_zero3_config

        ds_config = folder / "ds_config.json"
        write_zero3_config(ds_config, cfg.trainer, world_size(cfg), bf16=_bf16(cfg))
    cmd = stage_command(cfg, run_dir, job, k, ds_config)
    # One W&B writer per run: the child never opens W&B (nor reaches this process's W&B service).
    env = {key: v for key, v in os.environ.items() if key != "WANDB_SERVICE"}
    _run_child(cmd, {**env, **CHILD_ENV}, folder / f"{job}.log", stage_id(folder.name, spec.name), poll)
    return json.loads((folder / f"{job}_stats.json").read_text())


def world_size(cfg: Config) -> int:
    return processes_per_node(cfg) * nodes(cfg)


def processes_per_node(cfg: Config) -> int:
    """Training processes per node: launcher.num_processes, else one per visible GPU (at least one)."""
    if cfg.launcher.num_processes is not None:
        return cfg.launcher.num_processes
    from drift_exp.devices import gpu_count

    return max(gpu_count(), 1)


def nodes(cfg: Config) -> int:
    if cfg.launcher.name == "slurm":
        return int(os.environ.get("SLURM_NNODES", cfg.launcher.num_machines))
    return 1


def _bf16(cfg: Config) -> bool:
    from drift_exp.training.dpo import use_bf16

    return use_bf16(cfg.trainer, deepspeed=cfg.launcher.deepspeed)


def stage_command(cfg: Config, run_dir: Path, stage: str, k: int, ds_config: Path | None) -> list[str]:
    """The command line of one stage's job (pure: tested without running it)."""
    job = ["-m", "drift_exp.worker", stage, "--run-dir", str(run_dir), "--iteration", str(k)]
    if job_stage(stage).where != ACCELERATE:
        return [sys.executable, *job]  # one process (generation starts one child per replica itself)
    if ds_config is not None:
        job += ["--deepspeed-config", str(ds_config)]
    per_node, n_nodes = processes_per_node(cfg), nodes(cfg)
    if per_node * n_nodes == 1 and ds_config is None:
        return [sys.executable, *job]
    accel = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(per_node * n_nodes),
             "--num_machines", str(n_nodes), "--main_process_port", str(cfg.launcher.main_process_port),
             "--mixed_precision", "bf16" if _bf16(cfg) else "no", "--dynamo_backend", "no"]
    if ds_config is not None:
        accel += ["--use_deepspeed", "--deepspeed_config_file", str(ds_config)]
    elif per_node * n_nodes > 1:
        accel += ["--multi_gpu"]
    if n_nodes == 1:
        return accel + job
    # Several nodes: one accelerate launcher per node, started by srun inside the allocation; the
    # first node of the allocation hosts the rendezvous. --overlap shares the job's own step.
    # accelerate would otherwise pick pdsh to reach the other nodes; srun already put us there.
    multi = ["--machine_rank", "$SLURM_NODEID", "--main_process_ip", "$MASTER_ADDR", "--rdzv_backend", "static",
             "--same_network"] + (["--deepspeed_multinode_launcher", "standard"] if ds_config is not None else [])
    inner = shlex.join(accel + multi + job)
    inner = inner.replace("'$SLURM_NODEID'", '"$SLURM_NODEID"').replace("'$MASTER_ADDR'", '"$MASTER_ADDR"')
    script = ('export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); ' + inner)
    return ["srun", "--overlap", f"--nodes={n_nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            "bash", "-c", script]


def _run_child(cmd: list[str], env: dict[str, str], log_path: Path, what: str,
               poll: Callable[[], None] | None = None) -> None:
    """Run cmd, echoing its output and keeping it in log_path; raise StageFailed on a non-zero exit.
    poll() runs after each line the child prints and once after it exits."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=40)
    with open(log_path, "a", encoding="utf-8") as log_file:
        log_file.write(f"$ {shlex.join(cmd)}\n")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log_file.write(line)
            tail.append(line)
            if poll is not None:
                poll()
        rc = proc.wait()
    if poll is not None:
        poll()
    if rc != 0:
        raise StageFailed(f"{what} failed: its process exited with code {rc}. Last lines (whole log: {log_path}):\n"
                          + "".join(tail) + "Fix the cause and rerun the same command: finished stages are kept.")
