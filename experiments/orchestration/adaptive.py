"""`sweep --until-resolved`: seeds in rounds, added only to configs whose comparison with
the base is still open (neither better, worse nor equivalent), until every comparison is
decided or the seed cap is reached.

The sweep must be one knob at a time around its base: the base config (the sweep's `base:`
with its overrides) is one of its points, and every other config is compared with it. The
first round trains the sweep's `seeds:`; each later round adds `round_seeds` new seeds
(the next integers) to every open config and to the base. Each comparison is judged on the
seeds both sides share with the anytime-valid confidence sequence of experiments/sequential.py
at alpha over the number of comparisons, so looking after every round inflates neither a
comparison's nor the family's error; a decided comparison keeps the verdict of the round
that decided it.

Resuming is replaying: a round's decision depends only on the finished runs of its seeds,
so a rerun walks the same rounds, finds their runs finished (plan skips them) and goes on
where it stopped; runs cut short by the kill resume from their checkpoints. The rounds so
far are written atomically to OUT/adaptive.json after each one; `status` prints them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from experiments import sequential
from experiments.config import ConfigError, resolve
from experiments.data.registry import chance_accuracy
from experiments.orchestration.cluster import Profile
from experiments.orchestration.executors import Executor
from experiments.orchestration.follow import wait_for_runs
from experiments.orchestration.submit import plan, submit
from experiments.orchestration.sweeps import SEED_KEY, Point, Sweep
from experiments.orchestration.tracking import run_states
from experiments.power import in_points, metric_value
from experiments.records import atomic_write_text, read_json

STATE = "adaptive.json"
# What a rerun must repeat to continue the same rounds (else: another --out).
SETTINGS = ("sweep", "metric", "delta", "max_seeds", "round_seeds", "overrides")


@dataclasses.dataclass(frozen=True)
class Settings:
    metric: str
    delta: float
    max_seeds: int
    round_seeds: int

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)


def higher_is_better(metric: str) -> bool:
    """Accuracies and mean average precision go up, losses down; any other metric has no
    known direction, so no `better`/`worse` can be said of it."""
    name = metric.rsplit(".", 1)[-1]
    if name.endswith(("acc", "map")):
        return True
    if name.endswith("loss"):
        return False
    raise ConfigError(f"--metric {metric}: --until-resolved judges accuracies (…acc, …map: "
                      "higher is better) or losses (…loss: lower is better); pick one")


def config_label(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items() if k != SEED_KEY)


class Design:
    """The sweep's configs (params without the seed), which one is the base, and the seed
    order every config draws from."""

    def __init__(self, sweep: Sweep, settings: Settings):
        seeds = sorted({p.params[SEED_KEY] for p in sweep.points if SEED_KEY in p.params})
        if not seeds:
            raise ConfigError(f"sweep {sweep.path}: --until-resolved adds seeds, so the sweep "
                              "needs a `seeds:` list (the first round's seeds)")
        if len(seeds) < 2:
            raise ConfigError(f"sweep {sweep.path}: the first round needs >= 2 seeds per "
                              f"config to measure seed noise, got seeds: {seeds}")
        if settings.max_seeds < len(seeds):
            raise ConfigError(f"--max-seeds {settings.max_seeds} is below the sweep's "
                              f"{len(seeds)} first-round seeds; raise it")
        self.sweep, self.first = sweep, len(seeds)
        self.seed_order = seeds + list(range(max(seeds) + 1,
                                             max(seeds) + 1 + settings.max_seeds - len(seeds)))
        self.configs: dict[str, dict[str, Any]] = {}
        for point in sweep.points:
            params = {k: v for k, v in point.params.items() if k != SEED_KEY}
            self.configs.setdefault(config_label(params), params)
        declared = resolve(sweep.spec.get("base") or {}, sweep.overrides).to_dict()

        def is_base(params) -> bool:
            resolved = self.point(params, seeds[0]).config.to_dict()
            return all(resolved[key.split(".", 1)[0]].get(key.split(".", 1)[1]) ==
                       declared[key.split(".", 1)[0]].get(key.split(".", 1)[1])
                       for key in params)

        bases = [label for label, params in self.configs.items() if is_base(params)]
        if len(bases) != 1 or len(self.configs) < 2:
            raise ConfigError(f"sweep {sweep.path}: --until-resolved compares every config "
                              "with the base, so the base config (`base:` with its overrides) "
                              "must be one of the sweep's points, with at least one variation "
                              "(a one-knob-at-a-time sweep like experiments/sweeps/demo.yaml)")
        self.base = bases[0]
        self.levels = [label for label in self.configs if label != self.base]

    def point(self, params: dict[str, Any], seed: int, index: int = 0) -> Point:
        return Point(index, {**params, SEED_KEY: seed},
                     resolve(self.sweep.spec.get("base") or {},
                             {**self.sweep.overrides, **params, SEED_KEY: seed}))

    def round_sweep(self, counts: dict[str, int]) -> Sweep:
        """The sweep restricted to the first counts[config] seeds of each config."""
        points = [self.point(self.configs[label], seed) for label, n in counts.items()
                  for seed in self.seed_order[:n]]
        points = [dataclasses.replace(p, index=i) for i, p in enumerate(points)]
        return dataclasses.replace(self.sweep, points=tuple(points))


def read_state(folder: Path) -> dict[str, Any] | None:
    path = folder / STATE
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}); delete it to restart the "
                          "rounds from the finished runs") from None


def check_resumable(folder: Path, header: dict[str, Any]) -> None:
    """A folder's earlier rounds must have been asked with the same settings."""
    state = read_state(folder)
    if state is None:
        return
    changed = [key for key in SETTINGS if state.get(key) != header[key]]
    if changed:
        was = ", ".join(f"{k}={state.get(k)!r}" for k in changed)
        raise ConfigError(f"{folder} holds rounds of --until-resolved with {was}: rerun with "
                          "the same settings to continue them, or pass another --out")


