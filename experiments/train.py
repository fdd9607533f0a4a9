"""One training run: `train_run(cfg, run_dir)` trains, evaluates and records (docs/design.md,
"Data flow").

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

import ctypes
import io
import math
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.config import RunConfig
from experiments.data import input_spec, load_splits
from experiments.data.registry import check_config
from experiments.distributed import Distributed, init_distributed, job_id
from experiments.formatting import duration
from experiments.optim import build_optimizer, build_schedule
from experiments.orchestration import planning
from experiments.records import (
    RecordWriteError,
    append_jsonl,
    atomic_write_bytes,
    read_json,
    read_jsonl,
    read_yaml,
    write_json,
    write_jsonl,
    write_yaml,
)
from experiments.runfolder import CHECKPOINT, CONFIG, FINAL, METRICS, RESULT, STATUSES, RunFolder
from experiments.seeding import couple_init
from experiments.tensorboard import EventLog
from perceiver_core import build_model, count_flops
from perceiver_core.config import ConfigError

LOG_INTERVAL_S = 15.0  # seconds between progress lines on stderr
COMPILE_CACHE_ENV = "PERCEIVER_COMPILE_CACHE"  # where train.compile keeps its kernels
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


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


def new_session(step: int, env: Distributed) -> dict:
    """One session of a run (a start or a resume) as result.json's `sessions` lists it: the
    process and hosts that trained it and the submitit job (with SLURM's restart count
    after a requeue), so `status` can tell a run's story (a node lost mid-run, the job
    requeued) and a test can count who trained a run."""
    return {"started_at": now_iso(), "from_step": step, "to_step": step, "status": "running",
            "nodes": env.hosts(), "host": socket.gethostname(), "pid": os.getpid(),
            "job": job_id(), "restart": int(os.environ.get("SLURM_RESTART_COUNT", 0))}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@lru_cache(maxsize=1)
def versions() -> dict:
    try:
        package = version("perceiver-ablate")
    except PackageNotFoundError:
        package = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"torch": torch.__version__, "python": platform.python_version(),
            "package": package, "git_commit": commit or None}


def finished_result(cfg: RunConfig, run_dir: Path) -> dict | None:
    """result.json of a finished run of this config in run_dir, if any. A run_dir that
    belongs to another run is an error: a run folder holds exactly one run (its config may
    differ from this one in non-semantic keys, e.g. data.num_workers, and still be it)."""
    if (run_dir / CONFIG).is_file():
        stored = RunConfig.from_dict(read_yaml(run_dir / CONFIG))
        if stored.run_id != cfg.run_id:
            raise ConfigError(f"{run_dir} holds another run (run id {stored.run_id}; this "
                              f"config is {cfg.run_id}): choose another --out folder")
    if (run_dir / RESULT).is_file():
        result = read_json(run_dir / RESULT)
        if result.get("status") in FINAL:
            return result
    return None


def build_for(cfg: RunConfig, spec) -> torch.nn.Module:
    """cfg's model for inputs of `spec` (an InputSpec, possibly of several modalities)."""
    return build_model(cfg.model, cfg.encoding, spec.channels, spec.index_shape,
                       spec.modalities)


def initial_model(cfg: RunConfig, spec) -> torch.nn.Module:
    """cfg's model at its initial weights, drawn at train's init seed: from the global stream,
    or module by module from generators of their own with train.coupled_init
    (experiments/seeding.py)."""
    torch.manual_seed(cfg.train.weights_seed)
    model = build_for(cfg, spec)
    if cfg.train.coupled_init:
        couple_init(model, cfg.train.weights_seed)
    return model


