"""Calibrate the video matcher's confidence on held-out material, not the benchmark's negatives.

``python -m benchmarks.video.calibrate [--cache DIR] [--max-fp 0.001]``

The matcher scores an alignment by its *significance*, ``-log10`` of the
chance that some wrong alignment of the catalogue gathers as much evidence
(:mod:`acr.video_matching`), and maps it to a confidence with a logistic,
``expit((significance - midpoint) / slope)``. The chance model counts the
pictures of one shot as partly dependent, but it is still a model: this
script measures how significant wrong answers really get and proposes the
two constants, as ``benchmarks/calibrate.py`` does for audio:

* ``midpoint`` and ``slope``: the maximum-likelihood logistic (Platt
  scaling) over the best candidate of every calibration query, labelled right
  (right content within 0.5 s) or wrong (a negative, or another content);
* the false-positive budget: the significance above which at most
  ``--max-fp`` of the calibration negatives score, plus half a unit of
  margin. When the fitted logistic puts the default ``min_confidence`` below
  it, the midpoint is raised until they meet.

Data (all cached under ``--cache``; nothing here is in the benchmark's query set):

* the benchmark's references, rendered and indexed as the benchmark does;
* **negatives**: six programmes of 120 s rendered by the benchmark's scene
  generator from its held-out material under their own names
  (``devneg-00`` …), so their shots, captions, slates and grades are new
  draws: the benchmark's negatives (``unseen-*``) are never rendered, cut or
  matched here. 48 clips of 5 s, each under the benchmark's negative
  conditions;
* **positives**: 30 clips of 5 s from the references at clip slots 200-229
  (the benchmark's are 0-49: other starts), each under every degradation.

Each file is hashed with ``hash_video`` and matched at 1, 2 and 5 s with no
threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import expit, logit

from acr.index.video import VideoIndex
from acr.signals.video import hash_video
from acr.video_matching import CONFIDENCE_MIDPOINT, CONFIDENCE_SLOPE, DEFAULT_MIN_CONFIDENCE
from benchmarks.corpus import DEFAULT_CACHE_DIR, fetch_package
from benchmarks.report import OFFSET_TOLERANCE_S
from benchmarks.video import queries as qs
from benchmarks.video.corpus import (
    DESKTOP_BASE,
    FPS,
    HEIGHT,
    WIDTH,
    Item,
    ensure_video_corpus,
    load_material,
    programme_shots,
    render_item,
)
from benchmarks.video.degrade import REGISTRY, get
from benchmarks.video.run import build_index, first_seconds
from benchmarks.video.scenes import Renderer, low_information_spans, sequence_duration

NEGATIVE_PROGRAMMES = 6
NEGATIVE_PROGRAMME_S = 120.0
NEGATIVE_CLIPS = 48
POSITIVE_CLIPS = 30
POSITIVE_FIRST_SLOT = 200
"""The benchmark's positive clips use slots 0-49; these start elsewhere."""
NEGATIVE_FIRST_SLOT = 300

_SATURATED = 1e-12


@dataclass(frozen=True)
class Answer:
    """The best candidate of one calibration query."""

    query: str
    length_s: int
    positive: bool
    significance: float
    right: bool


def calibration_negatives(cache: Path) -> list[Item]:
    """Render (or reuse) the held-out programmes the negatives are cut from."""
    _, art_root, _ = fetch_package(DESKTOP_BASE, cache)
    held_out = load_material(art_root, negative=True)
    renderer = Renderer(held_out.images, held_out.videos, (WIDTH, HEIGHT))
    folder = cache / "video" / "calibration" / "programmes"
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for k in range(NEGATIVE_PROGRAMMES):
        name = f"devneg-{k:02d}"  # the names the constants were fitted with
        shots = programme_shots(name, held_out, NEGATIVE_PROGRAMME_S)
        path = folder / f"{name}.mp4"
        if not path.is_file():
            render_item(path, shots, renderer, FPS)
        items.append(
            Item(
                name=name,
                kind="negative",
                path=path,
                duration_s=int(sequence_duration(shots) * FPS + 1e-6) / FPS,
                low_information=tuple(low_information_spans(shots)),
                sibling=None,
            )
        )
    return items


def write_queries(
    cache: Path, references: Sequence[Item], hosts: Sequence[Item], negatives: Sequence[Item]
) -> dict[str, dict[str, object]]:
    """Cut, degrade and encode every calibration query once; their ground truth by file stem."""
    folder = cache / "video" / "calibration" / "queries"
    folder.mkdir(parents=True, exist_ok=True)
    truth_path = folder / "truth.json"
    truth: dict[str, dict[str, object]] = (
        json.loads(truth_path.read_text()) if truth_path.is_file() else {}
    )
    specs = [
        qs.ClipSpec("unseen", k % len(negatives), NEGATIVE_FIRST_SLOT + k)
        for k in range(NEGATIVE_CLIPS)
    ] + [
        qs.ClipSpec("positive", k % len(references), POSITIVE_FIRST_SLOT + k)
        for k in range(POSITIVE_CLIPS)
    ]
    for spec in specs:
        positive = spec.kind == "positive"
        conditions = [d.name for d in REGISTRY] if positive else list(qs.NEGATIVE_DEGRADATIONS)
        prefix = f"{'p' if positive else 'n'}-{spec.slot}"
        if all(f"{prefix}-{name}" in truth for name in conditions):
            continue
        clean, start = qs.source_clip(spec, references, negatives)
        host = qs.host_clip(hosts, spec) if positive else clean
        source = (references if positive else negatives)[spec.item].name
        for name in conditions:
            clip = qs.degrade(clean, get(name), spec, host)
            qs.write_query(folder / f"{prefix}-{name}.mp4", clip, get(name))
            truth[f"{prefix}-{name}"] = {"positive": positive, "item": source, "start_s": start}
        truth_path.write_text(json.dumps(truth))
    return truth