def collect(folder: Path, sweep: Sweep, metric: str) -> tuple[dict[str, dict[int, float]],
                                                                list[str], list[str]]:
    """({config: {seed: value in points}}, run ids without a value, run ids of diverged runs
    counted at chance). A diverged run is judged at chance accuracy, as the verdicts judge it
    (docs/verdicts.md): leaving it out would make the seeds judged depend on the outcome."""
    states = {s.run_id: s for s in run_states(folder)}
    values: dict[str, dict[int, float]] = {}
    missing, at_chance = [], []
    for point in sweep.points:
        state = states.get(point.run_id)
        value = metric_value(state.result, metric) if state else None
        if state is not None and state.state == "diverged":
            value = chance(point, metric)
            if value is not None:
                at_chance.append(point.run_id)
                values.setdefault(config_label(point.params), {})[point.params[SEED_KEY]] = value
                continue
        if state is None or state.state != "completed" or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            missing.append(point.run_id)
            continue
        values.setdefault(config_label(point.params), {})[point.params[SEED_KEY]] = \
            float(in_points(metric, [value])[0])
    return values, missing, at_chance


def chance(point: Point, metric: str) -> float | None:
    """Chance accuracy in points of the point's data set; None where chance means nothing
    (a loss, mean average precision, a multi-label data set)."""
    if not metric.rsplit(".", 1)[-1].endswith("acc"):
        return None
    return chance_accuracy(point.config.data)


