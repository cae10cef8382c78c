"""Benchmark of the monitoring mode: ``python -m benchmarks.monitor [--quick]``.

Builds seeded long "broadcasts" from the benchmark corpus: excerpts of the
indexed references (10-90 s, random offsets, each played at a random speed
within ±1 %), separated by never-indexed music (hedgewars, 5-40 s) and silence
(1-5 s), in random order. The last broadcasts are then played
:data:`BROADCAST_SPEED` fast as a whole (pitch and tempo, as stations that
speed up their programmes), which the monitor must search warps for. Each
broadcast then goes through white noise at
10 dB SNR and an MP3 round trip at 32 kbit/s (``benchmarks.degrade``), is
written as 16-bit WAV, and :func:`acr.monitor.monitor` turns the file into a
timeline against the cached index of the references (``benchmarks.load.ensure_index``).

Reported: segment recall and precision (a true and a found segment match when
they name the same content and overlap by at least half of the shorter one),
boundary errors of matched segments, offset error (the found offset against
the true reference position at the found start, so boundary errors do not
count twice), speed and pitch errors, false segments (found segments
matching no true one) and the seconds they cover in the gaps, and speed in
times real time (wall, decode included), for the broadcasts as played and for
the sped-up ones. Writes ``results/monitor.md`` and ``.json`` (``monitor-quick.*``).
"""

from __future__ import annotations

import io
import os
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from acr import Index
from acr.kernels import compile_kernels
from acr.monitor import (
    MIN_WINDOWS,
    WINDOW_HOP_S,
    WINDOW_MIN_CONFIDENCE,
    WINDOW_S,
    Segment,
    Timeline,
    monitor,
)
from benchmarks import common
from benchmarks import queries as qs
from benchmarks.corpus import Track, decode_mono, ensure_corpus
from benchmarks.degrade import FloatArray, add_white_noise, mp3, speed
from benchmarks.load import ensure_index

SEED = qs.SEED
RATE = qs.SAMPLE_RATE
"""Rate at which broadcasts are assembled and written (16 kHz, as the query benchmark)."""

EXCERPT_S = (10.0, 90.0)
UNKNOWN_S = (5.0, 40.0)
SILENCE_S = (1.0, 5.0)
SPEED_RANGE = 0.01
NOISE_SNR_DB = 10.0
MP3_BIT_RATE = 32_000
PIECE_WEIGHTS = {"reference": 0.6, "unknown": 0.25, "silence": 0.15}
BROADCAST_SPEED = 1.04
"""Playback speed of the sped-up broadcasts."""


@dataclass(frozen=True)
class Plan:
    name: str
    broadcasts: int
    minutes: float
    sped_up: int
    """Broadcasts, after the others, played :data:`BROADCAST_SPEED` fast."""


FULL = Plan("full", 3, 20.0, 1)
QUICK = Plan("quick", 1, 5.0, 1)


@dataclass(frozen=True)
class TruePiece:
    """One piece of a broadcast: a reference excerpt, unknown music or silence."""

    kind: str
    start_s: float
    end_s: float
    content_id: str | None = None
    track: str | None = None
    offset_s: float = 0.0
    speed: float = 1.0
    """Tempo relative to the reference; the pitch factor too (every change is of speed)."""


# -- building broadcasts ----------------------------------------------------------------------


class _Decoded:
    """Decoded tracks, a few at a time."""

    def __init__(self) -> None:
        self._cache: dict[Path, FloatArray] = {}

    def get(self, track: Track) -> FloatArray:
        if track.path not in self._cache:
            if len(self._cache) >= 6:
                self._cache.pop(next(iter(self._cache)))
            self._cache[track.path] = decode_mono(track.path, RATE)
        return self._cache[track.path]


