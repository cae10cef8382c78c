"""Calibrate the matcher's confidence on a benchmark run.

The matcher scores an alignment by its *evidence* (−log10 of the chance
probability of its inliers, corrected for the alignments tried) and maps it to
a confidence with a logistic, ``expit((evidence − midpoint) / slope)``. This
script reads a full run's raw outcomes (``benchmarks/results/audio.json``, which
records every query's best candidate even below the threshold), recovers each
candidate's evidence, and proposes the two constants:

* ``midpoint`` and ``slope`` — the maximum-likelihood logistic (Platt
  scaling) over every candidate labelled right (right content and offset) or
  wrong (negatives and wrong answers), so that confidence tracks the share of
  right answers (on this benchmark's mix of positives and negatives);
* the default ``min_confidence`` — the confidence of the smallest evidence
  above which at most ``--max-fp`` of the never-indexed negatives still score,
  plus half a unit of margin, so the default threshold keeps false positives
  within budget whatever the mix.

It prints the proposal and a reliability table (confidence bin → share right).
Run: ``python -m benchmarks.calibrate [--results PATH] [--max-fp 0.004]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import expit, logit

from acr.matching import CONFIDENCE_MIDPOINT, CONFIDENCE_SLOPE

_SATURATED = 1e-12


def evidence_from_confidence(
    confidence: NDArray[np.float64],
    midpoint: float = CONFIDENCE_MIDPOINT,
    slope: float = CONFIDENCE_SLOPE,
) -> NDArray[np.float64]:
    """Invert the run's logistic (confidences of 1.0 come back as very large evidence)."""
    clipped = np.clip(confidence, _SATURATED, 1.0 - _SATURATED)
    evidence: NDArray[np.float64] = midpoint + slope * logit(clipped)
    return evidence


def labelled_evidence(
    queries: list[dict[str, Any]], midpoint: float, slope: float
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]:
    """Each best candidate's evidence and whether it is right; the negatives' evidence."""
    values, right, negatives = [], [], []
    for query in queries:
        confidence = query.get("candidate_confidence")
        if confidence is None:
            continue
        evidence = float(evidence_from_confidence(np.array([confidence]), midpoint, slope)[0])
        values.append(evidence)
        right.append(bool(query.get("candidate_correct")))
        if query["kind"] == "negative":
            negatives.append(evidence)
    return np.array(values), np.array(right), np.array(negatives)


def propose(
    evidence: NDArray[np.float64],
    right: NDArray[np.bool_],
    negatives: NDArray[np.float64],
    max_fp: float,
    n_negative_queries: int,
) -> tuple[float, float, float]:
    """Platt-scale evidence to P(right), then set the threshold from the false-positive budget.

    Returns
    -------
    midpoint, slope : float
        The logistic ``expit((evidence - midpoint) / slope)`` that maximises the
        likelihood of the right/wrong labels.
    min_confidence : float
        The confidence of the lowest evidence that at most ``max_fp`` of the
        negative queries reach (rounded up to a half unit of evidence, plus half
        a unit of margin): the default threshold.
    """

    def loss(params: NDArray[np.float64]) -> float:
        midpoint, log_slope = params
        p = np.clip(expit((evidence - midpoint) / np.exp(log_slope)), 1e-9, 1 - 1e-9)
        return -float(np.sum(np.where(right, np.log(p), np.log1p(-p))))

    fit = minimize(loss, x0=np.array([5.0, 0.5]), method="Nelder-Mead")
    midpoint, slope = float(fit.x[0]), float(np.exp(fit.x[1]))
    allowed = math.floor(max_fp * n_negative_queries)
    ranked = np.sort(negatives)[::-1]
    bar = float(ranked[allowed]) if ranked.size > allowed else float("-inf")
    threshold_evidence = math.ceil(bar * 2.0) / 2.0 + 0.5
    min_confidence = math.ceil(100 * float(expit((threshold_evidence - midpoint) / slope))) / 100
    return midpoint, slope, min_confidence


def reliability(
    evidence: NDArray[np.float64], right: NDArray[np.bool_], midpoint: float, slope: float
) -> list[str]:
    """Markdown rows: confidence bin, candidates, share right."""
    confidence = expit((evidence - midpoint) / slope)
    rows = ["| confidence | candidates | right |", "|---|---:|---:|"]
    edges = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0001]
    for low, high in itertools.pairwise(edges):
        inside = (confidence >= low) & (confidence < high)
        if inside.any():
            share = 100 * right[inside].mean()
            rows.append(f"| {low:.2f}–{min(high, 1.0):.2f} | {int(inside.sum())} | {share:.1f} % |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/audio.json"))
    parser.add_argument(
        "--max-fp", type=float, default=0.004, help="false-positive budget on negatives"
    )
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    queries = results["queries"]
    # The run records the logistic it used; runs before that used 8.0 and 1.5.
    model = results["run"].get("confidence_model", {"midpoint": 8.0, "slope": 1.5})
    evidence, right, negatives = labelled_evidence(queries, model["midpoint"], model["slope"])
    n_negative = sum(1 for q in queries if q["kind"] == "negative")
    midpoint, slope, min_confidence = propose(evidence, right, negatives, args.max_fp, n_negative)
    print(f"candidates: {evidence.size}, right: {int(right.sum())}, negative queries: {n_negative}")
    print(f"negatives' evidence: max {negatives.max():.2f}, p99 {np.percentile(negatives, 99):.2f}")
    print(f"the run used: midpoint {model['midpoint']}, slope {model['slope']}")
    print(
        f"proposed: CONFIDENCE_MIDPOINT = {midpoint:.2f}, CONFIDENCE_SLOPE = {slope:.2f}, "
        f"DEFAULT_MIN_CONFIDENCE = {min_confidence:.2f}"
    )
    print("\n".join(reliability(evidence, right, midpoint, slope)))


if __name__ == "__main__":
    main()
