"""The state of every run of a results folder as one table, with the stories of the runs
that were requeued, resumed or failed: what `status` and `sweep --wait` print.

States come from experiments/orchestration/tracking.py (without `sacct`). The `nodes`
column is where the run's ranks last ran; a run that was interrupted and resumed (a
requeue, a node lost mid-run) gets its story below the table, one line per session.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from experiments.formatting import human, table
from experiments.orchestration.tracking import headline, run_states
from perceiver_core.config import ConfigError


def flat_config(config: dict) -> dict:
    """{'model': {'num_latents': 8}} -> {'model.num_latents': 8} (a run's nested config)."""
    return {f"{section}.{key}": value for section, values in config.items()
            if isinstance(values, dict) for key, value in values.items()}


def varying(configs: list[dict]) -> list[str]:
    """Dotted config keys whose value differs between runs: the sweep's axes."""
    flat = [flat_config(c) for c in configs]
    keys = dict.fromkeys(k for f in flat for k in f)
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


def percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{max(seconds, 0):.0f}s ago"


def story(sessions: list[dict]) -> str:
    """One run's sessions: the steps each trained, where, in which job, how it ended."""
    parts = []
    for session in sessions:
        job = session.get("job") or "-"
        if session.get("restart"):
            job += f" restart {session['restart']}"
        parts.append(f"steps {session['from_step']}-{session['to_step']} on "
                     f"{','.join(session['nodes'])} (job {job}, {session['started_at']}): "
                     f"{session['status']}"
                     + (f" [{session['error']}]" if session.get("error") else ""))
    return "; ".join(parts)


def rounds(folder: str | Path) -> str:
    """A `sweep --until-resolved` folder's rounds and anytime-valid verdicts, as `status`
    prints them ('' for any other folder)."""
    # not at import: analysis reads this module, and the rounds' brings the submitters
    from experiments.orchestration.adaptive import summary

    return summary(Path(folder))


def report(folder: str | Path, run_ids: Iterable[str] | None = None) -> tuple[str, int]:
    """(the status table and the logs of failed runs, number of failed runs)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"results folder {folder} does not exist")
    states = run_states(folder)
    if run_ids is not None:
        wanted = set(run_ids)
        states = [s for s in states if s.run_id in wanted]
    if not states:
        raise ConfigError(f"{folder} holds no runs (no sweep.json and no run folder with "
                          "config.yaml): pass a sweep's or study's results folder")
    axes = varying([s.config for s in states])
    rows = []
    for s in states:
        flat = flat_config(s.config)
        final = s.result.get("final") or {}
        flops = s.result.get("flops")
        active = s.state in ("running", "requeued", "interrupted")
        rows.append([s.run_id, s.state, *(str(flat.get(k, "-")) for k in axes),
                     str(s.result.get("step", "-")), percent(final.get("val_acc")),
                     percent(final.get("test_acc")), human(flops) if flops else "-",
                     age(s.heartbeat_age_s()) if active else "-", s.job_id or "-",
                     ",".join(s.result.get("nodes") or ["-"])])
    lines = [table(["run", "state", *axes, "step", "val_acc", "test_acc", "FLOPs",
                    "heartbeat", "job", "nodes"], rows), headline(states)]
    requeued = [s for s in states if s.state == "requeued" and s.note]
    if requeued:
        lines.append("requeued runs:")
        lines += [f"  {s.run_id}: {s.note}" for s in requeued]
    resumed = [s for s in states if len(s.result.get("sessions") or []) > 1]
    if resumed:
        lines.append("resumed runs (sessions: steps, nodes, job, end):")
        lines += [f"  {s.run_id}: {story(s.result['sessions'])}" for s in resumed]
    adaptive = rounds(folder)  # a sweep --until-resolved's rounds and verdicts
    if adaptive:
        lines.append(adaptive)
    for kind in ("failed", "interrupted"):
        ended = [s for s in states if s.state == kind]
        if ended:
            lines.append(f"{kind} runs (log, last error line):")
            lines += [f"  {s.run_id}: {s.log or s.run_folder.result_file}"
                      + (f"  [{s.note}]" if s.note else "") for s in ended]
    return "\n".join(lines), sum(s.state == "failed" for s in states)