def config_flops(cfg: RunConfig) -> dict:
    """count_flops (params, MACs, paper FLOPs, breakdown) of one example of cfg's data.

    A Perceiver is built on the meta device (shapes only, so even the paper's ImageNet
    model is counted without allocating its weights or activations); the CNN/ViT baselines
    run one example on the CPU, as torch.jit tracing of convolutions fails on meta tensors.
    """
    check_config(cfg)
    spec = input_spec(cfg.data)
    with torch.device("meta" if cfg.model.arch == "perceiver" else "cpu"):
        model = build_for(cfg, spec)
        positions = spec.example_positions()
        inputs = torch.zeros(1, spec.num_inputs, spec.channels)
    return count_flops(model, inputs, positions)


def autocast_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """bfloat16 when train.precision asks for it, or by default (`auto`) on a GPU with bf16
    in hardware (compute capability 8.0+: A100, H100, ...); None means fp32.

    train.precision=bf16 on a GPU without it (V100, T4) is a ConfigError: torch emulates
    bf16 there (its default is_bf16_supported() even says yes) and other tools quietly
    train in fp32 instead, so the run would not be what its config says. `auto` on such a
    GPU means fp32, and Run says so.
    """
    precision = cfg.train.precision
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        if precision == "bf16":
            raise ConfigError(
                f"train.precision=bf16 but {torch.cuda.get_device_name(device)} has no bf16 "
                "(it needs compute capability 8.0 or later, e.g. A100, H100): set "
                "train.precision=fp32, or auto (fp32 on this GPU)")
        return None
    return torch.bfloat16


def autocast(cfg: RunConfig, device: torch.device):
    """The autocast context of autocast_dtype, or none (fp32)."""
    dtype = autocast_dtype(cfg, device)
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


def use_compile_cache() -> Path:
    """The folder where torch.compile keeps its kernels (Inductor's generated code, with
    Triton's compiled kernels below it): $PERCEIVER_COMPILE_CACHE when set, which then
    overrides TORCHINDUCTOR_CACHE_DIR; else Inductor's own choice, TORCHINDUCTOR_CACHE_DIR
    or torchinductor_USER under $TMPDIR. Keep it node-local: a cache on an NFS home eats
    its inode quota, and slow reads there can stall one rank past its peers' NCCL
    time-out. (TORCHINDUCTOR_CACHE_DIR cannot tell the user's setting from Inductor's:
    Inductor exports its default there once imported.)"""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    folder = os.environ.get(COMPILE_CACHE_ENV)
    if folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    return Path(cache_dir())


def to_device(batch, device: torch.device):
    return (t.to(device, non_blocking=True) for t in batch)


def loss_and_hits(logits, labels, label_smoothing: float = 0.0, reduction: str = "mean"):
    """(loss, correct predictions or None). Integer labels: softmax cross-entropy and
    accuracy. Multi-hot float labels (multi-label sets such as AudioSet): a sigmoid per
    class with binary cross-entropy summed over classes, and no accuracy (the metric is
    mAP over a whole split, see mean_average_precision)."""
    if labels.is_floating_point():
        loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").sum(-1)
        return (loss.sum() if reduction == "sum" else loss.mean()), None
    loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing,
                           reduction=reduction)
    return loss, (logits.argmax(-1) == labels).sum()


def mean_average_precision(scores, targets) -> float | None:
    """AudioSet's metric: average precision per class (scikit-learn's), averaged over the
    classes that have a positive example in the split (AP is undefined for the others)."""
    from sklearn.metrics import average_precision_score

    present = targets.sum(0) > 0
    if not present.any():
        return None
    return float(average_precision_score(targets[:, present].numpy(),
                                         scores[:, present].numpy(), average="macro"))


def gather(tensor, env: Distributed):
    """Every rank's (n_r, ...) tensor, concatenated on every rank."""
    if env.world_size == 1:
        return tensor
    parts = [None] * env.world_size
    torch.distributed.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


