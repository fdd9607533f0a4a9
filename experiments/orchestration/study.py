"""Optuna studies over the config vocabulary: the study file, its storage, its trials.

A study file (experiments/studies/*.yaml) says what to search:

    name: fmnist-tpe      # the study's name in its storage (default: the file's stem)
    base:                 # the config every trial starts from: sections and/or `preset:`
      preset: fashion-mnist
      train: {max_steps: 300}
    space:                # dotted config key -> distribution
      model.num_latents: {type: int, low: 16, high: 128, log: true}
      train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.cross_attend_placement: {type: categorical, choices: [interleaved, at_start]}
      encoding.num_bands: {type: int, low: 4, high: 64, step: 4}
    objective: val_acc    # or [val_acc, flops]: a Pareto study (accuracy up, FLOPs down)
    sampler: tpe          # tpe | random | grid, or {name: tpe, seed: 0, <constructor options>}
    pruner: median        # median | hyperband | none, or {name: median, n_startup_trials: 2}
    trials: 20            # finished trials wanted; grid: defaults to (and at most) every point
    storage: null         # null = <out>/study.journal; an RDB URL such as postgresql+psycopg2://
    stale_after_s: 600    # a RUNNING trial silent this long is failed, its parameters retried

Everything is checked when the file is loaded, before a worker starts: unknown keys, empty
or inverted ranges, log ranges through 0, grids over continuous ranges, sampler and pruner
options, and the base config with each parameter at both ends of its range (so a value the
config vocabulary rejects names its key). Each trial still builds its config through
experiments.config, so a sampled combination that cannot be built fails that trial only.
The objective is the run's final validation accuracy (a diverged run's last one) and, for a
Pareto study, its forward FLOPs per example. How workers run trials: study_workers.py.

The storage is a journal file by default (Optuna's JournalStorage + JournalFileBackend:
one appended file, safe on shared file systems) or any RDB URL (PostgreSQL for many
nodes). The study's folder records the effective spec in study.yaml (the storage URL
without its password), from which `status` and the analysis read the trials.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from experiments.config import merge, read_user_yaml, resolve
from experiments.data.registry import check_config
from experiments.runfolder import STUDY_FILE
from perceiver_core.config import ConfigError

JOURNAL_FILE = "study.journal"
STUDY_KEYS = ("name", "base", "space", "objective", "sampler", "pruner", "trials", "storage",
              "stale_after_s")
PARAM_KEYS = {"int": ("type", "low", "high", "log", "step"),
              "float": ("type", "low", "high", "log", "step"),
              "categorical": ("type", "choices")}
OBJECTIVES = {"val_acc": "maximize", "flops": "minimize"}
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler"}
PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "none": "NopPruner"}
# Concurrent TPE workers would otherwise sample near-identical points (Optuna's advice).
SAMPLER_DEFAULTS = {"tpe": {"constant_liar": True}}


# ----------------------------------------------------------------------------- study file

@dataclass(frozen=True)
class Param:
    """One searched config key and its distribution (Optuna's suggest_* arguments)."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1,
                                     log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list:
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.step is None:
            raise ConfigError(f"space.{self.key}: a grid needs finitely many values; give this "
                              "float range a `step`, or make it categorical")
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]  # no 0.30000000000000004

    def ends(self) -> list:
        """The values checked against the config vocabulary before any worker starts."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        out = {"type": self.type, "low": self.low, "high": self.high}
        return {**out, **({"log": True} if self.log else {}),
                **({"step": self.step} if self.step is not None else {})}


@dataclass(frozen=True)
class StudySpec:
    name: str
    base: dict[str, Any]  # config content (sections and/or `preset:`), overrides applied
    space: tuple[Param, ...]
    objectives: tuple[str, ...] = ("val_acc",)
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    trials: int = 1
    storage: str | None = None  # None: a journal file in the results folder
    stale_after_s: float = 600.0

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]

    def config(self, params: Mapping[str, Any]):
        """The RunConfig of one point of the space (ConfigError if it cannot be built)."""
        config = resolve(self.base, params)
        check_config(config)
        return config

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base,
                "space": {p.key: p.to_dict() for p in self.space},
                "objective": list(self.objectives), "sampler": self.sampler,
                "pruner": self.pruner, "trials": self.trials, "storage": public_url(self.storage),
                "stale_after_s": self.stale_after_s}


def _number(where: str, value, integer: bool):
    if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or (integer and not float(value).is_integer()):
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"{where}={value!r} must be {kind}")
    return int(value) if integer else float(value)


def parse_param(key: str, entry: Any) -> Param:
    """A `space:` entry, checked as a distribution (the config check comes later)."""
    merge({}, {key: None})  # an unknown config key raises here, with a suggestion
    where = f"space.{key}"
    if not isinstance(entry, Mapping) or entry.get("type") not in PARAM_KEYS:
        raise ConfigError(f"{where} must be a mapping with `type: int|float|categorical`, "
                          f"got {entry!r}")
    kind = entry["type"]
    unknown = sorted(set(entry) - set(PARAM_KEYS[kind]))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for type {kind}; "
                          f"valid keys are {', '.join(PARAM_KEYS[kind])}")
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: `choices` must be a non-empty list, got {choices!r}")
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise ConfigError(f"{where}: choices must be numbers, strings, booleans or null")
        if len(set(map(repr, choices))) < len(choices):
            raise ConfigError(f"{where}: choices {choices} repeat a value")
        return Param(key, kind, choices=tuple(choices))
    for name in ("low", "high"):
        if name not in entry:
            raise ConfigError(f"{where}: `{name}` is missing")
    integer = kind == "int"
    low, high = (_number(f"{where}.{n}", entry[n], integer) for n in ("low", "high"))
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log={log!r} must be true or false")
    step = entry.get("step")
    if step is not None:
        step = _number(f"{where}.step", step, integer)
        if step <= 0:
            raise ConfigError(f"{where}.step={step} must be > 0")
    if low > high:
        raise ConfigError(f"{where}: low={low} > high={high}; swap them")
    if log and low <= 0:
        raise ConfigError(f"{where}: log scale needs low > 0, got low={low}")
    if log and step not in (None, 1):
        raise ConfigError(f"{where}: `step` and `log: true` cannot be combined")
    return Param(key, kind, low, high, log, step)


def _named(section: str, value: Any, table: dict[str, str], module) -> dict[str, Any]:
    """`name` or {name: ..., options...}, options checked against the Optuna constructor."""
    entry = {"name": value} if isinstance(value, str) else value
    if not isinstance(entry, Mapping) or entry.get("name") not in table:
        raise ConfigError(f"{section}: expected one of {', '.join(table)} (or a mapping with "
                          f"`name:` and options), got {value!r}")
    entry = dict(entry)
    accepted = set(inspect.signature(getattr(module, table[entry["name"]])).parameters)
    accepted -= {"search_space"}  # a grid is the space's own
    unknown = sorted(set(entry) - {"name"} - accepted)
    if unknown:
        raise ConfigError(f"{section}: unknown option(s) {unknown} for {entry['name']}; "
                          f"valid options are {', '.join(sorted(accepted))}")
    return entry


def load_study(path: str | Path, overrides: Mapping[str, Any] = (), trials: int | None = None,
               storage: str | None = None) -> StudySpec:
    """Parse and check a study file; `overrides` (dotted keys) apply to its base config."""
    path = Path(path)
    content = read_user_yaml(path)
    if not content:
        raise ConfigError(f"{path}: the study file is empty; it needs at least `space:` (the "
                          "searched keys) and `trials:` (see experiments/studies/)")
    try:
        return _check(content, path.stem, dict(overrides), trials, storage)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _check(content: dict, stem: str, overrides: dict, trials: int | None,
           storage: str | None) -> StudySpec:
    unknown = sorted(set(content) - set(STUDY_KEYS))
    if unknown:
        raise ConfigError(f"unknown study key(s) {unknown}; valid keys are {', '.join(STUDY_KEYS)}")
    space_in = content.get("space")
    if not isinstance(space_in, Mapping) or not space_in:
        raise ConfigError("`space:` must map dotted config keys to distributions "
                          "(e.g. model.num_latents: {type: int, low: 16, high: 128})")
    space = tuple(parse_param(str(key), entry) for key, entry in space_in.items())
    searched = sorted(set(overrides) & {p.key for p in space})
    if searched:
        raise ConfigError(f"{searched} are searched by `space:`; drop them from the overrides")

    base = content.get("base") or {}
    if not isinstance(base, Mapping):
        raise ConfigError(f"`base:` must be a mapping of config sections, got {base!r}")
    base = dict(base)
    preset = base.pop("preset", None)
    base = merge(base, overrides)
    if preset is not None:
        base["preset"] = preset
    check_config(resolve(base))
    for param in space:
        for value in param.ends():
            try:
                check_config(resolve(base, {param.key: value}))
            except ConfigError as exc:
                raise ConfigError(f"space.{param.key}: the value {value!r} cannot be built: "
                                  f"{exc}") from None

    objectives = content.get("objective", "val_acc")
    objectives = [objectives] if isinstance(objectives, str) else objectives
    if not isinstance(objectives, list) or not objectives or len(set(objectives)) < len(
            objectives) or not set(objectives) <= set(OBJECTIVES):
        raise ConfigError(f"objective: expected one or both of {', '.join(OBJECTIVES)} "
                          f"(val_acc maximised, flops minimised), got {objectives!r}")
    sampler = _named("sampler", content.get("sampler", "tpe"), SAMPLERS, optuna.samplers)
    default_pruner = "median" if len(objectives) == 1 else "none"
    pruner = _named("pruner", content.get("pruner", default_pruner), PRUNERS, optuna.pruners)
    if len(objectives) > 1 and pruner["name"] != "none":
        raise ConfigError("pruner: Optuna cannot prune multi-objective studies; set `pruner: none`")

    grid_size = math.prod(len(p.grid()) for p in space) if sampler["name"] == "grid" else None
    trials = trials if trials is not None else content.get("trials", grid_size)
    if trials is None:
        raise ConfigError("`trials:` is missing: how many finished trials the study needs")
    trials = _number("trials", trials, integer=True)
    if trials < 1:
        raise ConfigError(f"trials={trials} must be >= 1")
    if grid_size is not None and trials > grid_size:
        raise ConfigError(f"trials={trials} > the grid's {grid_size} points")
    stale = _number("stale_after_s", content.get("stale_after_s", 600), integer=False)
    if stale <= 0:
        raise ConfigError(f"stale_after_s={stale} must be > 0")
    storage = storage or content.get("storage")
    if storage is not None and not isinstance(storage, str):
        raise ConfigError(f"storage={storage!r} must be a journal file path or an RDB URL")
    spec = StudySpec(name=str(content.get("name") or stem), base=base, space=space,
                     objectives=tuple(objectives), sampler=sampler, pruner=pruner,
                     trials=trials, storage=storage, stale_after_s=stale)
    make_sampler(spec), make_pruner(spec)  # constructor errors (bad option values) surface now
    return spec


def _construct(section: str, cls, options: dict[str, Any]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return cls(**options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{section}: {exc}") from None


def make_sampler(spec: StudySpec, stream: tuple[int, ...] = ()) -> optuna.samplers.BaseSampler:
    """The study's sampler. A seeded TPE or random sampler draws from the seed mixed with
    `stream` (a worker's own numbers), else every worker would draw the same points; the
    grid's seed orders its points, which all workers must agree on, so it is kept."""
    name = spec.sampler["name"]
    options = {**SAMPLER_DEFAULTS.get(name, {}),
               **{k: v for k, v in spec.sampler.items() if k != "name"}}
    if name == "grid":
        options["search_space"] = {p.key: p.grid() for p in spec.space}
    elif options.get("seed") is not None and stream:
        mixed = np.random.SeedSequence([options["seed"], *stream])
        options["seed"] = int(mixed.generate_state(1)[0])
    return _construct("sampler", getattr(optuna.samplers, SAMPLERS[name]), options)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    options = {k: v for k, v in spec.pruner.items() if k != "name"}
    return _construct("pruner", getattr(optuna.pruners, PRUNERS[spec.pruner["name"]]), options)


# ----------------------------------------------------------------------------- storage

def is_rdb(url: str) -> bool:
    return "://" in url


def storage_url(spec: StudySpec, out: str | Path) -> str:
    """The RDB URL, or the journal file's absolute path (workers may start elsewhere)."""
    if spec.storage and is_rdb(spec.storage):
        return spec.storage
    return str(Path(spec.storage or Path(out) / JOURNAL_FILE).resolve())


def public_url(url: str | None) -> str | None:
    """The URL without its password, for records (libpq reads PGPASSWORD or ~/.pgpass)."""
    if not url or not is_rdb(url):
        return url
    from sqlalchemy.engine import make_url

    return make_url(url)._replace(password=None).render_as_string(hide_password=False)


class JournalFile(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file, with appends that are all or nothing.

    Optuna appends each operation as one JSON line. A write that the file system refuses
    half-way (a full disk) or a writer killed mid-write leaves a last line without its
    newline; Optuna's next append then lands on the same line, and from then on every read
    of the study fails on that line (found by the soak, tests/test_soak.py). Here, under
    the journal's lock (no other writer is mid-append), an append first cuts such a torn
    tail back to the last complete line (an operation that never finished, whose writer
    got the error), and a write that fails is undone the same way."""

    def __init__(self, path: str) -> None:
        self.append_lock = optuna.storages.journal.JournalFileOpenLock(path)
        super().__init__(path, lock_obj=self.append_lock)
        self.path = path

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode()
        self.append_lock.acquire()
        try:
            with open(self.path, "r+b") as f:
                whole = complete_length(f)
                try:
                    f.truncate(whole)
                    f.seek(whole)
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    f.truncate(whole)
                    raise
        finally:
            self.append_lock.release()


def complete_length(f, chunk: int = 65536) -> int:
    """The length of the file's complete lines (up to and including its last newline)."""
    end = f.seek(0, os.SEEK_END)
    position = end
    while position > 0:
        start = max(0, position - chunk)
        f.seek(start)
        newline = f.read(position - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


def open_storage(url: str, stale_after_s: float, on_stale: Callable | None = None
                 ) -> optuna.storages.BaseStorage:
    """A journal file, or an RDB with Optuna's heartbeat (`on_stale(study, trial)` is
    called for each trial it fails)."""
    if not is_rdb(url):
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFile(url))
    import sqlalchemy.exc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=max(1, int(stale_after_s / 4)),
                grace_period=max(1, int(stale_after_s)),
                heartbeat_stale_trial_callback=on_stale)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigError(f"cannot open storage {public_url(url)}: "
                              f"{str(exc).splitlines()[0]}") from None


def open_study(spec: StudySpec, url: str, create: bool = False,
               on_stale: Callable | None = None) -> optuna.Study:
    storage = open_storage(url, spec.stale_after_s, on_stale)
    kwargs = {"study_name": spec.name, "storage": storage, "sampler": make_sampler(spec),
              "pruner": make_pruner(spec)}
    if create:
        study = optuna.create_study(**kwargs, directions=spec.directions, load_if_exists=True)
    else:
        study = optuna.load_study(**kwargs)
    stored = [d.name.lower() for d in study.directions]
    if stored != spec.directions:
        raise ConfigError(f"study {spec.name!r} in {public_url(url)} optimises {stored}, not "
                          f"{spec.directions}; give this study another name or storage")
    if create:  # names the values in optuna-dashboard and Optuna's plots
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(spec.objectives))
    return study


