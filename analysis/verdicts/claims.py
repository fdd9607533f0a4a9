"""The paper's ablation claims (docs/paper.md), each tested on a results folder.

A claim names the knob it is about; it applies to any folder where that knob varies (the
shipped paper sweeps, the demo, a user's own sweep), so its comparison is between levels
present in the results, said in the table. Each comparison is judged by the report's one
Judge (analysis/verdicts/judge.py): the same interval, at the same family-wise level, as the
effects table's row for the same runs. The verdict is `confirmed` or `contradicted` when
that interval settles it, else `unresolved at n seeds`; a claim whose knob the folder does
not vary says which shipped sweep measures it. "Alike" claims are equivalence tests
(TOST): confirmed when the interval at twice the alpha lies within ±delta, contradicted
when the interval excludes zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import pandas as pd
from scipy.stats import fisher_exact

from analysis.results import ablation, row_key
from analysis.verdicts import stats
from analysis.verdicts.judge import (
    EQUIVALENT,
    Judge,
    judged_runs,
    level_text,
    searched_jointly,
    side,
    sorted_levels,
    verdict_kind,
)
from analysis.verdicts.stats import interval_text

CONFIRMED, CONTRADICTED = "confirmed", "contradicted"


class Claim(NamedTuple):
    text: str
    paper: str  # where the paper shows it, and its numbers
    sweep: str  # the shipped sweep that measures it
    knob: str
    test: Callable  # (claim, runs, judge) -> (comparison, interval, verdict) | None
    where: tuple = ()  # (column, value) pairs selecting the runs (e.g. one architecture)


def _unresolved(n: int) -> str:
    return f"unresolved at {n} seed{'s' * (n != 1)}"


def _slice(claim: Claim, runs: pd.DataFrame):
    """The runs of the claim's one-knob ablation group holding the most runs."""
    for column, value in claim.where:
        if column not in runs:
            return None
        runs = runs[runs[column] == value]
    found = ablation(runs, [claim.knob])
    if found is None:
        return None
    rows, groups = found
    keys = row_key(rows, groups)
    return rows[keys == keys.value_counts().index[0]]


def _side(rows: pd.DataFrame, knob: str, level):
    return side(rows[row_key(rows, [knob]) == str(level)])


def _levels(rows: pd.DataFrame, knob: str) -> list:
    """The levels with a value to judge (a level whose every run failed has none; the
    effects table counts its failures)."""
    return sorted_levels(rows.loc[rows["_value"].notna(), knob])


def _effect(a, b, rows, claim, judge: Judge) -> tuple[dict, str, str]:
    """b against a: (the judged row, "b vs a", the effect and its interval)."""
    result = judge(_side(rows, claim.knob, a), _side(rows, claim.knob, b))
    return (result, f"{level_text(claim.knob, b)} vs {level_text(claim.knob, a)}",
            interval_text(result["effect"], result["low"], result["high"]))


def _fewest(result: dict) -> int:
    return min(result["n_base"], result["n_level"])


def _directional(a, b, rows, claim, judge: Judge, expect: int):
    """Claim: b beats a (expect=+1) or loses to a (expect=-1)."""
    result, comparison, interval = _effect(a, b, rows, claim, judge)
    low, high = result["low"], result["high"]
    if math.isnan(low):
        return comparison, interval, _unresolved(_fewest(result))
    sign = expect if judge.metric.higher_is_better else -expect
    low, high = sorted((sign * low, sign * high))
    verdict = CONFIRMED if low > 0 else CONTRADICTED if high < 0 else \
        _unresolved(_fewest(result))
    return comparison, interval, verdict


def _ends(claim: Claim, runs: pd.DataFrame):
    """(rows, lowest level, highest level) of the claim's ablation, or None."""
    rows = _slice(claim, runs)
    if rows is None:
        return None
    levels = _levels(rows, claim.knob)
    return rows, levels[0], levels[-1]


