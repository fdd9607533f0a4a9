"""One training run's lifecycle: `train_run(cfg, run_folder)` trains, evaluates and records
(docs/design.md, "Data flow"); the maths of a step and of an evaluation are
experiments/engine.py's, the model experiments/factory.py's, the run folder's files, lock
and the check that a checkpoint is this run's experiments/runfolder.py's.

The loop is deliberately plain: draw a batch, step, and every `train.eval_every` steps
evaluate on the validation split, append a metrics row, checkpoint and refresh
result.json (whose `heartbeat` tells a watcher the run is alive). The test split is
evaluated once, at the end.

Resuming is exact on CPU because nothing about the run lives outside the checkpoint:
the batch order is a pure function of (seed, epoch) (experiments/data/common.py), the learning
rate a pure function of the step (experiments/optim.py), and the checkpoint holds the
weights, the optimizer, the RNG state and the partial training statistics. Metrics rows
written after the last checkpoint are dropped on resume and computed again.

Under DDP (experiments/distributed.py) every rank runs this same loop on its share of
each global batch of train.batch_size; statistics are summed over ranks and only rank 0
writes records.
"""

from __future__ import annotations

import io
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch

from experiments import planning
from experiments.config import RunConfig
from experiments.data import load_splits
from experiments.distributed import Distributed, init_distributed, job_id
from experiments.engine import autocast_dtype, evaluate, prepare_training, train_step
from experiments.errors import CheckpointError
from experiments.factory import config_flops, initial_model
from experiments.formatting import duration
from experiments.host import now_iso, versions
from experiments.records import RecordWriteError
from experiments.runfolder import STATUSES, RunFolder
from experiments.seeding import rng_state, set_rng_state
from experiments.tensorboard import EventLog
from perceiver_core.config import ConfigError

LOG_INTERVAL_S = 15.0  # seconds between progress lines on stderr


def train_run(cfg: RunConfig, run_folder: RunFolder | str | os.PathLike, *,
              on_eval: Callable[[dict], None] | None = None) -> dict:
    """Train `cfg` into `run_folder` (a RunFolder or its path), resuming from its
    checkpoint, and return result.json.

    A finished run (completed or diverged) of the same config is returned as it is. A
    RunStopped from on_eval records its status and propagates; any other exception
    records `failed` with its traceback tail and propagates. A non-finite loss ends the
    run as `diverged` with the last finite metrics. One process trains a run folder at a
    time: a second one raises RunBusy before it writes anything (RunFolder.lock), and a
    checkpoint written by another run raises CheckpointError, also before anything is
    written (RunFolder.check_checkpoint). A record that the file system refuses (full,
    read-only) raises RecordWriteError, after recording `failed` if that small write
    still succeeds; the last checkpoint is intact, so the same call resumes once there is
    room.
    """
    folder = RunFolder(run_folder)
    result = folder.finished_result(cfg)
    if result is not None:
        return result
    run = Run(cfg, folder, init_distributed(), on_eval)
    with folder.lock() if run.env.is_main else nullcontext():
        result = folder.finished_result(cfg)  # finished by another process meanwhile
        if result is not None:
            return result
        try:
            run.start()
            return run.finish()
        except RunStopped as stop:
            record_end(run, stop.status, str(stop))
            raise
        except Exception as exc:
            record_failure(run, exc)
            raise


def record_failure(run: Run, exc: Exception) -> None:
    """Record `failed` with the exception and its traceback's tail; a CheckpointError is
    not recorded: the folder's records may be another run's, and nothing was trained."""
    if isinstance(exc, CheckpointError):
        return
    tail = "".join(traceback.format_exception(exc)[-6:])
    record_end(run, "failed", f"{type(exc).__name__}: {exc}\n{tail}")


def record_end(run: Run, status: str, error: str) -> None:
    """Record how the run ended, unless the file system refuses even that (the caller's
    exception says why; status then shows the run's heartbeat going stale)."""
    try:
        run.write_result(status, error=error)
    except RecordWriteError as exc:
        log(f"could not record status {status!r} either: {exc.strerror}", run.env)


class RunStopped(Exception):
    """Raised by an `on_eval` hook to end a run early (e.g. an Optuna pruner): the run
    records `status` in result.json and the exception propagates to the caller."""

    def __init__(self, status: str = "pruned", message: str = ""):
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {STATUSES}")
        super().__init__(message or f"run stopped: {status}")
        self.status = status


@dataclass
class Progress:
    """What a checkpoint holds besides weights, optimizer and RNG: enough to go on exactly."""

    step: int = 0
    # Training statistics since the last evaluation, summed over ranks:
    # [loss * examples, correct, examples, seconds].
    interval: list = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    samples: int = 0  # training examples seen, all ranks
    train_time_s: float = 0.0  # time in training steps (data included, evaluation excluded)
    wall_time_s: float = 0.0  # summed over every session of the run
    best_val_score: float | None = None  # of the data set's metric (accuracy or mAP)
    best_step: int | None = None
    started_at: str = ""