def answers(index: VideoIndex, folder: Path, truth: dict[str, dict[str, object]]) -> list[Answer]:
    """Match every calibration query with no threshold and label its best candidate."""
    found = []
    for stem, facts in sorted(truth.items()):
        full = hash_video(folder / f"{stem}.mp4")
        for length in qs.LENGTHS_S:
            hashes = full if length >= qs.CLIP_S else first_seconds(full, length)
            best = index.match_hashes(hashes, min_confidence=0.0).best
            if best is None:  # no alignment with enough evidence: never reported
                found.append(Answer(stem, length, bool(facts["positive"]), -np.inf, False))
                continue
            right = bool(
                facts["positive"]
                and best.title == facts["item"]
                and abs(best.offset_s - float(str(facts["start_s"]))) <= OFFSET_TOLERANCE_S
            )
            found.append(
                Answer(stem, length, bool(facts["positive"]), _significance(best.confidence), right)
            )
    return found


def _significance(confidence: float) -> float:
    """Invert the matcher's logistic (saturated confidences come back as large values)."""
    clipped = float(np.clip(confidence, _SATURATED, 1.0 - _SATURATED))
    return float(CONFIDENCE_MIDPOINT + CONFIDENCE_SLOPE * logit(clipped))


def fit_logistic(values: NDArray[np.float64], right: NDArray[np.bool_]) -> tuple[float, float]:
    """Maximum-likelihood ``(midpoint, slope)`` of ``P(right) = expit((x - midpoint) / slope)``."""

    def loss(params: NDArray[np.float64]) -> float:
        midpoint, log_slope = params
        p = np.clip(expit((values - midpoint) / np.exp(log_slope)), 1e-12, 1 - 1e-12)
        return float(-np.sum(np.where(right, np.log(p), np.log1p(-p))))

    fitted = minimize(loss, np.array([CONFIDENCE_MIDPOINT, np.log(CONFIDENCE_SLOPE)]))
    return float(fitted.x[0]), float(np.exp(fitted.x[1]))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.video.calibrate``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.video.calibrate", description=__doc__
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--max-fp", type=float, default=0.001, help="negatives' budget")
    args = parser.parse_args(argv)
    cache = args.cache.resolve()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    corpus = ensure_video_corpus(cache, qs.FULL_PLAN.catalogue, log)
    negatives = calibration_negatives(cache)
    truth = write_queries(cache, corpus.references, corpus.negatives, negatives)
    index_dir = cache / "video" / "calibration" / "index"
    if not (index_dir / "catalogue.sqlite").is_file():
        build_index(index_dir, corpus.references, log)
    with VideoIndex.open(index_dir, readonly=True) as index:
        found = answers(index, cache / "video" / "calibration" / "queries", truth)
    values = np.array([a.significance for a in found])
    right = np.array([a.right for a in found])
    negative = np.array([not a.positive for a in found])
    answered = np.isfinite(values)
    midpoint, slope = fit_logistic(values[answered], right[answered])
    # The budget: the (floor(max_fp * n) + 1)-th most significant negative, plus margin.
    ranked = np.sort(values[negative])[::-1]
    allowed = int(args.max_fp * ranked.size)
    budget = float(ranked[allowed]) + 0.5 if allowed < ranked.size else -np.inf
    fitted_threshold = midpoint + slope * float(logit(DEFAULT_MIN_CONFIDENCE))
    raised = max(midpoint, budget - slope * float(logit(DEFAULT_MIN_CONFIDENCE)))
    print(f"{len(found)} answers ({int(right.sum())} right, {int(negative.sum())} negatives)")
    print(f"fitted: midpoint {midpoint:.2f}, slope {slope:.2f}")
    print(
        f"default threshold {DEFAULT_MIN_CONFIDENCE} = significance {fitted_threshold:.2f}; "
        f"budget {args.max_fp:.2%} of {ranked.size} negatives: significance {budget:.2f}"
    )
    print(f"CONFIDENCE_MIDPOINT = {raised:.2f}, CONFIDENCE_SLOPE = {slope:.2f}")
    values = np.where(answered, values, -np.inf)
    print("| confidence | answers | right | negatives |")
    print("|---|---:|---:|---:|")
    confidence = expit((values - raised) / slope)
    for low, high in zip(np.linspace(0, 0.9, 10), np.linspace(0.1, 1.0, 10), strict=True):
        inside = (confidence >= low) & ((confidence < high) | (high == 1.0))
        print(
            f"| {low:.1f}-{high:.1f} | {int(inside.sum())} | {int((inside & right).sum())} | "
            f"{int((inside & negative).sum())} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