def more_helps(claim, runs, judge):
    if (ends := _ends(claim, runs)) is None:
        return None
    rows, low, high = ends
    return _directional(low, high, rows, claim, judge, +1)


def up_to_a_point(claim, runs, judge):
    """More helps, then hurts: the best interior level beats both ends."""
    rows = _slice(claim, runs)
    if rows is None or len(levels := _levels(rows, claim.knob)) < 3:
        return None
    means = {str(v): _side(rows, claim.knob, v).values.mean() for v in levels}
    sign = 1 if judge.metric.higher_is_better else -1
    peak = max(levels[1:-1], key=lambda v: sign * means[str(v)])
    rising = _directional(levels[0], peak, rows, claim, judge, +1)
    falling = _directional(levels[-1], peak, rows, claim, judge, +1)
    verdicts = {rising[2], falling[2]}
    verdict = (CONFIRMED if verdicts == {CONFIRMED} else CONTRADICTED
               if CONTRADICTED in verdicts else falling[2] if falling[2] != CONFIRMED
               else rising[2])
    return (f"{rising[0]}; {falling[0]}", f"{rising[1]}; {falling[1]}", verdict)


def alike(a, b, rows, claim, judge: Judge):
    """Equivalence within ±delta (TOST, the effects table's `equivalent`)."""
    result, comparison, interval = _effect(a, b, rows, claim, judge)
    kind = verdict_kind(result["verdict"])
    if kind == EQUIVALENT:
        verdict = f"{CONFIRMED} (within ±{judge.delta:g})"
    elif not math.isnan(result["low"]) and (result["low"] > 0 or result["high"] < 0):
        verdict = CONTRADICTED
    else:
        verdict = _unresolved(_fewest(result))
    return comparison, interval, verdict


def spacing_alike(claim, runs, judge):
    if (ends := _ends(claim, runs)) is None:
        return None
    rows, linear, log = ends
    return alike(linear, log, rows, claim, judge)


def permuted_same(claim, runs, judge):
    rows = _slice(claim, runs)
    return None if rows is None else alike(False, True, rows, claim, judge)


def permuted_worse(claim, runs, judge):
    rows = _slice(claim, runs)
    return None if rows is None else _directional(False, True, rows, claim, judge, -1)


def sharing_helps(claim, runs, judge):
    rows = _slice(claim, runs)
    return None if rows is None else _directional(False, True, rows, claim, judge, +1)


def nyquist_helps(claim, runs, judge):
    """The native resolution (max_resolution null) against the smallest level."""
    rows = _slice(claim, runs)
    if rows is None:
        return None
    levels = _levels(rows, claim.knob)
    nyquist = [v for v in levels if v is None or (isinstance(v, float) and math.isnan(v))]
    top = nyquist[0] if nyquist else levels[-1]
    low = [v for v in levels if str(v) != str(top)][0]
    return _directional(low, top, rows, claim, judge, +1)


def fourier_beats_learned(claim, runs, judge):
    rows = _slice(claim, runs)
    if rows is None or not {"fourier", "learned"} <= set(rows[claim.knob]):
        return None
    return _directional("learned", "fourier", rows, claim, judge, +1)


def interleaved_helps(claim, runs, judge):
    """At the largest number of cross-attends trained with both placements."""
    knob = "model.num_cross_attends"
    if knob not in runs or claim.knob not in runs:
        return None
    both = runs.groupby(knob)[claim.knob].nunique()
    both = both[both > 1]
    if both.empty:
        return None
    count = both.index.max()
    at = claim._replace(where=((knob, count),))
    rows = _slice(at, runs)
    if rows is None:
        return None
    comparison, interval, verdict = _directional("at_start", "interleaved", rows, claim,
                                                 judge, +1)
    return f"{comparison} at {count:g} cross-attends", interval, verdict


