"""`python benchmarks/crn.py UNCOUPLED_DIR COUPLED_DIR [key=value ...]`: what common
random numbers buy a sweep's comparisons (docs/verdicts.md, "Paired seeds").

The two folders hold the same sweep (by default the demo, experiments/sweeps/demo.yaml)
trained without and with `train.coupled_init=true`, both with the same key=value
overrides. For every config against the sweep's first config (the demo's base) it
prints, per arm: the Pearson correlation over seeds of the two configs' test accuracy
(scipy's, with its 95% interval), and the 95% interval half-width of the effect, paired
by seed (paired t) and unpaired (Welch), so the ratio says how much narrower pairing
makes the interval, and whether coupling raised the correlation that pairing lives on.
The runs must be finished; a missing one is an error.

Results: benchmarks/results/crn.json and crn.md (quoted in docs/verdicts.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from experiments.orchestration.sweeps import SEED_KEY, load_sweep
from experiments.runfolder import RunFolder

HERE = Path(__file__).resolve().parent
METRIC = "test_acc"


def accuracies(folder: Path, sweep: str, overrides: list[str]) -> dict[tuple, dict[int, float]]:
    """{config's params (seed excluded): {seed: test accuracy in points}}."""
    out: dict[tuple, dict[int, float]] = {}
    for point in load_sweep(sweep, overrides).points:
        run_folder = RunFolder.of(folder, point.config)
        path = run_folder.result_file
        if not path.is_file():
            raise SystemExit(f"{path} is missing: finish the sweep in {folder} first")
        result = run_folder.read_result()
        if result.get("status") != "completed":
            raise SystemExit(f"{path}: status {result.get('status')}, not completed")
        config = tuple((k, v) for k, v in point.params.items() if k != SEED_KEY)
        out.setdefault(config, {})[point.params[SEED_KEY]] = 100 * result["final"][METRIC]
    return out


def half_width(interval) -> float:
    return (interval.high - interval.low) / 2


def compare(base: dict[int, float], level: dict[int, float]) -> dict:
    seeds = sorted(set(base) & set(level))
    b, v = np.array([base[s] for s in seeds]), np.array([level[s] for s in seeds])
    pearson = stats.pearsonr(b, v)
    r_interval = pearson.confidence_interval(0.95)
    paired = stats.ttest_rel(v, b).confidence_interval(0.95)
    welch = stats.ttest_ind(v, b, equal_var=False).confidence_interval(0.95)
    return {"seeds": len(seeds), "effect": float(v.mean() - b.mean()),
            "r": float(pearson.statistic), "r_95": [float(r_interval.low), float(r_interval.high)],
            "paired_half_width": half_width(paired), "welch_half_width": half_width(welch),
            "paired_over_welch": half_width(paired) / half_width(welch)}


def label(config: tuple, base: tuple) -> str:
    return ", ".join(f"{k}={v}" for (k, v), (_, b) in zip(config, base, strict=True)
                     if v != b) or "base"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uncoupled", type=Path)
    parser.add_argument("coupled", type=Path)
    parser.add_argument("items", nargs="*", metavar="key=value",
                        help="the overrides both sweeps were run with")
    parser.add_argument("--sweep", default="demo")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    arms = {"uncoupled": accuracies(args.uncoupled, args.sweep, args.items),
            "coupled": accuracies(args.coupled, args.sweep,
                                  [*args.items, "train.coupled_init=true"])}
    rows = []
    for name, arm in arms.items():
        configs = list(arm)
        for config in configs[1:]:
            rows.append({"arm": name, "comparison": f"{label(config, configs[0])} vs base",
                         **compare(arm[configs[0]], arm[config])})
    report = {"sweep": args.sweep, "overrides": args.items, "metric": METRIC, "rows": rows}
    lines = ["| init | comparison | seeds | effect (points) | r [95% CI] | paired t ±"
             " | Welch ± | paired / Welch |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['arm']} | {row['comparison']} | {row['seeds']} | "
                     f"{row['effect']:+.2f} | {row['r']:+.2f} [{row['r_95'][0]:+.2f}, "
                     f"{row['r_95'][1]:+.2f}] | {row['paired_half_width']:.2f} | "
                     f"{row['welch_half_width']:.2f} | {row['paired_over_welch']:.2f} |")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crn.json").write_text(json.dumps(report, indent=1))
    (args.out / "crn.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