@torch.no_grad()
def evaluate(model, split, batch_size: int, cfg: RunConfig, env: Distributed):
    """(mean loss, score) over a whole split, or (None, None) for an empty one; the score
    is accuracy, or mAP for a multi-label split."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=env.device)
    scores, targets = [], []
    for batch in split.batches(batch_size, seed=cfg.train.order_seed, epoch=0, train=False,
                               rank=env.rank, world_size=env.world_size):
        if len(batch.labels) == 0:  # this rank's share of the last batch is empty
            continue
        inputs, positions, labels = to_device(batch, env.device)
        with autocast(cfg, env.device):
            logits = model(inputs, positions).float()
        loss, hits = loss_and_hits(logits, labels, reduction="sum")
        if hits is None:
            scores.append(logits.cpu())
            targets.append(labels.cpu())
            hits = loss.new_zeros(())
        sums += torch.stack([loss, hits, torch.tensor(len(labels), device=env.device)]).double()
    model.train(was_training)
    loss, correct, count = env.all_reduce(sums).tolist()
    if split.labels.is_floating_point():  # multi-hot: the score is mAP
        width = split.labels.shape[1]
        score = mean_average_precision(
            gather(torch.cat(scores) if scores else torch.zeros(0, width), env),
            gather(torch.cat(targets) if targets else torch.zeros(0, width), env))
        return (loss / count, score) if count else (None, None)
    return (loss / count, correct / count) if count else (None, None)


def finite(*values) -> bool:
    return all(v is None or math.isfinite(v) for v in values)


def keep_freed_memory() -> None:
    """Make glibc serve large blocks from its heap and keep freed memory for reuse.

    By default glibc maps every block above its mmap threshold (at most 32 MiB) fresh from
    the OS and unmaps it when freed, so each such tensor is page-faulted in again on every
    step, a large share of a CPU training step at large M (docs/performance.md, "Scaling
    in M"). The cost: freed memory stays resident for reuse. A no-op without glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    largest = 2**31 - 1  # the parameters are C ints
    mallopt(M_MMAP_THRESHOLD, largest)
    mallopt(M_TRIM_THRESHOLD, largest)


def prepare_training(model: torch.nn.Module, cfg: RunConfig, env: Distributed,
                     total_steps: int):
    """(optimizer, scheduler, net, trainer) for a built model: everything a training step
    needs. `net` is the model, compiled when train.compile (evaluation uses it); `trainer`
    is net, wrapped in DDP when there are several processes. The benchmark
    (experiments/bench.py) builds its steps with this too, so it times what runs train."""
    if env.device.type == "cpu":
        keep_freed_memory()
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_schedule(optimizer, cfg.train, total_steps)
    if cfg.train.compile:
        use_compile_cache()
    net = torch.compile(model) if cfg.train.compile else model
    trainer = net
    if env.world_size > 1:
        trainer = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[env.device] if env.device.type == "cuda" else None)
    return optimizer, scheduler, net, trainer


def train_step(trainer, optimizer, scheduler, batch, cfg: RunConfig,
               env: Distributed) -> list[float]:
    """One optimizer step; returns [loss * n, correct, n] summed over ranks (one copy to the
    host per step). A non-finite loss skips the update (the run is about to stop as
    diverged)."""
    inputs, positions, labels = to_device(batch, env.device)
    with autocast(cfg, env.device):
        logits = trainer(inputs, positions).float()
    loss, stats = loss_and_stats(logits, labels, cfg, env)
    stats = env.all_reduce(stats).tolist()
    if not math.isfinite(stats[0]):
        return stats
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    update(trainer.parameters(), optimizer, scheduler, cfg)
    return stats


def loss_and_stats(logits, labels, cfg: RunConfig, env: Distributed):
    """(loss, [loss * n, correct, n] of this rank as a float64 tensor) of a training batch."""
    loss, hits = loss_and_hits(logits, labels, cfg.train.label_smoothing)
    hits = loss.new_zeros(()) if hits is None else hits  # multi-label: no accuracy
    return loss, torch.stack([loss.detach() * len(labels), hits,
                              torch.tensor(len(labels), device=env.device)]).double()