def run_until_resolved(sweep: Sweep, folder: Path, settings: Settings, profile: Profile, *,
                       executor: Executor, runs_per_job: int | None, pack_seeds: int,
                       profile_overrides: dict, log: Callable[[str], None],
                       poll_s: float = 1.0) -> dict[str, Any]:
    """Rounds until every comparison is decided or max_seeds is reached; returns the final
    state (also in folder/adaptive.json). Raises ConfigError for a design it cannot judge,
    before anything is submitted. A diverged run counts at chance accuracy (collect); a
    run without a value (failed twice in this call, or diverged where chance means nothing)
    stops the rounds (state `failed`): leaving it out would make the seeds judged depend on
    the outcome."""
    design = Design(sweep, settings)
    family = len(design.levels)
    alpha = sequential.ALPHA / family
    header = {"sweep": str(sweep.path.resolve()), "metric": settings.metric,
              "delta": settings.delta,
              "max_seeds": settings.max_seeds, "round_seeds": settings.round_seeds,
              "overrides": {k: str(v) for k, v in sweep.overrides.items()},
              "alpha": alpha, "family": family, "prior_scale": sequential.PRIOR_SCALE,
              "base": design.base}
    check_resumable(folder, header)
    counts = dict.fromkeys(design.configs, design.first)
    decided: dict[str, dict] = {}
    rounds: list[dict] = []
    retried: set[str] = set()
    while True:
        round_no = len(rounds) + 1
        current = design.round_sweep(counts)
        ids = {p.run_id for p in current.points}
        todo, kept = plan(current, folder, rerun_failed=False)
        again = [p for p in kept.get("failed", []) if p.run_id not in retried]
        retried |= {p.run_id for p in again}
        todo += again  # cut short (a kill, a lost node): resumes from its checkpoint
        if todo:
            entry = submit(current, todo, folder, profile, executor=executor,
                           runs_per_job=runs_per_job, pack_seeds=pack_seeds,
                           profile_overrides=profile_overrides)
            log(f"round {round_no}: submitted {len(todo)} run(s) as {len(entry['jobs'])} "
                f"{executor.name} job(s); follow them with: perceiver-ablate status {folder}")
        wait_for_runs(folder, ids, poll_s)
        values, missing, at_chance = collect(folder, current, settings.metric)
        if missing:
            state = {**header, "rounds": rounds, "decided": list(decided.values()),
                     "state": "failed", "reason": f"{len(missing)} run(s) of round "
                     f"{round_no} did not complete: {', '.join(sorted(missing))}"}
            write_state(folder, state)
            log(f"stopped: {state['reason']} (see perceiver-ablate status {folder}; rerun "
                "to resume them)")
            return state
        opened: dict[str, dict] = {}
        for level in design.levels:
            if level in decided:
                continue
            row = judge_one(design, values, level, settings, alpha, round_no)
            (decided if row["verdict"] != sequential.OPEN else opened)[level] = row
        rounds.append({"round": round_no, "seeds": dict(counts), "at_chance": at_chance,
                       "judged": [*(r for r in decided.values() if r["round"] == round_no),
                                  *opened.values()]})
        if at_chance:
            log(f"round {round_no}: {len(at_chance)} diverged run(s) counted at chance "
                f"accuracy: {', '.join(at_chance)}")
        log(f"round {round_no}: " + "; ".join(
            f"{r['level']}: {r['verdict']} ({interval_text(r)}, {r['seeds']} seeds)"
            for r in rounds[-1]["judged"]))
        grow = {level: min(counts[level] + settings.round_seeds, settings.max_seeds)
                for level in opened}
        if not opened or all(grow[level] == counts[level] for level in opened):
            reason = ("every comparison decided" if not opened else
                      f"{len(opened)} comparison(s) still open at --max-seeds "
                      f"{settings.max_seeds}")
            state = {**header, "rounds": rounds, "decided": list(decided.values()),
                     "open": list(opened.values()), "state": "done", "reason": reason}
            write_state(folder, state)
            log(f"done after {round_no} round(s): {reason}")
            return state
        counts.update(grow)
        counts[design.base] = max(counts[design.base], *grow.values())
        write_state(folder, {**header, "rounds": rounds, "decided": list(decided.values()),
                             "open": list(opened.values()), "state": "running",
                             "reason": f"round {round_no + 1} adds seeds to "
                                       f"{len(opened)} open comparison(s)"})


def judge_one(design: Design, values: dict[str, dict[int, float]], level: str,
              settings: Settings, alpha: float, round_no: int) -> dict[str, Any]:
    """One comparison on the seeds both sides have, with its confidence sequence."""
    base, other = values[design.base], values.get(level, {})
    shared = sorted(set(base) & set(other))
    effect, low, high = (float(x) for x in sequential.confidence_sequence(
        [base[s] for s in shared], [other[s] for s in shared], alpha))
    verdict = str(sequential.decide(low, high, settings.delta, settings.higher_is_better))
    return {"level": level, "seeds": len(shared), "effect": effect, "low": low, "high": high,
            "verdict": verdict, "round": round_no}


def interval_text(row: dict[str, Any]) -> str:
    if not math.isfinite(row["low"]) or not math.isfinite(row["high"]):
        return f"{row['effect']:+.2f}, no finite interval yet"
    return f"{row['effect']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}]"


def write_state(folder: Path, state: dict[str, Any]) -> None:
    state = {**state, "updated_at": datetime.now(UTC).isoformat(timespec="seconds")}
    atomic_write_text(folder / STATE, json.dumps(state, indent=2, allow_nan=True) + "\n")


def summary(folder: Path) -> str:
    """What `status` prints of a folder's rounds ('' when it has none)."""
    state = read_state(folder)
    if state is None:
        return ""
    rounds = state.get("rounds") or []
    lines = [f"--until-resolved ({state.get('state')}): {len(rounds)} round(s), "
             f"{state.get('reason')}; base {state.get('base')}, --delta {state.get('delta')}, "
             f"intervals anytime-valid at {100 * (1 - state.get('alpha', 0)):.4g}%:"]
    at_chance = sorted({run for r in rounds for run in r.get("at_chance", [])})
    if at_chance:
        lines.append(f"  {len(at_chance)} diverged run(s) counted at chance accuracy: "
                     f"{', '.join(at_chance)}")
    for row in [*state.get("decided", []), *state.get("open", [])]:
        lines.append(f"  {row['level']}: {row['verdict']} {interval_text(row)} "
                     f"({row['seeds']} seeds, round {row['round']})")
    return "\n".join(lines)
