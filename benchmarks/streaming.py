"""Streaming benchmark: ``python -m benchmarks.streaming [--quick]``.

Seeded 10 s clips of the benchmark corpus (the same machinery and seed as
``benchmarks.run``), degraded, are fed to :class:`acr.streaming.StreamMatcher`
in fixed chunks as a viewer app would send them. For each clip it records the
audio consumed before the first answer (time to first match), whether that
answer is right, and what the one-shot matcher answers on the first 5 s and on
all 10 s of the same clip. Clips of never-indexed music measure false positives
under the repeated looks, with and without the look correction. Clips played
faster, slower, time-stretched or pitch-shifted (``benchmarks.degrade``) measure
the warps of the looks (:data:`acr.streaming.WARP_INTERVAL_S`): how soon they
answer and how well the answer's speed and pitch factors are measured. Writes
``streaming.md`` and ``streaming.json`` (``streaming-quick.*`` with ``--quick``).

An answer is judged as the one-shot benchmark judges a clip of the same audio:
right content and offset, or a verbatim copy of the audio heard (a repeat in
looping music, a passage another reference shares), the audio heard being the
stream up to its answer (``benchmarks.run.Judge``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from acr import Index
from acr.kernels import compile_kernels
from acr.matching import DEFAULT_MIN_CONFIDENCE
from acr.streaming import WARP_INTERVAL_S, LookPlan, StreamMatcher, evidence_from_confidence
from benchmarks import common
from benchmarks import queries as qs
from benchmarks.corpus import decode_mono, ensure_corpus
from benchmarks.degrade import get as get_degradation
from benchmarks.run import Judge, build_index

CLIP_S = 10
"""Clip length: the stream's maximum duration."""
DEGRADATIONS = ("clean", "pink10", "pink5", "phone_mic")
"""Conditions of the negative clips, and the first of the positive ones."""
TIMING_DEGRADATIONS = ("speed+5", "speed-5", "tempo+5", "tempo-5", "pitch+1", "pitch-1")
"""Conditions of the positive clips beyond the matcher's own tolerance: warps needed."""
CHUNK_S = 0.1
"""Audio per message (100 ms)."""


@dataclass(frozen=True)
class Plan:
    name: str
    reference_tracks: int | None
    negative_tracks: int | None
    positive_clips: int
    negative_clips: int
    timing_clips: int
    """Positive clips that also get :data:`TIMING_DEGRADATIONS` (the first ones dealt)."""


FULL = Plan("full", None, None, positive_clips=61, negative_clips=52, timing_clips=30)
"""Half the clips of the run before the warps (122 positive, 104 negative): with six
more conditions and warped looks the full counts took over 40 minutes on a shared
two-core machine."""
QUICK = Plan("quick", 12, 4, positive_clips=12, negative_clips=8, timing_clips=12)


@dataclass(frozen=True)
class StreamOutcome:
    """One streamed clip and the one-shot answers on the same audio."""

    query_id: str
    kind: str
    degradation: str
    answered: bool
    content_ok: bool
    """The answer names the source track (or one holding the audio heard verbatim)."""
    correct: bool
    equivalence: str | None
    """``"repeat"`` or ``"duplicate"``: right as a verbatim copy of the audio heard."""
    content_id: str | None
    offset_s: float | None
    true_offset_s: float
    first_match_s: float | None
    """Audio consumed when the stream answered."""
    confidence: float | None
    speed: float | None
    pitch: float | None
    true_speed: float
    true_pitch: float
    looks: int
    max_look_evidence: float
    """Best uncorrected evidence over every look (−inf: no candidate at all)."""
    push_ms: list[float]
    look_ms: list[float]
    warp_look_ms: list[float]
    """Looks that could search warps (a subset of ``look_ms``)."""
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


def _heard(query: qs.Query, source_s: float) -> qs.Query:
    """The query as far as ``source_s`` seconds of its source, for :meth:`Judge.verdict`."""
    # Query.length_s is typed for whole-second clips; the judge reads it as a
    # length in seconds (benchmarks.queries.repeat_offset), which a stream's need not be.
    return replace(query, length_s=source_s)  # type: ignore[arg-type]


