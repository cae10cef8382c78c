"""Fit the evidence penalty of warped matches on never-indexed music.

``python -m benchmarks.warp_penalty`` cuts clips from the benchmark's
never-indexed tracks at positions drawn with its own seed (not the main
benchmark's), and for each compares the best evidence found with the sample
as it is against the best found under any warp of :data:`acr.search.WARPS`
(before the penalty). The penalty must bring the warped tail down to the
unwarped one, so that searching warps does not add false positives; the
report gives both tails and the false positives each candidate penalty
would let through at the default threshold. Writes
``results/warp_penalty.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from acr import Index
from acr.errors import AcrError
from acr.matching import CONFIDENCE_MIDPOINT, CONFIDENCE_SLOPE, DEFAULT_MIN_CONFIDENCE
from acr.search import WARP_PENALTY, WARPS, Query, best_warp
from acr.signals.audio.warp import IDENTITY
from benchmarks.common import RESULTS_DIR, git_commit, publish, utc_now
from benchmarks.corpus import DEFAULT_CACHE_DIR, decode_mono, ensure_corpus
from benchmarks.degrade import get as get_degradation
from benchmarks.queries import SAMPLE_RATE
from benchmarks.run import full_index

SEED = 4242
LENGTHS_S = (1, 2, 3, 5, 10)
DEGRADATIONS = ("clean", "white5", "mp3_32k", "phone_mic")
CLIPS_PER_CELL = 3
QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)

CANDIDATE_PENALTIES = (float(np.log10(len(WARPS) + 1)), 4.0, 6.0, 8.0, 10.0, 12.0)


def threshold_evidence(min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> float:
    """Evidence at which the confidence reaches ``min_confidence``."""
    return CONFIDENCE_MIDPOINT + CONFIDENCE_SLOPE * float(
        np.log(min_confidence / (1.0 - min_confidence))
    )


def evidences(index: Index, samples: np.ndarray) -> tuple[float, float]:
    """Best raw evidence of a sample as it is and under the best warp (−inf: none)."""
    fingerprints = index.signal.fingerprint_samples(samples, SAMPLE_RATE, query=True)
    records = {r.key: r for r in index.list()}

    def ref_frames(key: int) -> int:
        return round(records[key].duration_s / fingerprints.hop_s)

    query = Query(fingerprints, index.lookup, ref_frames, max(1, len(records)))
    plain = query.align(IDENTITY, query.hits(IDENTITY), top_k=1, min_confidence=0.0)
    warped = best_warp(query)
    return (
        plain[0].evidence if plain else -np.inf,
        warped[2][0].evidence if warped else -np.inf,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warp_penalty", description=__doc__)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    corpus = ensure_corpus(args.cache)
    index_dir = full_index(args.cache, corpus.references)
    rng = np.random.default_rng(SEED)
    rows: list[tuple[int, str, float, float]] = []
    with Index.open(index_dir, readonly=True) as index:
        for track in corpus.negatives:
            audio = decode_mono(track.path, SAMPLE_RATE)
            seconds = audio.size / SAMPLE_RATE
            for length in LENGTHS_S:
                for name in DEGRADATIONS * CLIPS_PER_CELL:
                    if 2 * length > seconds:
                        continue
                    start = round(rng.uniform(0.0, seconds - length - 0.1) * SAMPLE_RATE)
                    clip = audio[start : start + length * SAMPLE_RATE]
                    degraded = get_degradation(name).apply(clip, SAMPLE_RATE, rng)
                    try:
                        rows.append((length, name, *evidences(index, degraded)))
                    except AcrError:  # a silent stretch: refused before any lookup
                        continue
    # Nothing found counts as no evidence at all.
    plain = np.maximum(np.array([r[2] for r in rows]), 0.0)
    warped = np.maximum(np.array([r[3] for r in rows]), 0.0)
    threshold = threshold_evidence()
    lines = [
        "# Warp penalty (fit on never-indexed music)",
        "",
        f"Produced by `python -m benchmarks.warp_penalty` on "
        f"{utc_now()}, commit `{git_commit() or 'unknown'}`.",
        f"{len(rows)} clips ({', '.join(map(str, LENGTHS_S))} s; {', '.join(DEGRADATIONS)}) "
        f"of the {len(corpus.negatives)} never-indexed tracks, seed {SEED}; "
        f"{len(WARPS)} warps searched. Default threshold: evidence {threshold:.1f}.",
        "",
        "| quantile | evidence as it is | best warped evidence (raw) | difference |",
        "|---:|---:|---:|---:|",
    ]
    for q in QUANTILES:
        a, b = float(np.quantile(plain, q)), float(np.quantile(warped, q))
        lines.append(f"| {q:g} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
    plain_fp = int(np.count_nonzero(plain >= threshold))

    def false_positives(penalty: float) -> int:
        return int(np.count_nonzero(np.maximum(plain, warped - penalty) >= threshold))

    candidates = sorted({*CANDIDATE_PENALTIES, WARP_PENALTY})
    # The knee: the least penalty that no larger candidate improves on.
    floor = min(false_positives(p) for p in candidates)
    fitted = min(p for p in candidates if false_positives(p) == floor)
    lines += [
        "",
        f"Without warps {plain_fp} of {len(rows)} clips cross the default threshold, with "
        f"warps at least {floor} whatever the penalty. Fitted: the least candidate penalty "
        f"that a larger one does not improve on, {fitted:g}; in use: {WARP_PENALTY:g}.",
        "",
        "| penalty | false positives at the default threshold |",
        "|---:|---:|",
    ]
    for penalty in candidates:
        chosen = " (in use)" if penalty == WARP_PENALTY else ""
        lines.append(f"| {penalty:.2f}{chosen} | {false_positives(penalty)} of {len(rows)} |")
    publish(lines, args.out / "warp_penalty.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
