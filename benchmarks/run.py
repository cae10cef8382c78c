"""Run the audio benchmark: ``python -m benchmarks.run [--quick] [--out benchmarks/results]``.

Fetches the corpus (cached), measures extraction speed, builds an index of the
references with the project's core, runs the seeded query set against it,
and writes ``audio.md`` (``audio-quick.md`` with ``--quick``) and a JSON file
with the raw numbers into the output folder.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from acr import Index, Match
from acr.errors import AcrError
from acr.kernels import compile_kernels
from acr.matching import CONFIDENCE_MIDPOINT, CONFIDENCE_SLOPE, DEFAULT_MIN_CONFIDENCE
from acr.signals.audio import SAMPLE_RATE, fingerprint_reference
from acr.signals.audio.decode import decode_audio
from benchmarks import common
from benchmarks import queries as qs
from benchmarks.corpus import Corpus, Track, decode_mono, ensure_corpus
from benchmarks.degrade import FloatArray
from benchmarks.degrade import get as get_degradation
from benchmarks.report import OFFSET_TOLERANCE_S, Outcome, render_markdown, summarize

_NO_BAR = not sys.stderr.isatty()


def _progress(items: Sequence[Track], desc: str, unit: str) -> Iterator[Track]:
    yield from tqdm(items, desc=desc, unit=unit, file=sys.stderr, disable=_NO_BAR)


# -- measurements -----------------------------------------------------------------------------


def measure_extraction(tracks: Sequence[Track]) -> dict[str, float]:
    """Time decoding and reference fingerprinting of ``tracks`` with the core.

    CPU time (``time.process_time``, all threads) gives the per-core speed;
    wall time is reported beside it.
    """
    audio_s = decode_cpu = decode_wall = fp_cpu = fp_wall = 0.0
    codes = 0
    for track in _progress(tracks, "extraction", "track"):
        c0, w0 = time.process_time(), time.perf_counter()
        samples = decode_audio(track.path, sample_rate=SAMPLE_RATE)
        c1, w1 = time.process_time(), time.perf_counter()
        fingerprints = fingerprint_reference(samples)
        c2, w2 = time.process_time(), time.perf_counter()
        audio_s += samples.shape[0] / SAMPLE_RATE
        codes += len(fingerprints)
        decode_cpu += c1 - c0
        decode_wall += w1 - w0
        fp_cpu += c2 - c1
        fp_wall += w2 - w1
    return {
        "extract_audio_hours": audio_s / 3600.0,
        "extract_cpu_s": fp_cpu,
        "extract_wall_s": fp_wall,
        "decode_cpu_s": decode_cpu,
        "decode_wall_s": decode_wall,
        "extract_xrt_per_core": audio_s / max(fp_cpu, 1e-9),
        "extract_xrt_wall": audio_s / max(fp_wall, 1e-9),
        "decode_extract_xrt_per_core": audio_s / max(fp_cpu + decode_cpu, 1e-9),
        "decode_extract_xrt_wall": audio_s / max(fp_wall + decode_wall, 1e-9),
        "extract_codes": float(codes),
    }


def _batch_indexer() -> Callable[..., Any] | None:
    try:
        module = importlib.import_module("indexer")
    except ImportError:
        return None
    run_batch = getattr(module, "run_batch", None)
    return run_batch if callable(run_batch) else None


def build_index(index_dir: Path, tracks: Sequence[Track]) -> tuple[list[str], float, str]:
    """Index ``tracks`` into a fresh ``index_dir``.

    Uses the batch indexer (``indexer.run_batch``, one worker process per core)
    when it is importable, with a JSON Lines manifest that fixes each track's
    content id; otherwise ``Index.add_file`` one file at a time.

    Returns
    -------
    content_ids : list of str
        Content id of each track, in order.
    seconds : float
        Wall time of the build.
    method : str
        How the index was built.

    Raises
    ------
    RuntimeError
        If the batch indexer fails to index any track.
    """
    if index_dir.exists():
        shutil.rmtree(index_dir)
    ids = [f"bench-{i:03d}" for i in range(len(tracks))]
    run_batch = _batch_indexer()
    if run_batch is not None:
        manifest = index_dir.with_name(index_dir.name + "-manifest.jsonl")
        rows = [
            {
                "path": str(track.path),
                "title": track.name,
                "content_id": content_id,
                "metadata": {"package": track.package, "benchmark_track": track.name},
            }
            for track, content_id in zip(tracks, ids, strict=True)
        ]
        manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
        workers = os.cpu_count() or 1
        started = time.perf_counter()
        summary = run_batch(index_dir, [str(manifest)], workers=workers, progress=False)
        seconds = time.perf_counter() - started
        if summary.failed or summary.indexed != len(tracks):
            raise RuntimeError(f"batch indexer did not index every track: {summary.to_dict()}")
        return ids, seconds, f"indexer.run_batch, {workers} worker processes"
    started = time.perf_counter()
    with Index.open(index_dir, create=True) as index:
        for track, content_id in zip(_progress(tracks, "indexing", "track"), ids, strict=True):
            index.add_file(
                track.path,
                title=track.name,
                content_id=content_id,
                metadata={"package": track.package, "benchmark_track": track.name},
            )
    return ids, time.perf_counter() - started, "Index.add_file, one file at a time"


# -- queries ----------------------------------------------------------------------------------


class Judge:
    """Decides whether an answer is right, with the decoded references at hand.

    An answer is correct when it names the source track at the true offset,
    or names audio identical to the clip: a verbatim repeat elsewhere in the
    same track (looping music) or in another reference track (shared
    passages), found with :func:`benchmarks.queries.repeat_offset`.

    Parameters
    ----------
    tracks : sequence of Track
        The indexed references.
    content_ids : sequence of str
        Content id of each reference, in the same order.
    """

    def __init__(self, tracks: Sequence[Track], content_ids: Sequence[str]) -> None:
        self.names = {cid: t.name for cid, t in zip(content_ids, tracks, strict=True)}
        self._paths = {cid: t.path for cid, t in zip(content_ids, tracks, strict=True)}
        self._decoded: dict[str, FloatArray] = {}
        self.source: FloatArray | None = None

    def _audio(self, content_id: str) -> FloatArray | None:
        if content_id not in self._paths:
            return None
        if content_id not in self._decoded:
            if len(self._decoded) >= 8:
                self._decoded.pop(next(iter(self._decoded)))
            self._decoded[content_id] = decode_mono(self._paths[content_id], qs.SAMPLE_RATE)
        return self._decoded[content_id]

    def verdict(
        self,
        query: qs.Query,
        expected_id: str | None,
        content_id: str | None,
        offset_s: float | None,
    ) -> tuple[bool, bool, float | None, str | None]:
        """Judge one answer.

        Parameters
        ----------
        query : Query
            The query (its clip is cut from :attr:`source`).
        expected_id : str or None
            Content id of the source track (None for negatives: never right).
        content_id : str or None
            Content id of the answer (None when there is none).
        offset_s : float or None
            Offset of the answer.

        Returns
        -------
        content_ok : bool
            The answer names the source track or a track holding the clip verbatim.
        correct : bool
            ``content_ok`` and the offset within :data:`OFFSET_TOLERANCE_S` of
            the clip (or of its verbatim copy).
        equivalent_offset_s : float or None
            Where the verbatim copy the answer pointed at starts, if it did.
        equivalence : str or None
            ``"repeat"`` (same track) or ``"duplicate"`` (another track).
        """
        if expected_id is None or content_id is None or offset_s is None:
            return False, False, None, None
        same = content_id == expected_id
        if same and abs(offset_s - query.true_offset_s) <= OFFSET_TOLERANCE_S:
            return True, True, None, None
        if self.source is None:
            return same, False, None, None
        target = self.source if same else self._audio(content_id)
        if target is None:
            return same, False, None, None
        copy = qs.repeat_offset(
            self.source,
            query.sample_rate,
            query.true_offset_s,
            query.length_s,
            offset_s,
            target=target,
        )
        if copy is None or abs(offset_s - copy) > OFFSET_TOLERANCE_S:
            return same, False, None, None
        return True, True, copy, "repeat" if same else "duplicate"


def full_index(cache_dir: Path, references: Sequence[Track]) -> Path:
    """The full run's index of ``references`` in ``cache_dir``, built if it is not there."""
    index_dir = cache_dir.resolve() / "index-full"
    if not (index_dir / "catalogue.sqlite").exists():
        build_index(index_dir, references)
    return index_dir