def run_clip(
    index: Index,
    query: qs.Query,
    expected: str | None,
    judge: Judge,
    plan: LookPlan,
    warp_interval_s: float = WARP_INTERVAL_S,
) -> StreamOutcome:
    """Stream one clip, then match its first 5 s and all of it in one shot."""
    rate = query.sample_rate
    matcher = StreamMatcher(index, rate, plan=plan, warp_interval_s=warp_interval_s)
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
        t0 = time.perf_counter()
        answer = matcher.finish()
        push_ms.append((time.perf_counter() - t0) * 1000.0)  # the "end" message
    correct = content_ok = False
    equivalence = None
    degradation = get_degradation(query.degradation)
    if answer is not None:
        # Judged on the source audio the stream had heard when it answered, as the
        # one-shot benchmark judges a clip: a verbatim copy of it elsewhere is right.
        heard = _heard(query, matcher.heard_s * degradation.time_factor)
        content_ok, correct, _, equivalence = judge.verdict(
            heard, expected, answer.content_id, answer.offset_s
        )
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
        cut = _heard(query, seconds * degradation.time_factor)
        right = judge.verdict(cut, expected, content_id, offset)[1] if content_id else False
        oneshot.append((evidence, right))
    return StreamOutcome(
        query_id=query.query_id,
        kind=query.kind,
        degradation=query.degradation,
        answered=answer is not None,
        content_ok=content_ok,
        correct=correct,
        equivalence=equivalence,
        content_id=answer.content_id if answer is not None else None,
        offset_s=answer.offset_s if answer is not None else None,
        true_offset_s=query.true_offset_s,
        first_match_s=matcher.heard_s if answer is not None else None,
        confidence=answer.confidence if answer is not None else None,
        speed=answer.speed if answer is not None else None,
        pitch=answer.pitch if answer is not None else None,
        true_speed=degradation.time_factor,
        true_pitch=degradation.pitch_factor,
        looks=len(matcher.looks),
        max_look_evidence=max((look.best_evidence for look in matcher.looks), default=-math.inf),
        push_ms=push_ms,
        look_ms=[look.elapsed_ms for look in matcher.looks],
        warp_look_ms=[look.elapsed_ms for look in matcher.looks if look.warps],
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
    groups = {
        **{name: (name,) for name in (*DEGRADATIONS, *TIMING_DEGRADATIONS)},
        "all, as played": DEGRADATIONS,
        "all, warped": TIMING_DEGRADATIONS,
    }
    for name, members in groups.items():
        rows = [o for o in outcomes if o.kind == "positive" and o.degradation in members]
        answered = [o for o in rows if o.answered]
        times = [o.first_match_s for o in answered if o.first_match_s is not None]
        right = [o for o in rows if o.correct and o.speed is not None and o.pitch is not None]
        n = len(rows)
        positives[name] = {
            "n": n,
            "answered_pct": _pct(len(answered), n),
            "correct_pct": _pct(sum(o.correct for o in rows), n),
            "copy_pct": _pct(sum(o.correct and o.equivalence is not None for o in rows), n),
            "wrong_pct": _pct(sum(o.answered and not o.correct for o in rows), n),
            "wrong_offset_pct": _pct(sum(o.content_ok and not o.correct for o in rows), n),
            "speed_error_pct": _quantile(
                [100.0 * abs(o.speed / o.true_speed - 1.0) for o in right if o.speed], 0.5
            ),
            "pitch_error_pct": _quantile(
                [100.0 * abs(o.pitch / o.true_pitch - 1.0) for o in right if o.pitch], 0.5
            ),
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
    warp_looks = [ms for o in outcomes for ms in o.warp_look_ms]
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
            "push_ms_p99": _quantile(pushes, 0.99),
            "look_ms_p50": _quantile(looks, 0.5),
            "look_ms_p95": _quantile(looks, 0.95),
            "warp_look_ms_p50": _quantile(warp_looks, 0.5),
            "warp_look_ms_p95": _quantile(warp_looks, 0.95),
            "warp_looks_pct": _pct(len(warp_looks), len(looks)),
            "server_ms_per_audio_s": sum(pushes)
            / max(1e-9, sum(CHUNK_S * len(o.push_ms) for o in outcomes)),
            "looks_per_negative_stream": float(np.mean([o.looks for o in negatives]))
            if negatives
            else float("nan"),
        },
    }