def build_broadcast(
    number: int,
    minutes: float,
    refs: Sequence[Track],
    ids: Sequence[str],
    negatives: Sequence[Track],
    decoded: _Decoded,
    playback: float = 1.0,
) -> tuple[FloatArray, list[TruePiece]]:
    """A seeded broadcast of ``minutes``, played ``playback`` fast, and what plays when."""
    rng = np.random.default_rng(np.random.SeedSequence(SEED, spawn_key=(7, number)))
    kinds = list(PIECE_WEIGHTS)
    weights = np.array([PIECE_WEIGHTS[k] for k in kinds])
    parts: list[FloatArray] = []
    truth: list[TruePiece] = []
    position = 0
    total = round(minutes * 60.0 * RATE)
    previous = ""
    while position < total:
        kind = str(rng.choice(kinds, p=weights))
        if kind != "reference" and kind == previous:
            continue  # two gaps in a row are one gap
        previous = kind
        start_s = position / RATE
        if kind == "silence":
            n = round(float(rng.uniform(*SILENCE_S)) * RATE)
            parts.append(np.zeros(n, dtype=np.float32))
            truth.append(TruePiece("silence", start_s, start_s + n / RATE))
        elif kind == "unknown":
            track = negatives[int(rng.integers(len(negatives)))]
            audio = decoded.get(track)
            n = min(round(float(rng.uniform(*UNKNOWN_S)) * RATE), audio.shape[0])
            at = int(rng.integers(0, audio.shape[0] - n + 1))
            parts.append(audio[at : at + n].copy())
            truth.append(TruePiece("unknown", start_s, start_s + n / RATE, track=track.name))
        else:
            which = int(rng.integers(len(refs)))
            audio = decoded.get(refs[which])
            factor = 1.0 + float(rng.uniform(-SPEED_RANGE, SPEED_RANGE))
            length = min(float(rng.uniform(*EXCERPT_S)), audio.shape[0] / RATE / factor - 0.1)
            source_n = round(length * factor * RATE)
            at = int(rng.integers(0, audio.shape[0] - source_n + 1))
            piece = speed(audio[at : at + source_n], RATE, factor)
            parts.append(piece)
            truth.append(
                TruePiece(
                    "reference",
                    start_s,
                    start_s + piece.shape[0] / RATE,
                    content_id=ids[which],
                    track=refs[which].name,
                    offset_s=at / RATE,
                    speed=factor,
                )
            )
        position += parts[-1].shape[0]
    signal = np.concatenate(parts)
    if playback != 1.0:
        signal = speed(signal, RATE, playback)
        truth = [
            replace(
                p, start_s=p.start_s / playback, end_s=p.end_s / playback, speed=p.speed * playback
            )
            for p in truth
        ]
    rng_noise = np.random.default_rng(np.random.SeedSequence(SEED, spawn_key=(8, number)))
    degraded = mp3(add_white_noise(signal, rng_noise, NOISE_SNR_DB), RATE, MP3_BIT_RATE)
    return np.clip(degraded, -1.0, 1.0), truth