# ----------------------------------------------------------------------------- reading

def tally(study: optuna.Study) -> dict[str, int]:
    """Trials finished (complete or pruned), running, waiting (queued retries) and failed
    (raised: lost workers' and surplus trials aside)."""
    trials = study.get_trials(deepcopy=False)
    count = lambda *states: sum(t.state in states for t in trials)
    return {"finished": count(TrialState.COMPLETE, TrialState.PRUNED),
            "running": count(TrialState.RUNNING), "waiting": count(TrialState.WAITING),
            "failed": sum(t.state == TrialState.FAIL and "error" in t.user_attrs
                          and not t.user_attrs.get("surplus") for t in trials)}


def load_recorded(results_dir: str | Path) -> optuna.Study | None:
    """The study recorded in a results folder (read-only use), or None if it holds none."""
    path = Path(results_dir) / STUDY_FILE
    if not path.is_file():
        return None
    content = read_user_yaml(path)
    return optuna.load_study(study_name=content["name"],
                             storage=open_storage(content["storage"], content["stale_after_s"]))


def best_numbers(study: optuna.Study) -> set[int]:
    """The best trial, or the Pareto front of a multi-objective study."""
    try:
        return {t.number for t in study.best_trials}
    except ValueError:  # no complete trial yet
        return set()