def render(summary: dict[str, Any], run: dict[str, Any]) -> str:
    look = run["look_plan"]
    lines = [
        *common.title_lines("Streaming benchmark", run),
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
        "answered clips. Right: right content and offset within 0.5 s, or a verbatim copy of "
        "the source audio heard up to the answer (a repeat of looping music, a passage "
        "another reference shares), as the one-shot benchmark judges a clip; 'copy %' is "
        "the share of clips right only that way. 'of which offset' counts the wrong answers "
        "that name the right content at another offset. Speed and pitch error: median relative "
        "error of the right answers' factors. One-shot columns: `Index.match_samples` on the "
        "clip's first 5 s / all 10 s at the default threshold. The speed, tempo and pitch "
        f"rows use the first {run['plan']['timing_clips']} clips of the "
        f"{run['plan']['positive_clips']}.",
        "",
        "| degradation | n | answered % | right % | copy % | wrong % | of which offset % | "
        "median s | p90 s | "
        "by 1 s % | by 2 s % | by 5 s % | speed err % | pitch err % | "
        "one-shot 5 s right % | one-shot 10 s right % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in summary["positives"].items():
        lines.append(
            f"| {name} | {row['n']} | {row['answered_pct']:.1f} | {row['correct_pct']:.1f} | "
            f"{row['copy_pct']:.1f} | {row['wrong_pct']:.1f} | {row['wrong_offset_pct']:.1f} | "
            f"{row['ttfm_median_s']:.2f} | "
            f"{row['ttfm_p90_s']:.2f} | {row['by_1s_pct']:.1f} | {row['by_2s_pct']:.1f} | "
            f"{row['by_5s_pct']:.1f} | {row['speed_error_pct']:.2f} | "
            f"{row['pitch_error_pct']:.2f} | {row['oneshot5_correct_pct']:.1f} | "
            f"{row['oneshot10_correct_pct']:.1f} |"
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
        f"p50 {cost['push_ms_p50']:.2f} ms, p95 {cost['push_ms_p95']:.2f} ms, p99 "
        f"{cost['push_ms_p99']:.2f} ms; {cost['server_ms_per_audio_s']:.0f} ms per second "
        f"of audio. Per look (lookup and alignment of everything heard): p50 "
        f"{cost['look_ms_p50']:.2f} ms, p95 {cost['look_ms_p95']:.2f} ms; looks that could "
        f"search warps ({cost['warp_looks_pct']:.0f} % of looks; one every "
        f"{run['warp_interval_s']:g} s of audio and the final one, searching only when the "
        f"plain look is unsure): p50 {cost['warp_look_ms_p50']:.2f} ms, p95 "
        f"{cost['warp_look_ms_p95']:.2f} ms; {cost['looks_per_negative_stream']:.1f} looks "
        "per negative stream.",
        "",
    ]
    return "\n".join(lines)


def _json(payload: Any) -> str:
    """``payload`` as JSON with the rates of empty groups (NaN, -inf) as null."""
    text = json.dumps(payload, indent=1, default=lambda x: None)
    return text.replace("-Infinity", "null").replace("NaN", "null")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.streaming``."""
    parser = common.run_parser(
        "benchmarks.streaming", __doc__, quick="smoke run: 12 tracks", cache="corpus cache"
    )
    parser.add_argument(
        "--warp-interval",
        type=float,
        default=WARP_INTERVAL_S,
        metavar="S",
        help="audio between looks that may search warps (default: %(default)g s)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    look_plan = LookPlan(max_s=float(CLIP_S))
    started = time.perf_counter()
    machine = common.machine_info()
    log = common.progress_log(started)

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
        compile_kernels()  # as a server does before it reports ready
        judge = Judge(refs, content_ids)
        everything = (*DEGRADATIONS, *TIMING_DEGRADATIONS)
        for kind, tracks, count, degradations in (
            ("positive", refs, plan.positive_clips, everything),
            ("negative", negs, plan.negative_clips, DEGRADATIONS),
        ):
            clips = qs.assign_clips(
                [t.duration_s for t in tracks], {CLIP_S: count}, kind, degradations
            )
            for track_index, track_clips in qs.clips_by_track(clips).items():
                audio = decode_mono(tracks[track_index].path, qs.SAMPLE_RATE)
                judge.source = audio if kind == "positive" else None
                expected = content_ids[track_index] if kind == "positive" else None
                for clip in track_clips:
                    # Only the first clips dealt get the timing changes (see Plan).
                    names = degradations if clip.slot < plan.timing_clips else DEGRADATIONS
                    for query in qs.queries_for_track(audio, qs.SAMPLE_RATE, [clip], names):
                        outcomes.append(
                            run_clip(index, query, expected, judge, look_plan, args.warp_interval)
                        )
            log(f"{kind}s done: {sum(o.kind == kind for o in outcomes)} streams")
    summary = summarize(outcomes, look_plan)
    run: dict[str, Any] = {
        **common.describe_run("benchmarks.streaming", plan.name, args.quick),
        "machine": f"{machine['cpu_model']}, {machine['usable_cores']} usable cores",
        "seed": qs.SEED,
        "references": len(refs),
        "negatives": len(negs),
        "plan": asdict(plan),
        "chunk_s": CHUNK_S,
        "clip_s": CLIP_S,
        "degradations": {
            n: get_degradation(n).description for n in (*DEGRADATIONS, *TIMING_DEGRADATIONS)
        },
        "warp_interval_s": args.warp_interval,
        "look_plan": {**asdict(look_plan), "looks": look_plan.looks, "penalty": look_plan.penalty},
        "default_min_confidence": DEFAULT_MIN_CONFIDENCE,
        "wall_s": time.perf_counter() - started,
    }
    payload = {
        "run": run,
        "summary": summary,
        "streams": [
            {k: v for k, v in asdict(o).items() if k not in ("push_ms", "look_ms", "warp_look_ms")}
            | {"push_ms_max": max(o.push_ms, default=0.0)}
            for o in outcomes
        ],
    }
    stem = common.write_results(
        args.out, "streaming", plan.name, render(summary, run), payload, _json
    )
    log(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