def wav_bytes(samples: FloatArray, rate: int = RATE) -> bytes:
    """16-bit mono WAV."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767.0).astype("<i2").tobytes())
    return buffer.getvalue()


# -- scoring ----------------------------------------------------------------------------------


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _matches(piece: TruePiece, found: Segment) -> bool:
    if found.content_id != piece.content_id:
        return False
    shorter = min(piece.end_s - piece.start_s, found.end_s - found.start_s)
    return _overlap(piece.start_s, piece.end_s, found.start_s, found.end_s) >= 0.5 * shorter


def score_broadcast(truth: Sequence[TruePiece], timeline: Timeline) -> dict[str, Any]:
    """Per-broadcast raw errors: matched pairs, misses, false segments."""
    pieces = [p for p in truth if p.kind == "reference"]
    gaps = [p for p in truth if p.kind != "reference"]
    pairs: list[dict[str, Any]] = []
    matched_found: set[int] = set()
    missed: list[dict[str, Any]] = []
    for piece in pieces:
        candidates = [(i, s) for i, s in enumerate(timeline.segments) if _matches(piece, s)]
        if not candidates:
            missed.append(asdict(piece))
            continue
        _, found = max(
            candidates,
            key=lambda c: _overlap(piece.start_s, piece.end_s, c[1].start_s, c[1].end_s),
        )
        matched_found.update(j for j, _ in candidates)
        true_offset = piece.offset_s + piece.speed * (found.start_s - piece.start_s)
        pairs.append(
            {
                "true": asdict(piece),
                "found": found.to_dict(),
                "start_error_s": found.start_s - piece.start_s,
                "end_error_s": found.end_s - piece.end_s,
                "offset_error_s": found.offset_s - true_offset,
                "speed_error": found.speed - piece.speed,
                "pitch_error": found.pitch - piece.speed,
                "pieces_found": len(candidates),
            }
        )
    false_segments = [
        {
            **s.to_dict(),
            "seconds_in_gaps": sum(_overlap(s.start_s, s.end_s, g.start_s, g.end_s) for g in gaps),
        }
        for i, s in enumerate(timeline.segments)
        if i not in matched_found
    ]
    found_in_gaps = sum(
        _overlap(s.start_s, s.end_s, g.start_s, g.end_s) for s in timeline.segments for g in gaps
    )
    return {
        "pieces": len(pieces),
        "found": len(timeline.segments),
        "pairs": pairs,
        "missed": missed,
        "false_segments": false_segments,
        "gap_seconds": sum(g.end_s - g.start_s for g in gaps),
        "found_seconds_in_gaps": found_in_gaps,
    }


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "median": None, "p95": None, "max": None}
    a = np.abs(np.asarray(values, dtype=np.float64))
    return {
        "n": len(values),
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
    }


def summarize(scores: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pooled figures over every broadcast."""
    pairs = [p for s in scores for p in s["pairs"]]
    pieces = sum(s["pieces"] for s in scores)
    found = sum(s["found"] for s in scores)
    false_count = sum(len(s["false_segments"]) for s in scores)
    audio_s = sum(r["duration_s"] for r in runs)
    wall_s = sum(r["elapsed_s"] for r in runs)
    cpu_s = sum(r["cpu_s"] for r in runs)
    start = [p["start_error_s"] for p in pairs]
    end = [p["end_error_s"] for p in pairs]
    return {
        "pieces": pieces,
        "found_segments": found,
        "matched": len(pairs),
        "recall_pct": 100.0 * len(pairs) / max(pieces, 1),
        "precision_pct": 100.0 * (found - false_count) / max(found, 1),
        "split_pieces": sum(1 for p in pairs if p["pieces_found"] > 1),
        "start_error_s": _stats(start),
        "end_error_s": _stats(end),
        "start_signed_median_s": float(np.median(start)) if start else None,
        "end_signed_median_s": float(np.median(end)) if end else None,
        "boundary_within_0_5s_pct": 100.0
        * sum(1 for e in [*start, *end] if abs(e) <= 0.5)
        / max(len(start) + len(end), 1),
        "offset_error_s": _stats([p["offset_error_s"] for p in pairs]),
        "offset_within_0_1s_pct": 100.0
        * sum(1 for p in pairs if abs(p["offset_error_s"]) <= 0.1)
        / max(len(pairs), 1),
        "speed_error": _stats([p["speed_error"] for p in pairs]),
        "pitch_error": _stats([p["pitch_error"] for p in pairs]),
        "false_segments": false_count,
        "gap_seconds": sum(s["gap_seconds"] for s in scores),
        "found_seconds_in_gaps": sum(s["found_seconds_in_gaps"] for s in scores),
        "audio_s": audio_s,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "x_realtime_wall": audio_s / max(wall_s, 1e-9),
        "x_realtime_cpu": audio_s / max(cpu_s, 1e-9),
    }


