"""What the demo concludes from its trained runs (`perceiver-ablate demo`, `make demo`;
the command, analysis/commands/demo.py, trains experiments/sweeps/demo.yaml first): the
report `perceiver-ablate figures` writes (verdicts first), the cross-attention maps of
the best run, and the verdict table it ends by printing, so the demo concludes what it
can and says what it cannot:

    OUT/index.md        everything below, with captions (write_report's index + the maps)
    OUT/index.html      the same, self-contained
    OUT/verdicts.md|json  effects with intervals, paper claims, importance, seed plan
    OUT/runs/           the sweep's run folders and manifest (`perceiver-ablate status`)
    OUT/*.pdf|png|md|tex, OUT/results.parquet|csv     figures, tables, the results frame
    OUT/attention/      cross-attention maps of the best run

It is idempotent: a run id is its config's hash, so a second demo reuses every finished
run and trains only what is missing (a run cut short resumes from its checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from analysis.markup import literal
from analysis.results import SEED


def best_run(folder: Path, run_ids: set[str]):
    """The completed Perceiver run of the sweep with the highest accuracy (a load_results
    row), or None."""
    from analysis.results import finished, load_results

    runs, _ = finished(load_results(folder))
    runs = runs[runs["run_id"].isin(run_ids) & (runs["status"] == "completed")
                & (runs["model.arch"] == "perceiver") & runs["acc"].notna()]
    return None if runs.empty else runs.loc[runs["acc"].idxmax()]


def attention_section(best, acc_label: str, axes: Sequence[str], written, out: Path) -> str:
    from analysis.results import label

    setting = ", ".join(f"{label(a)}={best[a]}" for a in axes if a != SEED)
    lines = ["## Cross-attention maps of the best run", "",
             f"Run {literal(best['run_id'])} ({literal(setting)}, seed {best[SEED]}): "
             f"{acc_label.removesuffix(' (%)')} {best['acc']:.2f}%. Maps of other runs: "
             f"perceiver-ablate attention {literal(Path(best['run_dir']))}.", ""]
    for name, plot, paths in written:
        png, pdf = (next(p for p in paths if p.suffix == s) for s in (".png", ".pdf"))
        png, pdf = png.relative_to(out), pdf.relative_to(out)
        lines += [f"### {name}", "", plot.caption, "", f"![{name}]({png})", "",
                  f"[PDF]({pdf}) · [PNG]({png})", ""]
    return "\n".join(lines)


def verdict_table(verdicts_json: Path) -> str:
    """The effects table of the report's verdicts.json, short enough for a terminal."""
    import json

    import pandas as pd

    from analysis.results import label
    from analysis.verdicts.stats import interval_text

    judged = json.loads(verdicts_json.read_text())
    effects = pd.DataFrame(judged["effects"])
    if len(effects):  # JSON null (no interval) back to NaN
        effects[["effect", "low", "high"]] = effects[["effect", "low", "high"]].astype(float)
    if effects.empty:
        return "(no one-knob ablation among the runs)"
    rows = [{"knob": label(r.knob), "level vs base": f"{literal(r.level)} vs "
             f"{literal(r.base)}", "seeds": f"{r.n_level} vs {r.n_base}",
             "failed": f"{r.failed_level}/{r.runs_level} vs {r.failed_base}/{r.runs_base}",
             f"effect [{judged['confidence']} CI] (points)": interval_text(r.effect, r.low,
                                                                          r.high),
             "verdict": r.verdict} for r in effects.itertuples(index=False)]
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def conclude(folder: Path, out: Path, run_ids: set[str], axes: Sequence[str],
             images: int, latents: int, log: Callable[[str], None]) -> tuple[Path, str | None]:
    """Report, maps of the best run, verdict table; (index.md, the best run's id or None)."""
    from analysis.report.attention import write_attention
    from analysis.report.index import write_report
    from analysis.results import accuracy, load_results

    best = best_run(folder, run_ids)
    appendix = None
    if best is None:
        log("no run completed: no attention maps (see the runs by state in the index)")
    else:
        log(f"attention maps of the best run {best['run_id']}")
        written = write_attention(best["run_dir"], out / "attention", images=images,
                                  latents=latents)
        _, acc_label = accuracy(load_results(folder))
        appendix = (attention_section(best, acc_label, axes, written, out),
                    [p for _, _, paths in written for p in paths if p.suffix == ".png"])
    index = write_report(folder, out, appendix=appendix)
    log("verdicts (every effect against the base, with the report's family-wise interval; "
        f"{index.with_name('verdicts.md')} has the claims, importance and seed plan):\n"
        + verdict_table(index.with_name("verdicts.json")))
    return index, None if best is None else best["run_id"]