def update(parameters, optimizer, scheduler, cfg: RunConfig) -> None:
    """The optimizer step from the gradients in `parameters`: clipped to train.grad_clip
    (over these parameters only: one run's), then the schedule's step."""
    if cfg.train.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(parameters, cfg.train.grad_clip)
    optimizer.step()
    scheduler.step()


class Run:
    """The state of one run in this process, and the records it writes (rank 0 only)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, env: Distributed, on_eval, splits=None):
        """`splits`: cfg's data (load_splits), when the caller has loaded it already (the
        seeds of a pack share one copy)."""
        self.cfg, self.run_dir, self.env, self.on_eval = cfg, run_dir, env, on_eval
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
            write_json(self.run_dir / RESULT, result)
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
        atomic_write_bytes(self.run_dir / CHECKPOINT, buffer.getvalue())

    def start(self) -> None:
        """Create the run folder, or resume from its checkpoint."""
        path = self.run_dir / CHECKPOINT
        if path.is_file():
            # On the CPU: the RNG states must be CPU tensors, and load_state_dict copies
            # weights and optimizer state to wherever the model is (a run may move
            # between a GPU and a CPU node).
            state = torch.load(path, map_location="cpu", weights_only=True)
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
            self.sessions = list(read_json(self.run_dir / RESULT).get("sessions") or [])
        except (OSError, ValueError, AttributeError):
            self.sessions = []  # a first start, or a record from before sessions were kept
        self.sessions.append(new_session(self.progress.step, self.env))
        rows = [r for r in read_jsonl(self.run_dir / METRICS) if r["step"] <= self.progress.step]
        if rows:
            self.final = {k: rows[-1][k] for k in self.final_keys()}
        if self.env.is_main:
            write_yaml(self.run_dir / CONFIG, self.cfg.to_dict())
            write_jsonl(self.run_dir / METRICS, rows)
            self.events = EventLog(RunFolder(self.run_dir), self.cfg, rows,
                                   self.progress.started_at)
            self.write_result("running")
        if self.progress.step:
            log(f"resumed {self.run_dir} at step {self.progress.step}/{self.total_steps}",
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
            append_jsonl(self.run_dir / METRICS, row)
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


def rng_state() -> dict:
    """The global RNG streams a run draws from (a checkpoint keeps them)."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def log(message: str, env: Distributed) -> None:
    if env.is_main:
        print(message, file=sys.stderr, flush=True)


def train_run(cfg: RunConfig, run_dir: Path, *,
              on_eval: Callable[[dict], None] | None = None) -> dict:
    """Train `cfg` into run_dir (resuming from its checkpoint) and return result.json.

    A finished run (completed or diverged) of the same config is returned as it is. A
    RunStopped from on_eval records its status and propagates; any other exception
    records `failed` with its traceback tail and propagates. A non-finite loss ends the
    run as `diverged` with the last finite metrics. One process trains a run folder at a
    time: a second one raises RunBusy before it writes anything (experiments/locks.py).
    A record that the file system refuses (full, read-only) raises RecordWriteError,
    after recording `failed` if that small write still succeeds; the last checkpoint is
    intact, so the same call resumes once there is room.
    """
    run_dir = Path(run_dir)
    result = finished_result(cfg, run_dir)
    if result is not None:
        return result
    run = Run(cfg, run_dir, init_distributed(), on_eval)
    with RunFolder(run_dir).lock() if run.env.is_main else nullcontext():
        result = finished_result(cfg, run_dir)  # finished by another process meanwhile
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
    """Record `failed` with the exception and its traceback's tail."""
    tail = "".join(traceback.format_exception(exc)[-6:])
    record_end(run, "failed", f"{type(exc).__name__}: {exc}\n{tail}")


def record_end(run: Run, status: str, error: str) -> None:
    """Record how the run ended, unless the file system refuses even that (the caller's
    exception says why; status then shows the run's heartbeat going stale)."""
    try:
        run.write_result(status, error=error)
    except RecordWriteError as exc:
        log(f"could not record status {status!r} either: {exc.strerror}", run.env)