def trials_frame(results_dir: str | Path):
    """One row per trial (pandas): number, state, objective values, params, run_id, best,
    error and retry_of; None when the folder holds no study."""
    import pandas as pd

    study = load_recorded(results_dir)
    if study is None:
        return None
    names = read_user_yaml(Path(results_dir) / STUDY_FILE)["objective"]
    best = best_numbers(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.values or [None] * len(names)
        rows.append({"trial.number": t.number, "trial.state": t.state.name,
                     **{f"trial.{n}": v for n, v in zip(names, values, strict=True)},
                     "trial.best": t.number in best, **t.params,
                     "run_id": t.user_attrs.get("run_id"), "trial.job": t.user_attrs.get("job"),
                     "trial.retry_of": t.user_attrs.get("retry_of"),
                     "trial.error": t.user_attrs.get("error") or t.user_attrs.get("lost")})
    empty = ["trial.number", "trial.state", "trial.best", "run_id"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=empty)


def trial_columns(results_dir: str | Path):
    """Trial columns keyed by run_id, to join onto the analysis's run-per-row table: for a
    run several trials ran (a retry), the last one. None when the folder holds no study."""
    frame = trials_frame(results_dir)
    if frame is None:
        return None
    keep = ["run_id"] + [c for c in frame.columns if c.startswith("trial.")]
    frame = frame[frame["run_id"].notna()][keep]
    return frame.drop_duplicates("run_id", keep="last").reset_index(drop=True)


def study_status(results_dir: str | Path) -> str | None:
    """The trials of the study in `results_dir` as text (best marked `*`), or None."""
    frame = trials_frame(results_dir)
    if frame is None:
        return None
    study_file = read_user_yaml(Path(results_dir) / STUDY_FILE)
    counts = frame["trial.state"].value_counts().to_dict()
    head = (f"study {study_file['name']} ({study_file['storage']}): "
            f"{counts.get('COMPLETE', 0) + counts.get('PRUNED', 0)}/{study_file['trials']} "
            "finished" + "".join(f", {n.lower()} {c}" for n, c in sorted(counts.items())))
    if frame.empty:
        return head
    table = frame.drop(columns=["trial.best"]).rename(columns=_short)
    table.insert(0, "", ["*" if b else "" for b in frame["trial.best"]])
    table = table.dropna(axis=1, how="all")
    return head + "\n" + table.to_string(index=False, na_rep="-", max_colwidth=60)


def _short(column: str) -> str:
    return column.removeprefix("trial.").rsplit(".", 1)[-1] if "." in column else column
