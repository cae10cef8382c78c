"""Streaming benchmark: ``python -m benchmarks.streaming [--quick]``.

Seeded 10 s clips of the benchmark corpus (the same machinery and seed as
``benchmarks.run``), degraded, are fed to :class:`acr.streaming.StreamMatcher`
in fixed chunks as a viewer app would send them. For each clip it records the
audio consumed before the first answer (time to first match), whether that
answer is right, and what the one-shot matcher answers on the first 5 s and on
all 10 s of the same clip. Clips of never-indexed music measure false positives
under the repeated looks, with and without the look correction. Writes
``streaming.md`` and ``streaming.json`` (``streaming-quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from acr import Index
from acr.matching import DEFAULT_MIN_CONFIDENCE
from acr.streaming import LookPlan, StreamMatcher, evidence_from_confidence
from benchmarks import queries as qs
from benchmarks.corpus import DEFAULT_CACHE_DIR, decode_mono, ensure_corpus
from benchmarks.degrade import get as get_degradation
from benchmarks.run import RESULTS_DIR, Judge, build_index, git_commit, machine_info

CLIP_S = 10
"""Clip length: the stream's maximum duration."""
DEGRADATIONS = ("clean", "pink10", "pink5", "phone_mic")
"""Conditions of the positive and the negative clips."""
CHUNK_S = 0.1
"""Audio per message (100 ms)."""


@dataclass(frozen=True)
class Plan:
    name: str
    reference_tracks: int | None
    negative_tracks: int | None
    positive_clips: int
    negative_clips: int


FULL = Plan("full", None, None, positive_clips=122, negative_clips=104)
QUICK = Plan("quick", 12, 4, positive_clips=12, negative_clips=8)


@dataclass(frozen=True)
class StreamOutcome:
    """One streamed clip and the one-shot answers on the same audio."""

    query_id: str
    kind: str
    degradation: str
    answered: bool
    correct: bool
    first_match_s: float | None
    """Audio consumed when the stream answered."""
    confidence: float | None
    looks: int
    max_look_evidence: float
    """Best uncorrected evidence over every look (−inf: no candidate at all)."""
    push_ms: list[float]
    look_ms: list[float]
    oneshot5_evidence: float
    oneshot5_correct: bool
    oneshot10_evidence: float
    oneshot10_correct: bool
    batch_equal: bool | None
    """Stream fingerprints equal the batch ones of the same audio (full streams only)."""
    batch_jaccard: float | None


def _evidence(index: Index, samples: np.ndarray, rate: int) -> tuple[float, str | None, float]:
    best = index.match_samples(samples, rate, top_k=1, min_confidence=0.0).best
    if best is None:
        return -math.inf, None, 0.0
    return evidence_from_confidence(best.confidence), best.content_id, best.offset_s


def run_clip(
    index: Index, query: qs.Query, expected: str | None, judge: Judge, plan: LookPlan
) -> StreamOutcome:
    """Stream one clip, then match its first 5 s and all of it in one shot."""
    rate = query.sample_rate
    matcher = StreamMatcher(index, rate, plan=plan)
    step = round(CHUNK_S * rate)
    push_ms: list[float] = []
    answer = None
    for start in range(0, query.samples.shape[0], step):
        t0 = time.perf_counter()
        answer = matcher.push(query.samples[start : start + step])
        push_ms.append((time.perf_counter() - t0) * 1000.0)
        if answer is not None:
            break
    if answer is None:
        answer = matcher.finish()
    correct = False
    if answer is not None:
        heard = replace(query, length_s=max(1, math.floor(matcher.heard_s)))
        correct = judge.verdict(heard, expected, answer.content_id, answer.offset_s)[1]
    batch_equal: bool | None = None
    jaccard: float | None = None
    if answer is None:  # the whole clip was heard: compare with the batch fingerprints
        ours = matcher.fingerprints()
        batch = index.signal.fingerprint_samples(query.samples, rate, query=True)
        batch_equal = bool(
            np.array_equal(ours.codes, batch.codes) and np.array_equal(ours.frames, batch.frames)
        )
        a = set(zip(ours.codes.tolist(), ours.frames.tolist(), strict=True))
        b = set(zip(batch.codes.tolist(), batch.frames.tolist(), strict=True))
        jaccard = len(a & b) / max(1, len(a | b))
    oneshot: list[tuple[float, bool]] = []
    for seconds in (5, CLIP_S):
        evidence, content_id, offset = _evidence(index, query.samples[: seconds * rate], rate)
        cut = replace(query, length_s=seconds)
        right = judge.verdict(cut, expected, content_id, offset)[1] if content_id else False
        oneshot.append((evidence, right))
    return StreamOutcome(
        query_id=query.query_id,
        kind=query.kind,
        degradation=query.degradation,
        answered=answer is not None,
        correct=correct,
        first_match_s=matcher.heard_s if answer is not None else None,
        confidence=answer.confidence if answer is not None else None,
        looks=len(matcher.looks),
        max_look_evidence=max((look.best_evidence for look in matcher.looks), default=-math.inf),
        push_ms=push_ms,
        look_ms=[look.elapsed_ms for look in matcher.looks],
        oneshot5_evidence=oneshot[0][0],
        oneshot5_correct=oneshot[0][1],
        oneshot10_evidence=oneshot[1][0],
        oneshot10_correct=oneshot[1][1],
        batch_equal=batch_equal,
        batch_jaccard=jaccard,
    )


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else float("nan")


