"""Every run of a results folder accounted for: the one section that `figures` (index.md and
index.html) and `verdicts` (Markdown and JSON) all show, so a reader always sees how many
runs the folder holds and why the missing ones are missing.

A figure or a verdict is computed from the completed runs only; without this section a sweep
of 8 runs of which 4 failed reads like a sweep of 4. The states are `status`'s
(experiments/orchestration/tracking.py: a manifest's runs that never started, runs whose
record says `running` but whose trainer is gone, which are `interrupted`), so the three
views count alike. For a run that did not complete the section gives what sets it apart
(the config keys that vary between the folder's runs) and its last error line: the
record's error, the job's fate, or the error its job's log gives for it.

A folder whose seeds `sweep --until-resolved` added in rounds, stopping where the data
decided, gets a warning in the section: the verdicts' fixed-n intervals are not valid after
such stopping (docs/verdicts.md, "Seeds only where the answer is open"); the rounds'
anytime-valid verdicts are shown beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from analysis.markup import literal, markdown_table, visible
from experiments.orchestration.status import flat_config, rounds, varying
from experiments.orchestration.tracking import STATE_ORDER, RunState, headline, run_states
from perceiver_core.config import ConfigError


class Accounting(NamedTuple):
    headline: str  # "8 runs: 4 completed, 4 failed"
    runs: pd.DataFrame  # run_id, state, config (what varies), error (last line)
    until_resolved: str = ""  # the rounds of `sweep --until-resolved` ('' for other folders)


def error_line(state: RunState) -> str:
    """Why a run did not complete, in one line ("" for a run that did, or is on its way)."""
    if state.state in ("completed", "running", "pending", "requeued"):
        return ""
    return state.note


def account(results_dir: str | Path) -> Accounting:
    """Every run of `results_dir` by state, in STATE_ORDER."""
    states = sorted(run_states(results_dir), key=lambda s: (
        STATE_ORDER.index(s.state) if s.state in STATE_ORDER else len(STATE_ORDER), s.run_id))
    flat = [flat_config(s.config) for s in states]
    axes = varying([s.config for s in states])
    rows = [{"run_id": s.run_id, "state": s.state,
             "config": ", ".join(f"{k}={f[k]}" for k in axes if k in f),
             "error": error_line(s)} for s, f in zip(states, flat, strict=True)]
    return Accounting(headline(states),
                      pd.DataFrame(rows, columns=["run_id", "state", "config", "error"]),
                      rounds(results_dir))


def judgeable(runs: pd.DataFrame, results_dir: str | Path) -> Accounting:
    """The account of a folder whose runs (a load_results frame) can be judged and drawn;
    a ConfigError saying how many runs are in which state when none completed."""
    accounting = account(results_dir)
    if runs.empty:
        raise ConfigError(f"no readable run records under {results_dir} (expected "
                          "<run-id>/config.yaml and result.json; see `perceiver-ablate "
                          f"status`): {accounting.headline}")
    if not (runs["status"] == "completed").any():
        raise ConfigError(f"no completed run to judge or draw under {results_dir} yet: "
                          f"{accounting.headline}; `perceiver-ablate status "
                          f"{results_dir}` says why (an interrupted run resumes when its "
                          "sweep, study or train command is run again)")
    return accounting


ADAPTIVE_WARNING = ("**Warning**: this folder's seeds were added in rounds until its "
                    "comparisons were decided (`sweep --until-resolved`). The verdicts' "
                    "fixed-n intervals are not valid after stopping on the data; read the "
                    "rounds' anytime-valid verdicts instead:")


def markdown(accounting: Accounting) -> str:
    """The section: the headline, then one row per run (values made literal), then the
    warning of a `sweep --until-resolved` folder with its rounds."""
    adaptive = "" if not accounting.until_resolved else (
        f"\n{ADAPTIVE_WARNING}\n\n" + "".join(
            f"    {visible(line)}\n" for line in accounting.until_resolved.splitlines()))
    if accounting.runs.empty:
        return f"{literal(accounting.headline)}.\n" + adaptive
    table = accounting.runs.rename(columns={
        "run_id": "run", "config": "config (keys that vary)", "error": "last error line"})
    return (f"{literal(accounting.headline)}. Figures and verdicts use the completed runs; "
            "every run of the folder is listed here by state, with the last error line of "
            "each one that did not complete (`perceiver-ablate status` tells more).\n\n"
            + markdown_table(table.replace("", "-")) + adaptive)


def to_records(accounting: Accounting) -> dict[str, Any]:
    """The section as JSON-ready data (the values as they are, not escaped)."""
    return {"headline": accounting.headline,
            "runs": accounting.runs.to_dict(orient="records"),
            "until_resolved": accounting.until_resolved or None}