# -- report -----------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render(
    summaries: dict[str, dict[str, Any]], runs: Sequence[dict[str, Any]], run: dict[str, Any]
) -> str:
    plan = run["plan"]
    groups = list(summaries)
    lines = [
        f"# Monitoring benchmark ({run['mode']})",
        "",
        f"`{run['command']}` — {run['date']}, commit `{run['commit']}`, seed {run['seed']}.",
        f"Machine: {run['machine']['cpu_model']}, {run['machine']['usable_cores']} usable cores.",
        "",
        f"Broadcasts: {plan['broadcasts']} x {plan['minutes']:g} min as played and "
        f"{plan['sped_up']} x {plan['minutes']:g} min played {BROADCAST_SPEED:g} times as fast "
        f"(speed +{100 * (BROADCAST_SPEED - 1):g} %, pitch and tempo); excerpts of the "
        f"{run['references']} indexed references ({EXCERPT_S[0]:g}-{EXCERPT_S[1]:g} s, speed "
        f"±{100 * SPEED_RANGE:g} %), never-indexed music ({UNKNOWN_S[0]:g}-{UNKNOWN_S[1]:g} s) "
        f"and silence ({SILENCE_S[0]:g}-{SILENCE_S[1]:g} s); then white noise "
        f"{NOISE_SNR_DB:g} dB SNR and MP3 {MP3_BIT_RATE // 1000} kbit/s. Monitor settings: "
        f"window {WINDOW_S:g} s every {WINDOW_HOP_S:g} s, a window votes from confidence "
        f"{WINDOW_MIN_CONFIDENCE:g}, a segment needs {MIN_WINDOWS} agreeing windows; speed, "
        "pitch and tempo warps searched where a window is unsure.",
        "",
        "| measure | " + " | ".join(groups) + " |",
        "|---|" + "---:|" * len(groups),
    ]

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> str:
        return f"| {label} | " + " | ".join(cell(summaries[g]) for g in groups) + " |"

    def ms(stats: dict[str, float | None], key: str) -> str:
        return _f(1000 * (stats[key] or 0), 0)

    lines += [
        row("reference pieces", lambda s: f"{s['pieces']}"),
        row("segments found", lambda s: f"{s['found_segments']}"),
        row(
            "segment recall (same content, overlap >= half)",
            lambda s: f"{_f(s['recall_pct'], 1)} %",
        ),
        row("segment precision", lambda s: f"{_f(s['precision_pct'], 1)} %"),
        row("pieces split into several segments", lambda s: f"{s['split_pieces']}"),
        row(
            "start error median / p95 / max",
            lambda s: (
                f"{_f(s['start_error_s']['median'])} / {_f(s['start_error_s']['p95'])} / "
                f"{_f(s['start_error_s']['max'])} s"
            ),
        ),
        row(
            "end error median / p95 / max",
            lambda s: (
                f"{_f(s['end_error_s']['median'])} / {_f(s['end_error_s']['p95'])} / "
                f"{_f(s['end_error_s']['max'])} s"
            ),
        ),
        row(
            "signed median start / end error",
            lambda s: f"{_f(s['start_signed_median_s'])} / {_f(s['end_signed_median_s'])} s",
        ),
        row("boundaries within 0.5 s", lambda s: f"{_f(s['boundary_within_0_5s_pct'], 1)} %"),
        row(
            "offset error median / p95 / max",
            lambda s: (
                f"{ms(s['offset_error_s'], 'median')} / {ms(s['offset_error_s'], 'p95')} "
                f"/ {ms(s['offset_error_s'], 'max')} ms"
            ),
        ),
        row("offsets within 100 ms", lambda s: f"{_f(s['offset_within_0_1s_pct'], 1)} %"),
        row(
            "speed error median / p95",
            lambda s: f"{_f(s['speed_error']['median'], 4)} / {_f(s['speed_error']['p95'], 4)}",
        ),
        row(
            "pitch error median / p95",
            lambda s: f"{_f(s['pitch_error']['median'], 4)} / {_f(s['pitch_error']['p95'], 4)}",
        ),
        row("false segments (matching no true piece)", lambda s: f"{s['false_segments']}"),
        row(
            "seconds reported inside gaps / gap seconds",
            lambda s: f"{_f(s['found_seconds_in_gaps'], 1)} / {_f(s['gap_seconds'], 1)} s",
        ),
        row(
            "speed, wall (decode included)",
            lambda s: f"{_f(s['x_realtime_wall'], 0)}x real time",
        ),
        row("speed, CPU time (all threads)", lambda s: f"{_f(s['x_realtime_cpu'], 0)}x real time"),
        "",
        f"Peak memory (ru_maxrss): {_f(run['peak_rss_mb'], 0)} MB.",
        "",
        "| broadcast | playback | minutes | pieces | found | matched | false | wall s | "
        "x real time | decode s | fingerprint s | match s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        t = r["timings"]
        lines.append(
            f"| {r['number']} | {r['playback']:g} | {r['duration_s'] / 60:.1f} | {r['pieces']} | "
            f"{r['found']} | {r['matched']} | {r['false']} | {r['elapsed_s']:.2f} | "
            f"{r['duration_s'] / r['elapsed_s']:.0f} | {t['decode_s']:.2f} | "
            f"{t['fingerprint_s']:.2f} | {t['match_s']:.2f} |"
        )
    lines += [
        "",
        "Errors are absolute unless signed; an end error above zero is a segment that runs on "
        "after its piece. Offset error compares the reported offset with the true reference "
        "position at the reported start. Speed and pitch errors compare the reported factors "
        "with the piece's speed (its own ±1 % times the broadcast's playback speed). Game "
        "music loops: an excerpt found at a verbatim repeat elsewhere in its track counts as "
        "a large offset error here.",
        "",
    ]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.monitor``."""
    parser = common.run_parser(
        "benchmarks.monitor", __doc__, quick="one 5-minute broadcast", cache="corpus cache"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    began = time.perf_counter()
    machine = common.machine_info()
    log = common.progress_log(began)

    corpus = ensure_corpus(args.cache)
    refs, negs = list(corpus.references), list(corpus.negatives)
    log(f"{len(refs)} references, {len(negs)} negatives; index (cached if built)")
    built = ensure_index(refs, args.cache.resolve())
    how = "cached" if built.cached else f"built in {built.build_s:.0f} s"
    log(f"index at {built.path} ({how})")
    decoded = _Decoded()
    scores: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    truths: list[list[dict[str, Any]]] = []
    timelines: list[dict[str, Any]] = []
    with Index.open(built.path, readonly=True) as index:
        compile_kernels()  # as a server does before it reports ready
        for number in range(plan.broadcasts + plan.sped_up):
            playback = BROADCAST_SPEED if number >= plan.broadcasts else 1.0
            log(f"broadcast {number}: building {plan.minutes:g} min, played {playback:g} fast")
            signal, truth = build_broadcast(
                number, plan.minutes, refs, list(built.content_ids), negs, decoded, playback
            )
            data = wav_bytes(signal)
            del signal
            log(f"broadcast {number}: monitoring")
            cpu0 = time.process_time()
            timeline = monitor(index, data)
            cpu_s = time.process_time() - cpu0
            score = score_broadcast(truth, timeline)
            scores.append(score)
            truths.append([asdict(p) for p in truth])
            timelines.append(timeline.to_dict())
            runs.append(
                {
                    "number": number,
                    "playback": playback,
                    "duration_s": timeline.duration_s,
                    "elapsed_s": timeline.elapsed_s,
                    "cpu_s": cpu_s,
                    "timings": timeline.timings,
                    "pieces": score["pieces"],
                    "found": score["found"],
                    "matched": len(score["pairs"]),
                    "false": len(score["false_segments"]),
                }
            )
            log(
                f"broadcast {number}: {score['pieces']} pieces, {score['found']} segments, "
                f"{timeline.duration_s / timeline.elapsed_s:.0f}x real time"
            )
    n = plan.broadcasts
    summary = {
        "as played": summarize(scores[:n], runs[:n]),
        f"sped up {100 * (BROADCAST_SPEED - 1):g} %": summarize(scores[n:], runs[n:]),
    }
    run = {
        **common.describe_run("benchmarks.monitor", plan.name, args.quick),
        "machine": {**machine, "load_average_at_end": list(os.getloadavg())},
        "seed": SEED,
        "plan": asdict(plan),
        "references": len(refs),
        "index": str(built.path),
        "peak_rss_mb": common.peak_rss_mb(),
        "total_s": time.perf_counter() - began,
    }
    payload = {
        "run": run,
        "summary": summary,
        "broadcasts": runs,
        "scores": scores,
        "truth": truths,
        "timelines": timelines,
    }
    stem = common.write_results(args.out, "monitor", plan.name, render(summary, runs, run), payload)
    log(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