def _quantile(values: Sequence[float], q: float) -> float:
    return float(np.quantile(values, q)) if len(values) else float("nan")


def summarize(outcomes: Sequence[StreamOutcome], plan: LookPlan) -> dict[str, Any]:
    """Per-degradation positives, negatives under several thresholds, costs."""
    threshold = evidence_from_confidence(DEFAULT_MIN_CONFIDENCE)
    positives: dict[str, dict[str, float]] = {}
    for name in [*DEGRADATIONS, "all"]:
        rows = [o for o in outcomes if o.kind == "positive" and name in ("all", o.degradation)]
        answered = [o for o in rows if o.answered]
        times = [o.first_match_s for o in answered if o.first_match_s is not None]
        n = len(rows)
        positives[name] = {
            "n": n,
            "answered_pct": _pct(len(answered), n),
            "correct_pct": _pct(sum(o.correct for o in rows), n),
            "wrong_pct": _pct(sum(o.answered and not o.correct for o in rows), n),
            "precision_pct": _pct(sum(o.correct for o in answered), len(answered)),
            "ttfm_median_s": _quantile(times, 0.5),
            "ttfm_p90_s": _quantile(times, 0.9),
            "by_1s_pct": _pct(sum(t <= 1.0 + 1e-9 for t in times), n),
            "by_2s_pct": _pct(sum(t <= 2.0 + 1e-9 for t in times), n),
            "by_5s_pct": _pct(sum(t <= 5.0 + 1e-9 for t in times), n),
            "oneshot5_correct_pct": _pct(
                sum(o.oneshot5_correct and o.oneshot5_evidence >= threshold for o in rows), n
            ),
            "oneshot10_correct_pct": _pct(
                sum(o.oneshot10_correct and o.oneshot10_evidence >= threshold for o in rows), n
            ),
        }
    negatives = [o for o in outcomes if o.kind == "negative"]
    n_neg = len(negatives)
    sweep = []
    for confidence in (0.7, 0.8, 0.9):
        base = evidence_from_confidence(confidence)
        sweep.append(
            {
                "threshold": confidence,
                "evidence": base,
                "stream_corrected": sum(
                    o.max_look_evidence >= base + plan.penalty for o in negatives
                ),
                "stream_uncorrected": sum(o.max_look_evidence >= base for o in negatives),
                "oneshot5": sum(o.oneshot5_evidence >= base for o in negatives),
                "oneshot10": sum(o.oneshot10_evidence >= base for o in negatives),
            }
        )
    finite = [o.max_look_evidence for o in negatives if math.isfinite(o.max_look_evidence)]
    one5 = [o.oneshot5_evidence for o in negatives if math.isfinite(o.oneshot5_evidence)]
    one10 = [o.oneshot10_evidence for o in negatives if math.isfinite(o.oneshot10_evidence)]
    full_streams = [o for o in outcomes if o.batch_equal is not None]
    pushes = [ms for o in outcomes for ms in o.push_ms]
    looks = [ms for o in outcomes for ms in o.look_ms]
    return {
        "positives": positives,
        "negatives": {
            "n": n_neg,
            "false_positives": sum(o.answered for o in negatives),
            "false_positive_pct": _pct(sum(o.answered for o in negatives), n_neg),
            "sweep": sweep,
            "max_look_evidence_p99": _quantile(finite, 0.99),
            "max_look_evidence_max": max(finite, default=float("nan")),
            "oneshot5_evidence_p99": _quantile(one5, 0.99),
            "oneshot5_evidence_max": max(one5, default=float("nan")),
            "oneshot10_evidence_p99": _quantile(one10, 0.99),
            "oneshot10_evidence_max": max(one10, default=float("nan")),
            "matched": [o.query_id for o in negatives if o.answered],
        },
        "fingerprints": {
            "full_streams": len(full_streams),
            "equal_to_batch": sum(bool(o.batch_equal) for o in full_streams),
            "mean_jaccard": float(np.mean([o.batch_jaccard or 0.0 for o in full_streams]))
            if full_streams
            else float("nan"),
        },
        "cost": {
            "push_ms_p50": _quantile(pushes, 0.5),
            "push_ms_p95": _quantile(pushes, 0.95),
            "look_ms_p50": _quantile(looks, 0.5),
            "look_ms_p95": _quantile(looks, 0.95),
            "looks_per_negative_stream": float(np.mean([o.looks for o in negatives]))
            if negatives
            else float("nan"),
        },
    }