class Run:
    """The state of one run in this process, and the records it writes (rank 0 only)."""

    def __init__(self, cfg: RunConfig, folder: RunFolder, env: Distributed, on_eval,
                 splits=None):
        """`splits`: cfg's data (load_splits), when the caller has loaded it already (the
        seeds of a pack share one copy)."""
        self.cfg, self.folder, self.env, self.on_eval = cfg, folder, env, on_eval
        tc = cfg.train
        # bf16 asked for on a GPU without it fails here, before anything is written.
        if autocast_dtype(cfg, env.device) is None and tc.precision == "auto" \
                and env.device.type == "cuda":
            log(f"train.precision=auto: {torch.cuda.get_device_name(env.device)} has no bf16, "
                "training in fp32", env)
        if tc.batch_size % env.world_size:
            raise ConfigError(f"train.batch_size={tc.batch_size} (the global batch) must be "
                              f"divisible by the {env.world_size} processes")
        self.batch_size = tc.batch_size // env.world_size  # per rank
        # Everything that can fail on bad input happens before the run folder exists.
        self.splits = splits or load_splits(cfg)
        spec = self.splits.spec
        self.metric = spec.metric  # val_acc / test_acc, or val_map / test_map
        if spec.multi_label and cfg.train.label_smoothing:
            raise ConfigError(f"train.label_smoothing applies to single-label classes; "
                              f"{cfg.data.name} is multi-label: set train.label_smoothing=0")
        if spec.num_classes != cfg.model.num_classes:
            raise ConfigError(f"model.num_classes={cfg.model.num_classes} but {cfg.data.name}"
                              f" has {spec.num_classes} classes: set model.num_classes="
                              f"{spec.num_classes}")
        self.steps_per_epoch = self.splits.train.num_batches(
            self.batch_size, env.world_size, train=True)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"train.batch_size={tc.batch_size} exceeds the "
                              f"{len(self.splits.train)} training examples: lower it or "
                              "raise data.train_subset")
        self.total_steps = planning.total_steps(tc, self.steps_per_epoch)
        self.eval_every = tc.eval_every or self.steps_per_epoch

        self.model = initial_model(cfg, spec).to(env.device)
        self.counts = config_flops(cfg)
        if self.counts["unsupported_ops"]:
            print("warning: FLOPs miss ops fvcore cannot count: "
                  f"{self.counts['unsupported_ops']}", file=sys.stderr)
        self.optimizer, self.scheduler, self.net, self.trainer = prepare_training(
            self.model, cfg, env, self.total_steps)
        self.progress = Progress(started_at=now_iso())
        self.final: dict = {}
        self.session_start = time.time()
        self.session_step = 0  # the step this session started (resumed) at
        self.wall_base = 0.0
        self.sessions: list[dict] = []  # who trained this run: one entry per (re)start
        self.events: EventLog | None = None  # TensorBoard's view of the records (rank 0)

    # -- records ----------------------------------------------------------------------

    def wall_time(self) -> float:
        return self.wall_base + time.time() - self.session_start

    def write_result(self, status: str, error: str | None = None) -> dict:
        p = self.progress
        if self.sessions:
            self.sessions[-1].update(to_step=p.step, status=status)
            if error:  # why it ended, in a line: kept when a later session clears `error`
                self.sessions[-1]["error"] = error.splitlines()[0][:160]
        result = {
            "run_id": self.cfg.run_id, "status": status, "step": p.step,
            "epoch": p.step / self.steps_per_epoch, "final": self.final,
            "metric": self.metric,
            "best": {f"val_{self.metric}": p.best_val_score, "step": p.best_step},
            "params": self.counts["params"], "macs": self.counts["macs"],
            "flops": self.counts["flops"], "flops_breakdown": self.counts["breakdown"],
            "wall_time_s": self.wall_time(),
            "samples_per_s": p.samples / p.train_time_s if p.train_time_s else None,
            "versions": versions(), "host": socket.gethostname(),
            "nodes": self.sessions[-1]["nodes"] if self.sessions else [socket.gethostname()],
            "sessions": self.sessions,
            "started_at": p.started_at, "updated_at": now_iso(), "heartbeat": time.time(),
            "error": error, **self.description()}
        if self.env.is_main:
            self.folder.write_result(result)
        if self.events is not None and status != "running":
            self.events.close(result)
            self.events = None
        return result

    def description(self) -> dict:
        """What analysis needs to read this run without the data set or this code: the
        input the model was built for, the planned length and the split sizes."""
        spec, splits = self.splits.spec, self.splits
        return {"input": {"index_shape": list(spec.index_shape), "channels": spec.channels},
                "planned": {"steps": self.total_steps,
                            "examples": self.total_steps * self.cfg.train.batch_size},
                "split_sizes": {"train": len(splits.train), "val": len(splits.val),
                                "test": len(splits.test)}}

    def save_checkpoint(self) -> None:
        self.progress.wall_time_s = self.wall_time()
        if not self.env.is_main:
            return
        rng = rng_state()
        buffer = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "step": self.progress.step,
                    "config": self.cfg.to_dict(), "progress": asdict(self.progress),
                    "rng": rng}, buffer)
        self.folder.write_checkpoint(buffer.getvalue())

    def start(self) -> None:
        """Create the run folder, or resume from its checkpoint (once it is shown to be this
        run's: nothing is written before)."""
        path = self.folder.checkpoint_file
        if path.is_file():
            # On the CPU: the RNG states must be CPU tensors, and load_state_dict copies
            # weights and optimizer state to wherever the model is (a run may move
            # between a GPU and a CPU node).
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.folder.check_checkpoint(state, self.cfg)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            progress = state["progress"]
            if "best_val_acc" in progress:  # checkpoints written before mAP existed
                progress["best_val_score"] = progress.pop("best_val_acc")
            self.progress = Progress(**progress)
            self.wall_base = self.progress.wall_time_s
            self.session_step = self.progress.step
        try:  # the sessions so far, including one that ended after the checkpoint
            self.sessions = list(self.folder.read_result().get("sessions") or [])
        except (OSError, ValueError, AttributeError):
            self.sessions = []  # a first start, or a record from before sessions were kept
        self.sessions.append(new_session(self.progress.step, self.env))
        rows = [r for r in self.folder.read_metrics() if r["step"] <= self.progress.step]
        if rows:
            self.final = {k: rows[-1][k] for k in self.final_keys()}
        if self.env.is_main:
            self.folder.write_config(self.cfg)
            self.folder.write_metrics(rows)
            self.events = EventLog(self.folder, self.cfg, rows, self.progress.started_at)
            self.write_result("running")
        if self.progress.step:
            log(f"resumed {self.folder} at step {self.progress.step}/{self.total_steps}",
                self.env)

    def final_keys(self) -> tuple[str, ...]:
        """The metrics row's keys that result.json's "final" repeats."""
        return ("train_loss", "train_acc", "val_loss", f"val_{self.metric}")

    # -- the loop ---------------------------------------------------------------------

    def evaluate_and_record(self, lr: float) -> dict | None:
        """Validation metrics row, appended to metrics.jsonl; None if they are not finite."""
        p = self.progress
        val_loss, val_score = evaluate(self.net, self.splits.val, self.batch_size, self.cfg,
                                       self.env)
        loss_sum, correct, seen, seconds = p.interval
        row = {"step": p.step, "epoch": p.step / self.steps_per_epoch,
               "time_s": self.wall_time(), "lr": lr,
               "train_loss": loss_sum / seen,
               "train_acc": None if self.splits.spec.multi_label else correct / seen,
               "val_loss": val_loss, f"val_{self.metric}": val_score,
               "samples_per_s": seen / seconds if seconds else None}
        if not finite(val_loss):
            return None
        p.interval = [0.0, 0.0, 0.0, 0.0]
        if val_score is not None and (p.best_val_score is None or val_score > p.best_val_score):
            p.best_val_score, p.best_step = val_score, p.step
        self.final = {k: row[k] for k in self.final_keys()}
        if self.env.is_main:
            self.folder.append_metrics(row)
            self.events.add(row)
        val = "-" if val_score is None else f"{val_loss:.4f} / {100 * val_score:.2f}%"
        best = ("-" if p.best_val_score is None
                else f"{100 * p.best_val_score:.2f}% @ {p.best_step}")
        log(f"eval step {p.step}/{self.total_steps}: val loss/{self.metric} {val}  best {best}",
            self.env)
        return row

    def call_hook(self, row: dict) -> None:
        """on_eval on rank 0; a RunStopped it raises stops every rank."""
        stopped: RunStopped | None = None
        if self.env.is_main and self.on_eval is not None:
            try:
                self.on_eval(row)
            except RunStopped as exc:
                stopped = exc
        if self.env.world_size > 1:
            code = torch.tensor([STATUSES.index(stopped.status) + 1 if stopped else 0],
                                device=self.env.device)
            self.env.all_reduce(code)
            if code.item() and stopped is None:
                stopped = RunStopped(STATUSES[int(code.item()) - 1])
        if stopped is not None:
            raise stopped

    def fit(self) -> str:
        """Train to total_steps: 'completed', or 'diverged' at the first non-finite loss."""
        steps = self.steps()
        try:
            batch = next(steps)
            while True:
                batch = steps.send(self.train_step(batch))
        except StopIteration as end:
            return end.value

    def train_step(self, batch) -> list[float]:
        """One optimizer step of this run alone (train_step)."""
        return train_step(self.trainer, self.optimizer, self.scheduler, batch, self.cfg,
                          self.env)

    def steps(self):
        """fit() as a coroutine: a generator that yields each batch to train on and is
        sent back that step's statistics (train_step's), then writes the step's records
        and yields the next batch; it returns fit's status. A pack (experiments/packing.py)
        steps its seeds' batches itself, one at a time or as one batched model. Time from
        one yield to the next counts as this run's training time, except evaluation and
        records."""
        tc, p = self.cfg.train, self.progress
        tick = last_log = time.perf_counter()
        while p.step < self.total_steps:
            epoch, start = divmod(p.step, self.steps_per_epoch)
            for batch in self.splits.train.batches(
                    self.batch_size, seed=tc.order_seed, epoch=epoch, train=True,
                    start_batch=start, rank=self.env.rank, world_size=self.env.world_size):
                lr = self.optimizer.param_groups[0]["lr"]
                stats = yield batch
                if not math.isfinite(stats[0]):
                    log(f"non-finite training loss at step {p.step + 1}: diverged", self.env)
                    return "diverged"
                elapsed, tick = time.perf_counter() - tick, time.perf_counter()
                p.step += 1
                p.samples += int(stats[2])
                p.train_time_s += elapsed
                p.interval = [a + b for a, b in zip(p.interval, [*stats, elapsed], strict=True)]
                done = p.step == self.total_steps
                row = None
                if done or p.step % self.eval_every == 0:
                    row = self.evaluate_and_record(lr)
                    if row is None:
                        log(f"non-finite validation loss at step {p.step}: diverged", self.env)
                        return "diverged"
                checkpoint = done or (p.step % tc.checkpoint_every == 0 if tc.checkpoint_every
                                      else row is not None)
                if checkpoint:
                    self.save_checkpoint()
                if row is not None or checkpoint:
                    self.write_result("running")  # with a fresh heartbeat
                if row is not None:
                    self.call_hook(row)
                elif time.perf_counter() - last_log > LOG_INTERVAL_S:
                    last_log = time.perf_counter()
                    self.log_progress(lr)
                if row is not None or checkpoint:
                    tick = time.perf_counter()  # evaluation and records are not training time
                if done:
                    break
        return "completed"

    def log_progress(self, lr: float) -> None:
        p = self.progress
        loss_sum, correct, seen, _ = p.interval
        rate = p.samples / p.train_time_s if p.train_time_s else 0.0
        # ETA from this session's wall-clock pace, evaluation and checkpoints included: a
        # resumed run on a slower (or busier) machine gets its own pace, not the run's
        # average training rate.
        steps = p.step - self.session_step
        left = ((self.total_steps - p.step) * (time.time() - self.session_start) / steps
                if steps else 0.0)
        log(f"step {p.step}/{self.total_steps} (epoch {p.step / self.steps_per_epoch:.2f}) "
            f"loss {loss_sum / max(seen, 1):.4f} acc {100 * correct / max(seen, 1):.2f}% "
            f"lr {lr:.2e} | {rate:.0f} samples/s | ETA {duration(left)}", self.env)

    def finish(self) -> dict:
        return self.conclude(self.fit())

    def conclude(self, status: str) -> dict:
        """Test a completed run and write its final result.json."""
        if status == "completed":
            test_loss, test_score = evaluate(self.net, self.splits.test, self.batch_size,
                                             self.cfg, self.env)
            self.final.update({"test_loss": test_loss, f"test_{self.metric}": test_score})
            score = "-" if test_score is None else f"{100 * test_score:.2f}%"
            log(f"test loss/{self.metric} {test_loss:.4f} / {score}", self.env)
        return self.write_result(status)


def new_session(step: int, env: Distributed) -> dict:
    """One session of a run (a start or a resume) as result.json's `sessions` lists it: the
    process and hosts that trained it and the submitit job (with SLURM's restart count
    after a requeue), so `status` can tell a run's story (a node lost mid-run, the job
    requeued) and a test can count who trained a run."""
    return {"started_at": now_iso(), "from_step": step, "to_step": step, "status": "running",
            "nodes": env.hosts(), "host": socket.gethostname(), "pid": os.getpid(),
            "job": job_id(), "restart": int(os.environ.get("SLURM_RESTART_COUNT", 0))}


def finite(*values) -> bool:
    return all(v is None or math.isfinite(v) for v in values)


def log(message: str, env: Distributed) -> None:
    if env.is_main:
        print(message, file=sys.stderr, flush=True)