def run_queries(
    index: Index,
    tracks: Sequence[Track],
    clips: Sequence[qs.ClipSpec],
    degradations: Sequence[str],
    judge: Judge,
    content_ids: Sequence[str] | None,
    desc: str,
    *,
    calibrate: bool = True,
) -> tuple[list[Outcome], float, float]:
    """Generate each track's queries and match them one at a time.

    Parameters
    ----------
    index : Index
        The index of the references.
    tracks : sequence of Track
        Tracks the clips refer to by index.
    clips : sequence of ClipSpec
        Clips to cut.
    degradations : sequence of str
        Conditions applied to every clip.
    judge : Judge
        Decides whether answers are right.
    content_ids : sequence of str or None
        Content id of each track when the tracks are indexed (positives);
        ``None`` for negatives.
    desc : str
        Progress label.
    calibrate : bool
        Re-match queries that got no answer with no threshold (see :func:`match_one`).

    Returns
    -------
    outcomes : list of Outcome
        One per query.
    decode_s : float
        Time spent decoding source tracks.
    generate_s : float
        Time spent cutting and degrading clips.
    """
    outcomes: list[Outcome] = []
    decode_s = generate_s = 0.0
    grouped = qs.clips_by_track(clips)
    total = len(clips) * len(degradations)
    with tqdm(
        total=total, desc=desc, unit="query", file=sys.stderr, disable=_NO_BAR, mininterval=1.0
    ) as bar:
        for track_index, track_clips in grouped.items():
            track = tracks[track_index]
            t0 = time.perf_counter()
            audio = decode_mono(track.path, qs.SAMPLE_RATE)
            decode_s += time.perf_counter() - t0
            judge.source = audio if content_ids is not None else None
            expected = None if content_ids is None else content_ids[track_index]
            stream: Iterator[qs.Query] = qs.queries_for_track(
                audio, qs.SAMPLE_RATE, track_clips, degradations
            )
            while True:
                t0 = time.perf_counter()
                query = next(stream, None)
                generate_s += time.perf_counter() - t0
                if query is None:
                    break
                outcomes.append(
                    match_one(index, query, track.name, expected, judge, calibrate=calibrate)
                )
                bar.update()
                if _NO_BAR and len(outcomes) % max(1, total // 10) == 0:
                    print(f"{desc}: {len(outcomes)}/{total} queries", file=sys.stderr, flush=True)
    judge.source = None
    return outcomes, decode_s, generate_s


def match_one(
    index: Index,
    query: qs.Query,
    track_name: str,
    expected_id: str | None,
    judge: Judge,
    *,
    calibrate: bool = True,
) -> Outcome:
    """Match one query, timing the call, and judge the answer.

    Parameters
    ----------
    index : Index
        Index of the references.
    query : Query
        The degraded clip.
    track_name : str
        Name of the track the clip was cut from.
    expected_id : str or None
        Content id the answer should have (None for negatives).
    judge : Judge
        Decides whether the answer is right (its ``source`` is the decoded
        source track of positives).
    calibrate : bool
        When the default call returns nothing, match again (untimed) with no
        confidence threshold to record the best candidate's confidence.

    Returns
    -------
    Outcome
        The judged answer.
    """
    error: str | None = None
    t0 = time.perf_counter()
    try:
        result = index.match_samples(query.samples, query.sample_rate, top_k=1)
        best = result.best
    except AcrError as exc:
        best, error = None, exc.code
    latency_ms = (time.perf_counter() - t0) * 1000.0

    content_ok, correct, equivalent, equivalence = judge.verdict(
        query, expected_id, best.content_id if best else None, best.offset_s if best else None
    )
    candidate = best
    if candidate is None and error is None and calibrate:
        # Below the default threshold: ask again with none, for the calibration data.
        try:
            candidate = index.match_samples(
                query.samples, query.sample_rate, top_k=1, min_confidence=0.0
            ).best
        except AcrError:
            candidate = None
    candidate_content_ok, candidate_correct, _, _ = judge.verdict(
        query,
        expected_id,
        candidate.content_id if candidate else None,
        candidate.offset_s if candidate else None,
    )

    def name(match: Match | None) -> str | None:
        return None if match is None else judge.names.get(match.content_id, match.title)

    return Outcome(
        query_id=query.query_id,
        kind=query.kind,
        track=track_name,
        length_s=query.length_s,
        degradation=query.degradation,
        true_offset_s=query.true_offset_s,
        latency_ms=latency_ms,
        matched_track=name(best),
        offset_s=best.offset_s if best else None,
        confidence=best.confidence if best else None,
        score=best.score if best else None,
        speed=best.speed if best else None,
        pitch=best.pitch if best else None,
        content_ok=content_ok,
        correct=correct,
        equivalent_offset_s=equivalent,
        equivalence=equivalence,
        candidate_track=name(candidate),
        candidate_confidence=candidate.confidence if candidate else None,
        candidate_correct=candidate_correct,
        candidate_content_ok=candidate_content_ok,
        error=error,
    )


# -- main -------------------------------------------------------------------------------------


METHOD_NOTES: tuple[str, ...] = (
    "References are indexed from their original files (batch indexer when present, else "
    "`Index.add_file`); queries are cut "
    "from the benchmark's own PyAV decode of the same files at 16 kHz, degraded, and passed "
    "to `Index.match_samples` as float32 arrays (the matcher resamples itself).",
    "Every clip is degraded with every condition (paired design). Clips are dealt round-robin "
    "over the tracks long enough for them; starts are uniform, redrawn when the clean clip is "
    f"below {qs.MIN_CLIP_DBFS:g} dBFS RMS (silence identifies nothing).",
    f"{qs.MARGIN_S:g} s more source than needed is cut before degrading (for speed and tempo "
    "changes, length x factor + margin) and the result is trimmed to the exact query length; "
    "the true offset is the clip's start in the original.",
    f"Top-1 correct: the best match (default threshold) is the source track and its offset is "
    f"within {OFFSET_TOLERANCE_S:g} s of the true start - or the answer points at a verbatim "
    "copy of the clip: a repeat elsewhere in the same track (game music loops) or the same "
    "passage in another reference track (a copy is a stretch whose normalised correlation "
    f"with the clean clip is at least {qs.REPEAT_MIN_CORRELATION:g}). Content-only accuracy "
    "ignores the offset.",
    "False positive: any match returned for a clip of music that is not indexed.",
    "Calibration: when the default call returns nothing, the query is matched again with "
    "`min_confidence=0` (not timed) to record the best candidate's confidence.",
    "Extraction speed: audio seconds per CPU second (`time.process_time`, all threads) of "
    "`fingerprint_reference` on PCM decoded by `decode_audio` at the core's rate; 'including "
    "decode' adds the decode's CPU time.",
    "Index size: all files in the index folder after the build, per hour of indexed audio.",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.run``."""
    parser = common.run_parser(
        "benchmarks.run",
        __doc__,
        quick="smoke run: 12 tracks, one clip per cell",
        cache="download and index cache",
    )
    args = parser.parse_args(argv)
    plan = qs.QUICK_PLAN if args.quick else qs.FULL_PLAN
    started = time.perf_counter()
    timings: dict[str, float] = {}
    machine = common.machine_info()  # load average before this run adds its own
    log = common.progress_log(started)

    log("fetching corpus")
    t0 = time.perf_counter()
    corpus: Corpus = ensure_corpus(args.cache)
    timings["corpus_s"] = time.perf_counter() - t0
    ref_ids = qs.select_tracks(plan.reference_tracks, len(corpus.references))
    neg_ids = qs.select_tracks(plan.negative_tracks, len(corpus.negatives))
    refs = [corpus.references[i] for i in ref_ids]
    negs = [corpus.negatives[i] for i in neg_ids]
    log(
        f"{len(refs)} references, {len(negs)} negatives"
        + (f"; downloaded {', '.join(corpus.downloaded)}" if corpus.downloaded else "; cached")
    )

    log("measuring extraction speed")
    costs: dict[str, Any] = dict(measure_extraction(refs))

    log("building the index")
    index_dir = args.cache.resolve() / f"index-{plan.name}"
    content_ids, build_s, method = build_index(index_dir, refs)
    reference_hours = sum(t.duration_s for t in refs) / 3600.0
    index_bytes = common.dir_bytes(index_dir)
    costs.update(
        index_method=method,
        index_build_s=build_s,
        index_build_xrt=reference_hours * 3600.0 / build_s,
        index_bytes=index_bytes,
        index_mb_per_hour=index_bytes / 1e6 / reference_hours,
        peak_rss_after_index_mb=common.peak_rss_mb(),
    )
    timings["index_build_s"] = build_s

    pos_clips = qs.assign_clips(
        [t.duration_s for t in refs], plan.positive_clips, "positive", plan.degradations
    )
    neg_clips = qs.assign_clips(
        [t.duration_s for t in negs], plan.negative_clips, "negative", plan.negative_degradations
    )
    with Index.open(index_dir, readonly=True) as index:
        compile_kernels()  # as a server does before it reports ready
        stats = index.stats()
        costs.update(
            index_codes=stats.codes,
            index_stats_bytes=stats.bytes_on_disk,
            codes_per_second=stats.codes / max(stats.duration_s, 1e-9),
        )
        log(f"index: {stats}")
        # The quick run skips the untimed re-matching of misses (calibration data).
        judge = Judge(refs, content_ids)
        positives, dec_p, gen_p = run_queries(
            index,
            refs,
            pos_clips,
            plan.degradations,
            judge,
            content_ids,
            "positives",
            calibrate=not args.quick,
        )
        negatives, dec_n, gen_n = run_queries(
            index,
            negs,
            neg_clips,
            plan.negative_degradations,
            judge,
            None,
            "negatives",
            calibrate=not args.quick,
        )
    timings["query_decode_s"] = dec_p + dec_n
    timings["query_generation_s"] = gen_p + gen_n
    timings["matching_s"] = sum(o.latency_ms for o in [*positives, *negatives]) / 1000.0
    costs["peak_rss_mb"] = common.peak_rss_mb()
    timings["total_s"] = time.perf_counter() - started
    load_at_end = list(os.getloadavg())

    conditions = [get_degradation(name) for name in plan.degradations]
    timing_preserved = {d.name: d.timing_preserved for d in conditions}
    factors = {
        d.name: (d.time_factor, d.pitch_factor)
        for d in conditions
        if (d.time_factor, d.pitch_factor) != (1.0, 1.0)
    }
    summary = summarize(
        positives,
        negatives,
        timing_preserved,
        costs,
        factors=factors,
        calibrated=not args.quick,
        default_threshold=DEFAULT_MIN_CONFIDENCE,
    )
    run: dict[str, Any] = {
        **common.describe_run("benchmarks.run", plan.name, args.quick),
        "machine": {**machine, "load_average_at_end": load_at_end},
        "seed": qs.SEED,
        "confidence_model": {
            "midpoint": CONFIDENCE_MIDPOINT,
            "slope": CONFIDENCE_SLOPE,
            "default_min_confidence": DEFAULT_MIN_CONFIDENCE,
        },
        "query_sample_rate": qs.SAMPLE_RATE,
        "packages": [asdict(p) for p in corpus.packages],
        "corpus": {
            "references": len(refs),
            "reference_hours": reference_hours,
            "negatives": len(negs),
            "negative_hours": sum(t.duration_s for t in negs) / 3600.0,
            "positive_queries": len(positives),
            "negative_queries": len(negatives),
            "reference_tracks": [t.name for t in refs],
            "negative_tracks": [t.name for t in negs],
        },
        "plan": {
            "positive_clips": {str(k): v for k, v in plan.positive_clips.items()},
            "negative_clips": {str(k): v for k, v in plan.negative_clips.items()},
            "negative_degradations": list(plan.negative_degradations),
        },
        "lengths": sorted(plan.positive_clips),
        "degradations": {n: get_degradation(n).description for n in plan.degradations},
        "timings": timings,
        "method": list(METHOD_NOTES),
    }
    payload = {
        "run": run,
        "summary": summary,
        "queries": [
            {**asdict(o), "offset_error_ms": o.offset_error_ms} for o in [*positives, *negatives]
        ],
    }
    stem = common.write_results(
        args.out, "audio", plan.name, render_markdown(summary, run), payload
    )
    log(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