def diverges(claim, runs, judge):
    """Runs at init scale 0.1 diverge more often than at the smallest scale (Fisher's exact
    test); contradicted when the 95% interval of their divergence rate lies below 1/2."""
    del judge
    finished = runs[runs["status"].isin(("completed", "diverged"))]
    if claim.knob not in finished:
        return None
    scales = pd.to_numeric(finished[claim.knob], errors="coerce")
    at, base = finished[scales == 0.1], finished[scales == scales.min()]
    if at.empty or scales.min() >= 0.1:
        return None
    k, n = int((at["status"] == "diverged").sum()), len(at)
    kb, nb = int((base["status"] == "diverged").sum()), len(base)
    low, high = stats.proportion_interval(k, n)
    p = fisher_exact([[k, n - k], [kb, nb - kb]], alternative="greater").pvalue
    verdict = CONFIRMED if p < 0.05 else CONTRADICTED if high < 0.5 else _unresolved(n)
    return (f"diverged runs at 0.1 vs {scales.min():g}: {k}/{n} vs {kb}/{nb}",
            f"rate {k / n:.2f} [{low:.2f}, {high:.2f}]", verdict)


CLAIMS = (
    Claim("more latents help", "Fig. 5", "fig5-latents", "model.num_latents", more_helps),
    Claim("more self-attends help", "Fig. 5", "fig5-self-attends",
          "model.self_attends_per_block", more_helps),
    Claim("more cross-attends help", "Fig. 5", "fig5-cross-attends",
          "model.num_cross_attends", more_helps),
    Claim("channels help up to a point, then overfit", "Fig. 5", "fig5-channels",
          "model.latent_channels", up_to_a_point),
    Claim("init scale 0.1 diverges", "Fig. 6", "fig6-init-scale", "model.init_scale", diverges),
    Claim("more Fourier bands help", "Fig. 6", "fig6-bands", "encoding.num_bands", more_helps),
    Claim("max resolution up to Nyquist helps", "Fig. 6", "fig6-max-resolution",
          "encoding.max_resolution", nyquist_helps),
    Claim("linear and log spacing behave alike", "Fig. 6", "fig6-spacing", "encoding.spacing",
          spacing_alike),
    Claim("Fourier features beat learned position embeddings", "Table 2: 78.0 vs 70.9",
          "table2-position-encoding", "encoding.kind", fourier_beats_learned),
    Claim("8 interleaved cross-attends beat 8 at start", "Table 6: 78.0 vs 73.7",
          "table6-cross-attends", "model.cross_attend_placement", interleaved_helps),
    Claim("weight sharing beats no sharing", "Table 7: 78.0 vs 72.9", "table7-sharing",
          "model.share_latent_blocks", sharing_helps),
    Claim("global attention is permutation invariant", "Table 2: 78.0 / 78.0",
          "table2-permuted", "data.permute", permuted_same, (("model.arch", "perceiver"),)),
    Claim("the CNN is not permutation invariant", "Table 2: ResNet-50 73.5 / 39.4",
          "table2-permuted", "data.permute", permuted_worse, (("model.arch", "resnet"),)),
    Claim("ViT is not permutation invariant", "Table 2: ViT-B-16 76.7 / 61.7",
          "table2-permuted", "data.permute", permuted_worse, (("model.arch", "vit"),)),
)


def paper_claims(frame: pd.DataFrame, judge: Judge) -> pd.DataFrame:
    """One row per claim: the comparison these results allow, its interval and verdict."""
    runs = judged_runs(frame, judge.metric)
    with_diverged = frame.assign(_value=judge.metric.values)
    joint = searched_jointly(runs)
    rows = []
    for claim in CLAIMS:
        source = with_diverged if claim.test is diverges else runs
        result = claim.test(claim, source, judge) if len(source) and not joint else None
        comparison, interval, verdict = result or (
            "-", "-", f"not measured here (experiments/sweeps/{claim.sweep}.yaml)")
        unit = judge.metric.label.split(" (")[-1].rstrip(")")
        rows.append({"claim": claim.text, "paper": claim.paper, "comparison": comparison,
                     f"effect [CI] ({unit})": interval, "verdict": verdict})
    return pd.DataFrame(rows)