def render(summary: dict[str, Any], run: dict[str, Any]) -> str:
    look = run["look_plan"]
    lines = [
        f"# Streaming benchmark ({run['mode']} run)",
        "",
        f"Produced by `{run['command']}` on {run['date']}.",
        "",
        f"- Commit: `{run['commit']}`; seed {run['seed']}; machine: {run['machine']}",
        f"- References: {run['references']} tracks indexed; negatives: {run['negatives']} "
        "never-indexed tracks",
        f"- Clips: {CLIP_S} s, cut at {qs.SAMPLE_RATE} Hz, streamed in "
        f"{CHUNK_S * 1000:g} ms chunks; looks at {look['first_s']:g} s then every "
        f"{look['interval_s']:g} s up to {look['max_s']:g} s ({look['looks']} planned looks, "
        f"threshold raised by log10({look['looks']}) = {look['penalty']:.2f} evidence units)",
        f"- Default threshold: confidence {DEFAULT_MIN_CONFIDENCE:g}; "
        f"wall time {run['wall_s']:.0f} s",
        "",
        "## Positives: time to first match and accuracy at the first answer",
        "",
        "Time to first match is audio consumed (seconds) when the stream answered, over "
        "answered clips. Right: right content and offset within 0.5 s. One-shot columns: "
        "`Index.match_samples` on the clip's first 5 s / all 10 s at the default threshold.",
        "",
        "| degradation | n | answered % | right % | wrong % | median s | p90 s | "
        "by 1 s % | by 2 s % | by 5 s % | one-shot 5 s right % | one-shot 10 s right % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in summary["positives"].items():
        lines.append(
            f"| {name} | {row['n']} | {row['answered_pct']:.1f} | {row['correct_pct']:.1f} | "
            f"{row['wrong_pct']:.1f} | {row['ttfm_median_s']:.2f} | {row['ttfm_p90_s']:.2f} | "
            f"{row['by_1s_pct']:.1f} | {row['by_2s_pct']:.1f} | {row['by_5s_pct']:.1f} | "
            f"{row['oneshot5_correct_pct']:.1f} | {row['oneshot10_correct_pct']:.1f} |"
        )
    neg = summary["negatives"]
    lines += [
        "",
        "## Negatives: false positives under repeated looks",
        "",
        f"{neg['n']} streams of never-indexed music ({', '.join(DEGRADATIONS)}). A stream "
        "counts as a false positive if any look's best candidate reaches the threshold. "
        "'Corrected' is what the stream does (threshold + log10 of the planned looks); "
        "'uncorrected' applies the one-shot threshold at every look.",
        "",
        "| threshold | stream, corrected | stream, uncorrected | one-shot 5 s | one-shot 10 s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in neg["sweep"]:
        lines.append(
            f"| {row['threshold']:g} (evidence {row['evidence']:.1f}) | "
            f"{row['stream_corrected']} ({_pct(row['stream_corrected'], neg['n']):.2f} %) | "
            f"{row['stream_uncorrected']} ({_pct(row['stream_uncorrected'], neg['n']):.2f} %) | "
            f"{row['oneshot5']} ({_pct(row['oneshot5'], neg['n']):.2f} %) | "
            f"{row['oneshot10']} ({_pct(row['oneshot10'], neg['n']):.2f} %) |"
        )
    fp = summary["fingerprints"]
    cost = summary["cost"]
    lines += [
        "",
        f"Best evidence of a negative: over all looks of a stream p99 "
        f"{neg['max_look_evidence_p99']:.1f}, max {neg['max_look_evidence_max']:.1f}; "
        f"one-shot 5 s p99 {neg['oneshot5_evidence_p99']:.1f}, max "
        f"{neg['oneshot5_evidence_max']:.1f}; one-shot 10 s p99 "
        f"{neg['oneshot10_evidence_p99']:.1f}, max {neg['oneshot10_evidence_max']:.1f}.",
        f"Matched negatives: {', '.join(neg['matched']) or 'none'}.",
        "",
        "## Fingerprints and cost",
        "",
        f"- Streams heard to the end whose incremental fingerprints equal the batch "
        f"fingerprints of the same audio: {fp['equal_to_batch']} of {fp['full_streams']} "
        f"(mean Jaccard of the code sets {fp['mean_jaccard']:.4f}).",
        f"- Server work per 100 ms chunk (fingerprinting, and a lookup when one is due): "
        f"p50 {cost['push_ms_p50']:.2f} ms, p95 {cost['push_ms_p95']:.2f} ms; per look "
        f"(lookup and alignment of everything heard): p50 {cost['look_ms_p50']:.2f} ms, "
        f"p95 {cost['look_ms_p95']:.2f} ms; {cost['looks_per_negative_stream']:.1f} looks "
        "per unanswered stream.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.streaming``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: 12 tracks")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR, help="corpus cache")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    look_plan = LookPlan(max_s=float(CLIP_S))
    started = time.perf_counter()
    machine = machine_info()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    corpus = ensure_corpus(args.cache)
    refs = [
        corpus.references[i]
        for i in qs.select_tracks(plan.reference_tracks, len(corpus.references))
    ]
    negs = [
        corpus.negatives[i] for i in qs.select_tracks(plan.negative_tracks, len(corpus.negatives))
    ]
    log(f"{len(refs)} references, {len(negs)} negatives; building the index")
    index_dir = args.cache.resolve() / f"index-streaming-{plan.name}"
    content_ids, _, _ = build_index(index_dir, refs)
    outcomes: list[StreamOutcome] = []
    with Index.open(index_dir, readonly=True) as index:
        judge = Judge(refs, content_ids)
        for kind, tracks, count in (
            ("positive", refs, plan.positive_clips),
            ("negative", negs, plan.negative_clips),
        ):
            clips = qs.assign_clips(
                [t.duration_s for t in tracks], {CLIP_S: count}, kind, DEGRADATIONS
            )
            for track_index, track_clips in qs.clips_by_track(clips).items():
                audio = decode_mono(tracks[track_index].path, qs.SAMPLE_RATE)
                judge.source = audio if kind == "positive" else None
                expected = content_ids[track_index] if kind == "positive" else None
                for query in qs.queries_for_track(audio, qs.SAMPLE_RATE, track_clips, DEGRADATIONS):
                    outcomes.append(run_clip(index, query, expected, judge, look_plan))
            log(f"{kind}s done: {sum(o.kind == kind for o in outcomes)} streams")
    summary = summarize(outcomes, look_plan)
    command = "python -m benchmarks.streaming" + (" --quick" if args.quick else "")
    run: dict[str, Any] = {
        "mode": plan.name,
        "command": command,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": f"{machine['cpu_model']}, {machine['usable_cores']} usable cores",
        "seed": qs.SEED,
        "references": len(refs),
        "negatives": len(negs),
        "plan": asdict(plan),
        "chunk_s": CHUNK_S,
        "clip_s": CLIP_S,
        "degradations": {n: get_degradation(n).description for n in DEGRADATIONS},
        "look_plan": {**asdict(look_plan), "looks": look_plan.looks, "penalty": look_plan.penalty},
        "default_min_confidence": DEFAULT_MIN_CONFIDENCE,
        "wall_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "streaming" if plan.name == "full" else f"streaming-{plan.name}"
    markdown = render(summary, run)
    (args.out / f"{stem}.md").write_text(markdown)
    payload = {
        "run": run,
        "summary": summary,
        "streams": [
            {k: v for k, v in asdict(o).items() if k not in ("push_ms", "look_ms")}
            | {"push_ms_max": max(o.push_ms, default=0.0)}
            for o in outcomes
        ],
    }
    text = json.dumps(payload, indent=1, default=lambda x: None)
    (args.out / f"{stem}.json").write_text(text.replace("-Infinity", "null").replace("NaN", "null"))
    print(markdown)
    log(f"wrote {args.out / stem}.md and .json")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
