"""Which samples to fingerprint a second time, half a hop in.

``python -m benchmarks.short_samples`` draws its own clips from the benchmark
corpus (seed :data:`SEED`, not the main benchmark's): 1 s and 2 s excerpts of
the references in eight conditions and of the never-indexed tracks in the
negatives' eight, and matches each with the second pass for no sample, for
samples up to 1.5 s (1 s ones) and for samples up to 2.5 s (2 s ones too)
(:data:`acr.signals.audio.SHORT_SAMPLE_S`). A policy is worth what it gets
above the strongest confidence its negatives reach (the threshold that keeps
them all out), per length, since the extra codes change evidence for right
and wrong answers alike; answers are judged as the main benchmark judges them
(:class:`benchmarks.run.Judge`). Writes ``results/short_samples.md``.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import acr.signals.audio as audio
import benchmarks.queries as qs
from acr import Index
from acr.errors import AcrError
from acr.matching import DEFAULT_MIN_CONFIDENCE
from benchmarks.common import RESULTS_DIR, git_commit, publish, utc_now
from benchmarks.corpus import DEFAULT_CACHE_DIR, Track, decode_mono, ensure_corpus
from benchmarks.run import Judge, full_index

SEED = 4242
POLICIES = {"never": 0.0, "up to 1.5 s": 1.5, "up to 2.5 s": 2.5}
"""Longest sample fingerprinted twice, by policy name."""
POSITIVE: dict[int, tuple[str, ...]] = {
    1: ("clean", "white10", "pink10", "mp3_32k", "opus_32k", "phone_mic", "speed+5", "reverb"),
    2: ("clean", "white5", "pink5", "reverb", "phone_mic", "speed+5", "mp3_32k", "telephone"),
}
NEGATIVE: dict[int, tuple[str, ...]] = {1: qs.NEGATIVE_DEGRADATIONS, 2: qs.NEGATIVE_DEGRADATIONS}

Outcome = tuple[float, bool]
"""Confidence of the best answer (0 when nothing aligned) and whether it is right."""


def judged(index: Index, judge: Judge, query: qs.Query, expected_id: str | None) -> Outcome:
    """The best answer's confidence and :class:`~benchmarks.run.Judge`'s verdict on it."""
    try:
        found = index.match_samples(query.samples, qs.SAMPLE_RATE, min_confidence=0.0).best
    except AcrError:  # a silent stretch: refused before any lookup
        return 0.0, False
    if found is None:
        return 0.0, False
    _, right, _, _ = judge.verdict(query, expected_id, found.content_id, found.offset_s)
    return found.confidence, right


def outcomes(
    index: Index, judge: Judge, tracks: Sequence[Track], kind: str, plan: dict[int, tuple[str, ...]]
) -> list[tuple[int, str, dict[str, Outcome]]]:
    """Every clip of ``plan`` matched under every policy: (length, condition, outcomes)."""
    ids = {name: cid for cid, name in judge.names.items()}
    rows: list[tuple[int, str, dict[str, Outcome]]] = []
    in_use = audio.SHORT_SAMPLE_S
    try:
        for length, conditions in plan.items():
            count = len(tracks) * (1 if kind == "positive" else 2)
            durations = [t.duration_s for t in tracks]
            specs = qs.assign_clips(durations, {length: count}, kind, conditions)
            for number, clips in qs.clips_by_track(specs).items():
                track = tracks[number]
                judge.source = decode_mono(track.path, qs.SAMPLE_RATE)
                expected = ids.get(track.name) if kind == "positive" else None
                for query in qs.queries_for_track(
                    judge.source, qs.SAMPLE_RATE, clips, conditions, SEED
                ):
                    by_policy: dict[str, Outcome] = {}
                    for name, longest in POLICIES.items():
                        audio.SHORT_SAMPLE_S = longest
                        by_policy[name] = judged(index, judge, query, expected)
                    rows.append((length, query.degradation, by_policy))
    finally:
        audio.SHORT_SAMPLE_S = in_use
    return rows


def report(
    positives: list[tuple[int, str, dict[str, Outcome]]],
    negatives: list[tuple[int, str, dict[str, Outcome]]],
    corpus_note: str,
) -> list[str]:
    """Markdown: per length and policy, right answers above the negatives' strongest."""
    lines = [
        "# Short samples: a second fingerprinting pass half a hop in",
        "",
        f"Produced by `python -m benchmarks.short_samples` on "
        f"{utc_now()}, commit `{git_commit() or 'unknown'}`.",
        f"Seed {SEED} (not the main benchmark's); {corpus_note}. A cell is the share of right "
        "answers whose confidence is above the strongest one reached by that length's "
        "negatives under the same policy (which keeps every negative out). In use: "
        f"up to {audio.SHORT_SAMPLE_S:g} s (`acr.signals.audio.SHORT_SAMPLE_S`).",
        "",
    ]
    for length in sorted({row[0] for row in positives}):
        conditions = sorted({row[1] for row in positives if row[0] == length})
        lines += [
            f"## {length} s ({sum(1 for r in positives if r[0] == length)} positive, "
            f"{sum(1 for r in negatives if r[0] == length)} negative queries)",
            "",
            f"| second pass | negatives ≥ {DEFAULT_MIN_CONFIDENCE:g} | strongest negative | "
            + " | ".join(conditions)
            + " | all |",
            "|---|---:|---:|" + "---:|" * (len(conditions) + 1),
        ]
        for name in POLICIES:
            negative = [r[2][name][0] for r in negatives if r[0] == length]
            ceiling = max(negative, default=0.0)
            passing = sum(c >= DEFAULT_MIN_CONFIDENCE for c in negative)
            cells: dict[str, list[bool]] = defaultdict(list)
            for row_length, condition, by_policy in positives:
                if row_length == length:
                    confidence, right = by_policy[name]
                    cells[condition].append(right and confidence > ceiling)
            every = [v for c in conditions for v in cells[c]]
            shares = " | ".join(f"{100 * np.mean(cells[c]):.1f}" for c in conditions)
            lines.append(
                f"| {name} | {passing} | {ceiling:.3f} | {shares} | {sum(every)} of {len(every)} |"
            )
        lines.append("")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.short_samples", description=__doc__)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    corpus = ensure_corpus(args.cache)
    index_dir = full_index(args.cache, corpus.references)
    with Index.open(index_dir, readonly=True) as index:
        by_name = {track.name: track for track in corpus.references}
        records = index.list()
        judge = Judge([by_name[r.title] for r in records], [r.content_id for r in records])
        negatives = outcomes(index, judge, corpus.negatives, "negative", NEGATIVE)
        positives = outcomes(index, judge, corpus.references, "positive", POSITIVE)
    note = f"{len(corpus.references)} indexed tracks, {len(corpus.negatives)} never-indexed ones"
    lines = report(positives, negatives, note)
    publish(lines, args.out / "short_samples.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
