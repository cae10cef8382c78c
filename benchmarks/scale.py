"""Scale benchmark: one machine from 10 to 10,000 indexed hours, then a loopback Ray cluster.

``python -m benchmarks.scale`` writes ``benchmarks/results/scale.md``.

**The curve.** The real catalogue (the 61 reference tracks of the benchmark
corpus, 1.8 h) is padded with *distractor* contents of one hour each, drawn
from the real code distribution, as neural-fingerprint papers pad their
databases with dummy segments: each distractor posting's code is drawn from a
model of the codes of the corpus's never-indexed music (Hedgewars, 94 min,
26 tracks; independent of the queries) — the two frequency fields jointly
times the level and time fields jointly (:func:`code_model`) — and its frame
uniformly over its content, at the references' own density (postings per
second). The model is checked against the real thing: fitted on half of the
never-indexed tracks, it predicts how many chance hits clips of the other half
meet among the real references (:func:`model_check`). Distractors are
generated directly in code order as memory-mapped posting tables
(:func:`acr.index.segment.write_table`), cached under ``benchmarks/.cache/scale``.
Each size runs in a fresh process, which maps the tables (the start-up
time), builds the real catalogue's table, and matches noisy 5 s clips of the
real references with the single-node procedure (:func:`acr.search.identify`).

**The cluster.** A head and two worker nodes on loopback
(:class:`acr.cluster.local.LocalCluster`); the real catalogue in 4 shards × 2
replicas; every answer compared with the single-node answer; a worker node
killed mid-run; then throughput with one and with two worker nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from acr.index.catalogue import ContentSpec
from acr.index.lookup import CodeLookup
from acr.index.segment import PostingTable, Segment, build_segment, map_table, write_table
from acr.matching import Hits
from acr.search import HIT_BUDGET, NOMINATION_HITS, NOMINEES, Identification, Query, identify
from acr.signals.audio import AudioSignal
from acr.signals.audio.codes import CODE_BITS, DT_BITS, F1_BITS, RATIO_BITS
from acr.signals.base import Fingerprints
from benchmarks.common import REPO_ROOT, RESULTS_DIR, git_commit, machine_info, peak_rss_mb
from benchmarks.corpus import DEFAULT_CACHE_DIR, Track, decode_mono, ensure_corpus
from benchmarks.degrade import add_white_noise

SCALE_CACHE = DEFAULT_CACHE_DIR / "scale"
RESULTS = RESULTS_DIR / "scale.md"
HOURS = (10, 100, 1000, 10000)
DISTRACTOR_HOURS = 1.0
"""Length of one distractor content (a TV programme, say)."""
CONTENTS_PER_TABLE = 800
"""Distractor contents per posting table (about 2.4e8 postings, 1 GB)."""
CLIP_S = 5.0
SNR_DB = 10.0
DECODE_RATE = 8000
SEED = 20261126
UNSEEN_CLIPS_PER_TRACK = 4
_FREQUENCY_BITS = F1_BITS + RATIO_BITS
SIGNAL = AudioSignal()


@dataclass(frozen=True)
class Catalogue:
    """The real references: fingerprints, and the queries cut from them."""

    references: list[Fingerprints]
    queries: list[tuple[int, float, Fingerprints]]
    """(reference index, true offset in seconds, query fingerprints)."""
    background: list[Fingerprints]
    """Fingerprints of the never-indexed music: where distractor codes are drawn from."""
    unseen: list[tuple[int, Fingerprints]]
    """(background track, query fingerprints) of noisy clips of the never-indexed music."""


def real_catalogue(n_queries: int) -> Catalogue:
    """Fingerprint the corpus references and cut noisy clips (cached)."""
    path = SCALE_CACHE / f"catalogue-v2-{n_queries}.pkl"
    if path.exists():
        with open(path, "rb") as handle:
            cached: Catalogue = pickle.load(handle)
        return cached
    corpus = ensure_corpus()
    references = [SIGNAL.fingerprint_media(track.path) for track in corpus.references]
    rng = np.random.default_rng(SEED)
    queries = _reference_clips(corpus.references, n_queries, rng)
    background = [SIGNAL.fingerprint_media(track.path) for track in corpus.negatives]
    unseen = [
        (number, _clip(track.path, rng)[1])
        for number, track in enumerate(corpus.negatives)
        for _ in range(UNSEEN_CLIPS_PER_TRACK)
    ]
    found = Catalogue(references, queries, background, unseen)
    SCALE_CACHE.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(found, handle)
    return found


def warm_queries(n_queries: int) -> list[tuple[int, float, Fingerprints]]:
    """Another ``n_queries`` noisy clips of the references, cut like the catalogue's (cached).

    Drawn with their own seed, so that the catalogue's clips stay as they are:
    a process that has served the catalogue's clips matches these for the
    first time (a serving process's steady state on samples it has not seen).
    """
    path = SCALE_CACHE / f"warm-v1-{n_queries}.pkl"
    if path.exists():
        with open(path, "rb") as handle:
            cached: list[tuple[int, float, Fingerprints]] = pickle.load(handle)
        return cached
    corpus = ensure_corpus()
    found = _reference_clips(corpus.references, n_queries, np.random.default_rng([SEED, 1]))
    SCALE_CACHE.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(found, handle)
    return found


def _reference_clips(
    references: Sequence[Track], count: int, rng: np.random.Generator
) -> list[tuple[int, float, Fingerprints]]:
    """``count`` noisy clips of references picked at random: (reference, start s, fingerprints)."""
    picks = rng.choice(len(references), size=count, replace=True)
    return [(int(which), *_clip(references[which].path, rng)) for which in picks]


def _right(answer: Identification, which: int, offset_s: float) -> bool:
    """Whether a clip of reference ``which`` starting at ``offset_s`` was answered right."""
    if not answer.ranked:
        return False
    best = answer.ranked[0]
    return best.key == which + 1 and abs(best.offset_frames * SIGNAL.hop_s - offset_s) <= 0.5


def _clip(path: Path, rng: np.random.Generator) -> tuple[float, Fingerprints]:
    """A noisy clip from a random place of a track: its start (s) and query fingerprints."""
    samples = decode_mono(path, DECODE_RATE)
    length = round(CLIP_S * DECODE_RATE)
    start = int(rng.integers(0, max(1, samples.size - length)))
    clip = add_white_noise(samples[start : start + length], rng, SNR_DB)
    return start / DECODE_RATE, SIGNAL.fingerprint_samples(clip, DECODE_RATE, query=True)


def reference_segment(catalogue: Catalogue) -> Segment:
    """The real references as one segment, keys 1..61."""
    return build_segment(
        "audio",
        SIGNAL.hop_s,
        [(i + 1, fp.codes, fp.frames) for i, fp in enumerate(catalogue.references)],
    )


def postings_per_second(catalogue: Catalogue) -> float:
    """Density of the real references' postings."""
    seconds = sum(fp.duration_s for fp in catalogue.references)
    return sum(len(fp) for fp in catalogue.references) / seconds


def code_model(codes: NDArray[np.uint32]) -> NDArray[np.float64]:
    """Probability of every code under a model fitted to ``codes``.

    The anchor band and the frequency ratio jointly (the spectrum of music and
    its intervals), times the level step and the time difference jointly.
    An empirical histogram of 94 minutes would give the ~2 million codes of
    music that it never saw no probability at all, so that the distractors of
    ten thousand hours would leave a query's rarer codes to the true reference
    alone — far kinder to a search that favours rare codes than real audio is.
    """
    frequency, level_time = _code_parts(codes)
    p_frequency = np.bincount(frequency, minlength=1 << _FREQUENCY_BITS) / codes.size
    p_level_time = np.bincount(level_time, minlength=1 << (CODE_BITS - _FREQUENCY_BITS))
    every_frequency, every_level_time = _code_parts(np.arange(1 << CODE_BITS, dtype=np.uint32))
    model = p_frequency[every_frequency] * (p_level_time[every_level_time] / codes.size)
    return np.asarray(model / model.sum(), dtype=np.float64)


def _code_parts(codes: NDArray[np.uint32]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The two frequency fields of each code, and its level and time fields."""
    codes = codes.astype(np.int64)
    frequency = (codes >> DT_BITS) & ((1 << _FREQUENCY_BITS) - 1)
    level = codes >> (DT_BITS + _FREQUENCY_BITS)
    return frequency, (level << DT_BITS) | (codes & ((1 << DT_BITS) - 1))


def model_check(catalogue: Catalogue) -> dict[str, Any]:
    """How well distractor code models predict the chance hits of real never-indexed audio.

    Each model is fitted on the first half of the never-indexed tracks; the
    clips of the other half are looked up among the real references (exact
    codes: every hit is chance). A model predicts a clip's hits as the
    references' number of postings times the summed probability of its codes,
    and the share of its codes that no reference holds.
    """
    half = len(catalogue.background) // 2
    fitted = np.concatenate([fp.codes for fp in catalogue.background[:half]])
    held_out = [fp for track, fp in catalogue.unseen if track >= half]
    counts = np.bincount(
        np.concatenate([fp.codes for fp in catalogue.references]), minlength=1 << CODE_BITS
    ).astype(np.float64)
    postings = counts.sum()
    models = {
        "histogram": np.bincount(fitted, minlength=1 << CODE_BITS) / fitted.size,
        "factorized": code_model(fitted),
    }
    real = np.array([counts[fp.codes].sum() for fp in held_out])
    found: dict[str, Any] = {
        "clips": len(held_out),
        "real_hits_p50": float(np.median(real)),
        "real_absent": float(np.mean([np.mean(counts[fp.codes] == 0) for fp in held_out])),
    }
    for name, model in models.items():
        predicted = np.array([postings * model[fp.codes].sum() for fp in held_out])
        found[name] = {
            "hits_ratio_p50": float(np.median(predicted / np.maximum(real, 1.0))),
            "absent": float(
                np.mean([np.mean(np.exp(-postings * model[fp.codes])) for fp in held_out])
            ),
        }
    return found


def distractor_table(
    rng: np.random.Generator,
    first_key: int,
    contents: int,
    weights: NDArray[np.float64],
    density: float,
) -> PostingTable:
    """``contents`` one-hour distractors, postings already in code order (a dense table).

    ``weights`` is the probability of every code. Within a code, postings are
    in timeline order, as in a table built from a segment (contents in order):
    a content's postings under a code are then one sub-range
    (:meth:`acr.index.lookup.CodeLookup.search_contents`).
    """
    frames_each = round(DISTRACTOR_HOURS * 3600 / SIGNAL.hop_s)
    total = round(density * DISTRACTOR_HOURS * 3600) * contents
    counts = rng.multinomial(total, weights)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    postings = rng.integers(0, contents * frames_each, total, dtype=np.uint32)
    # Sort each code's postings, a block of codes at a time: (code, position) as one integer.
    step = 1 << 18
    for first in range(0, counts.size, step):
        last = min(first + step, counts.size)
        start, end = offsets[first], offsets[last]
        code = np.repeat(np.arange(last - first, dtype=np.uint64), counts[first:last])
        block = np.sort((code << np.uint64(32)) | postings[start:end].astype(np.uint64))
        postings[start:end] = (block & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return PostingTable(
        keys=np.arange(first_key, first_key + contents, dtype=np.int64),
        bases=np.arange(contents, dtype=np.int64) * frames_each,
        codes=None,
        offsets=offsets,
        postings=postings,
    )


def distractor_files(hours: float, catalogue: Catalogue) -> list[Path]:
    """Cached distractor tables holding ``hours`` of distractors (generated once)."""
    contents = max(0, round(hours / DISTRACTOR_HOURS))
    # Fitted on music that is not indexed: a model of the references
    # themselves would copy each query's own rare codes into every distractor.
    weights = code_model(np.concatenate([fp.codes for fp in catalogue.background]))
    density = postings_per_second(catalogue)
    files = []
    for number, first in enumerate(range(0, contents, CONTENTS_PER_TABLE)):
        size = min(CONTENTS_PER_TABLE, contents - first)
        path = SCALE_CACHE / f"distractors-sorted-{number:03d}-{size}.post"
        if not path.exists():
            rng = np.random.default_rng([SEED, number])
            key = 1_000_000 + first
            write_table(distractor_table(rng, key, size, weights, density), path)
        files.append(path)
    return files


def rss_mb() -> float:
    """Resident memory of this process now (anonymous and mapped file pages), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class CountingLookup:
    """A lookup that counts the hits it hands out (the work a match reads).

    ``hits`` counts every hit; ``verified`` those of the nominated contents
    read in full (:meth:`search_contents`), ``sampled`` those of looks over
    budget that nominate them, and ``over_budget`` such looks.
    """

    def __init__(self, lookup: CodeLookup) -> None:
        self.lookup = lookup
        self.hits = 0
        self.sampled = 0
        self.verified = 0
        self.over_budget = 0

    def search(
        self,
        codes: NDArray[np.uint32],
        frames: NDArray[np.uint32],
        *,
        max_flips: int = 1,
        max_hits: int | None = None,
        sample_hits: int | None = None,
    ) -> Hits:
        """The wrapped lookup's hits, counted."""
        found = self.lookup.search(
            codes, frames, max_flips=max_flips, max_hits=max_hits, sample_hits=sample_hits
        )
        self.hits += int(found.keys.size)
        if not found.complete:
            self.sampled += int(found.keys.size)
            self.over_budget += 1
        return found

    def search_contents(
        self,
        codes: NDArray[np.uint32],
        frames: NDArray[np.uint32],
        keys: NDArray[np.int64],
        *,
        max_flips: int = 1,
    ) -> Hits:
        """The wrapped lookup's hits of some contents, counted."""
        found = self.lookup.search_contents(codes, frames, keys, max_flips=max_flips)
        self.hits += int(found.keys.size)
        self.verified += int(found.keys.size)
        return found


def measure_size(
    hours: float,
    n_queries: int,
    *,
    max_hits: int | None,
    nomination_hits: int = NOMINATION_HITS,
    nominees: int = NOMINEES,
    resident: bool = True,
) -> dict[str, Any]:
    """One point of the curve, in this process: start-up, memory, latency, accuracy.

    ``max_hits`` is the search's budget of hits per lookup (None: unbounded);
    looks over it nominate ``nominees`` contents from ``nomination_hits``
    postings and read those contents in full. ``resident``: fault the tables
    in at start-up, as a serving process does (``CodeLookup.make_resident``).
    """
    catalogue = real_catalogue(n_queries)
    warm = warm_queries(n_queries)
    segment = reference_segment(catalogue)
    files = distractor_files(hours, catalogue)
    rss_before = rss_mb()
    started = time.perf_counter()
    lookup = CodeLookup()
    lookup.add_segment(segment)
    for path in files:
        lookup.add_table(map_table(path, CODE_BITS))
    if resident:
        lookup.make_resident()
    load_s = time.perf_counter() - started
    rss_loaded = rss_mb()
    durations = {i + 1: fp.duration_s for i, fp in enumerate(catalogue.references)}
    n_references = len(durations) + round(hours / DISTRACTOR_HOURS)
    distractor_frames = round(DISTRACTOR_HOURS * 3600 / SIGNAL.hop_s)

    def ref_frames(key: int) -> int:
        if key in durations:
            return round(durations[key] / SIGNAL.hop_s)
        return distractor_frames

    def search(query: Fingerprints, lookup: Any) -> Query:
        return Query(
            query,
            lookup,
            ref_frames,
            n_references,
            max_hits=max_hits,
            nomination_hits=nomination_hits,
            nominees=nominees,
        )

    counts = lookup.code_counts()
    latencies, read, exact_stored, correct = [], [], [], 0
    sampled, verified, nominated = [], [], 0
    for which, offset_s, query in catalogue.queries:
        exact_stored.append(int(counts[query.codes].sum()))
        counting = CountingLookup(lookup)
        begin = time.perf_counter()
        answer = identify(search(query, counting))
        latencies.append(time.perf_counter() - begin)
        read.append(counting.hits)
        sampled.append(counting.sampled)
        verified.append(counting.verified)
        nominated += counting.over_budget > 0
        correct += _right(answer, which, offset_s)

    negatives = catalogue.unseen[::2]
    negative_latencies, answered = [], 0
    for _, query in negatives:
        begin = time.perf_counter()
        answer = identify(search(query, lookup))
        negative_latencies.append(time.perf_counter() - begin)
        answered += bool(answer.ranked)

    # The same clips again: the process has now mapped the pages the queries
    # touch (a serving process's steady state; the first pass pays a page
    # fault for each page it touches first, even when it is in the page cache).
    again = []
    for _, _, query in catalogue.queries:
        begin = time.perf_counter()
        identify(search(query, lookup))
        again.append(time.perf_counter() - begin)
    # Clips this process has not seen, after all of the above.
    warm_latencies, warm_correct = [], 0
    for which, offset_s, query in warm:
        begin = time.perf_counter()
        answer = identify(search(query, lookup))
        warm_latencies.append(time.perf_counter() - begin)
        warm_correct += _right(answer, which, offset_s)

    def ms(q: float) -> float:
        return 1000 * float(np.percentile(latencies, q))

    table_bytes = sum(path.stat().st_size for path in files)
    return {
        "hours": hours,
        "indexed_hours": hours + sum(fp.duration_s for fp in catalogue.references) / 3600,
        "max_hits": max_hits,
        "nomination_hits": nomination_hits,
        "nominees": nominees,
        "postings": lookup.postings,
        "table_bytes": table_bytes,
        "load_s": load_s,
        "rss_before_mb": rss_before,
        "rss_loaded_mb": rss_loaded,
        "rss_after_mb": rss_mb(),
        "peak_rss_mb": peak_rss_mb(),
        "queries": len(catalogue.queries),
        "match_ms_p50": ms(50),
        "match_ms_p95": ms(95),
        "again_ms_p50": 1000 * float(np.median(again)),
        "warm_ms_p50": 1000 * float(np.median(warm_latencies)),
        "warm_ms_p95": 1000 * float(np.percentile(warm_latencies, 95)),
        "warm_top1": warm_correct / len(warm),
        "hits_read_p50": float(np.median(read)),
        "exact_stored_p50": float(np.median(exact_stored)),
        "sampled_p50": float(np.median(sampled)),
        "verified_p50": float(np.median(verified)),
        "nominated": nominated / len(latencies),
        "top1": correct / len(latencies),
        "negatives": len(negatives),
        "false_positives": answered / len(negatives),
        "no_match_ms_p50": 1000 * float(np.median(negative_latencies)),
    }


def curve(
    hours: Sequence[float],
    queries: int,
    max_hits: int | None,
    options: Sequence[str] = (),
    *,
    cold: bool = False,
) -> list[dict[str, Any]]:
    """Each size in a fresh process, so that its memory is its own.

    ``options`` are passed on (how looks over budget nominate, whether the
    tables are made resident); ``cold`` empties the page cache before each size.
    """
    points = []
    for size in hours:
        if cold:
            drop_page_cache()
        command = [sys.executable, "-m", "benchmarks.scale", "--one", str(size)]
        command += ["--queries", str(queries), "--max-hits", str(max_hits or 0), *options]
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            points.append({"hours": size, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        points.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(points[-1]), file=sys.stderr)
    return points


def drop_page_cache() -> None:
    """Empty the kernel's page cache, as after a reboot (root only; the whole machine's)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as error:
        raise SystemExit(f"--page-cache cold needs root on Linux: {error}") from None


# -- the loopback cluster ------------------------------------------------------------------------


def cluster_run(n_queries: int, seconds: float) -> dict[str, Any]:
    """Index the real catalogue, serve it in 4 shards × 2 replicas, kill a worker, scale 1 → 2."""
    import tempfile

    from acr import Index
    from acr.cluster.local import LocalCluster
    from acr.cluster.serving import ShardedIndex

    catalogue = real_catalogue(n_queries)
    work = Path(tempfile.mkdtemp(prefix="acr-scale-"))
    index_dir = work / "index"
    with Index.open(index_dir, create=True) as writer:
        writer.add_batch(
            [(ContentSpec(title=f"ref-{i}"), fp) for i, fp in enumerate(catalogue.references)]
        )
    queries = [query for _, _, query in catalogue.queries]
    with Index.open(index_dir, readonly=True) as single:
        expected = [single.match_fingerprints(q) for q in queries]
    found: dict[str, Any] = {}
    with LocalCluster(workers=2) as cluster:
        served = ShardedIndex(index_dir, shards=4, replicas=2)
        answers = [served.match_fingerprints(q) for q in queries]
        found["identical"] = sum(
            a.complete and _same(a.result, e) for a, e in zip(answers, expected, strict=True)
        )
        found["queries"] = len(queries)
        found["two_workers"] = _throughput(served, queries, seconds)
        during: list[tuple[int, Any, float]] = []
        stop = threading.Event()

        def keep_matching() -> None:
            while not stop.is_set():
                at = len(during) % len(queries)
                begin = time.perf_counter()
                answer = served.match_fingerprints(queries[at])
                during.append((at, answer, time.perf_counter() - begin))

        background = threading.Thread(target=keep_matching)
        background.start()
        time.sleep(seconds / 2)
        cluster.kill_worker(0)
        time.sleep(seconds)
        stop.set()
        background.join()
        found["kill"] = {
            "answers": len(during),
            "identical": sum(a.complete and _same(a.result, expected[i]) for i, a, _ in during),
            "incomplete": sum(not a.complete for _, a, _ in during),
            "failed_replica_answers": sum(a.failed_replicas > 0 for _, a, _ in during),
            "slowest_ms": 1000 * max(t for _, _, t in during),
        }
        served.close()
        cluster.wait_until_gone(0)
        single_node = ShardedIndex(index_dir, shards=4, replicas=1)
        found["one_worker"] = _throughput(single_node, queries, seconds)
        single_node.close()
    return found


def _same(left: Any, right: Any) -> bool:
    return bool(replace(left, elapsed_ms=0.0) == replace(right, elapsed_ms=0.0))


def _throughput(served: Any, queries: list[Fingerprints], seconds: float) -> dict[str, float]:
    """Matches and fan-out searches per second from 4 client threads, and match latency."""
    results: dict[str, float] = {}
    for label, work in (
        ("matches_per_s", lambda q: served.match_fingerprints(q)),
        ("searches_per_s", lambda q: served_search(served, q)),
    ):
        done: list[float] = []
        stop = time.perf_counter() + seconds

        def client(
            offset: int, work: Any = work, done: list[float] = done, stop: float = stop
        ) -> None:
            at = offset
            while time.perf_counter() < stop:
                begin = time.perf_counter()
                work(queries[at % len(queries)])
                done.append(time.perf_counter() - begin)
                at += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results[label] = len(done) / seconds
        results[label.replace("_per_s", "_ms_p50")] = 1000 * float(np.median(done))
    return results


def served_search(served: Any, query: Fingerprints) -> None:
    """One fan-out lookup of a query's codes, without matching."""
    from acr.cluster.serving import ShardedLookup

    lookup = ShardedLookup(
        served.replicas, served.timeout_s, served.snapshot, served.generation, served.counts
    )
    lookup.search(query.codes, query.frames)


# -- report -------------------------------------------------------------------------------------


def report(
    check: dict[str, Any],
    points: list[dict[str, Any]],
    cluster: dict[str, Any] | None,
    argv: list[str],
) -> str:
    """The results as Markdown."""
    machine = machine_info()
    lines = [
        "# Scale benchmark",
        "",
        f"`python -m benchmarks.scale {' '.join(argv)}` at commit `{git_commit()}` "
        f"(with uncommitted work of the tree), {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} "
        "UTC; "
        f"{machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gb']:.0f} GB, "
        f"load average at start {machine['load_average_at_start'][0]:.1f} "
        "(the machine is shared; latencies move by 2x between runs).",
        "",
        "## Distractor model",
        "",
        f"Fitted on half of the never-indexed tracks; {check['clips']} noisy 5 s clips of the "
        "other half looked up among the real references (exact codes; every hit is chance): "
        f"real chance hits p50 {check['real_hits_p50']:,.0f} a clip, "
        f"{100 * check['real_absent']:.1f} % of a clip's codes held by no reference.",
        "",
        "| model | predicted / real chance hits (p50) | predicted codes held by no reference |",
        "|---|---:|---:|",
    ]
    for name in ("histogram", "factorized"):
        lines.append(
            f"| {name} | {check[name]['hits_ratio_p50']:.2f} "
            f"| {100 * check[name]['absent']:.1f} % |"
        )
    lines += [
        "",
        "## One machine",
        "",
        '"budget" is the search\'s budget of hits per lookup (`acr.search.HIT_BUDGET`; '
        '"none" reads every probe). "hits read" counts every hit the matches\' lookups '
        'returned; "exact hits stored" is what an unbudgeted exact-code lookup of the same '
        'clip would return. "never-indexed answered" is the share of never-indexed clips '
        'given an answer (confidence at least the default threshold). "nominated" is the '
        "share of matches with a look over budget, answered by nominating contents from "
        'a sample of its rarest probes ("sampled") and reading every posting of those '
        'contents ("verified"); both are counted in "hits read". "again p50" matches the '
        "same clips a second time in the same process, whose mappings are then in place; "
        '"warm" matches as many other clips, never seen by the process, after all the '
        'rest (a serving process\'s steady state). "start-up" maps the tables and, '
        "unless `--not-resident`, faults them into the process (`CodeLookup.make_resident`, "
        "as a serving process does before it reports ready); the page cache holds them "
        "unless `--page-cache cold`, which empties it before each size, as after a reboot.",
        "",
        "| hours | budget | nominees (sample) | postings | tables on disk | start-up "
        "| RSS after start-up | RSS after queries | match p50 | match p95 | again p50 "
        "| warm p50 | warm p95 | warm top-1 "
        "| hits read p50 "
        "| sampled p50 | verified p50 | nominated | exact hits stored p50 "
        "| top-1 | never-indexed answered | no-match p50 | queries |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        if "error" in p:
            lines.append(f"| {p['hours']:,} | failed: {' '.join(p['error'])} |")
            continue
        budget = "none" if p["max_hits"] is None else f"{p['max_hits']:,}"
        nominees = f"{p['nominees']} ({p['nomination_hits']:,})" if p["max_hits"] else "-"
        lines.append(
            f"| {p['indexed_hours']:,.0f} | {budget} | {nominees} | {p['postings']:,} "
            f"| {p['table_bytes'] / 1e9:.2f} GB "
            f"| {p['load_s']:.2f} s | {p['rss_loaded_mb']:,.0f} MB | {p['rss_after_mb']:,.0f} MB "
            f"| {_ms(p['match_ms_p50'])} | {_ms(p['match_ms_p95'])} "
            f"| {_ms(p['again_ms_p50'])} "
            f"| {_ms(p['warm_ms_p50'])} | {_ms(p['warm_ms_p95'])} | {_percent(p['warm_top1'])} "
            f"| {_count(p['hits_read_p50'])} | {_count(p['sampled_p50'])} "
            f"| {_count(p['verified_p50'])} | {_percent(p['nominated'])} "
            f"| {_count(p['exact_stored_p50'])} "
            f"| {_percent(p['top1'])} | {_percent(p['false_positives'])} of {p['negatives']} "
            f"| {_ms(p['no_match_ms_p50'])} | {p['queries']} |"
        )
    if cluster:
        kill = cluster["kill"]
        lines += [
            "",
            "## Loopback Ray cluster",
            "",
            "Head + 2 worker nodes, 4 shards × 2 replicas, the real catalogue.",
            "",
            f"* Identical to single-node: {cluster['identical']} of {cluster['queries']} answers.",
            f"* Worker node 0 killed mid-run: {kill['answers']} answers, {kill['identical']} "
            f"identical to single-node, {kill['incomplete']} incomplete, "
            f"{kill['failed_replica_answers']} needed another replica; slowest "
            f"{kill['slowest_ms']:,.0f} ms.",
            "",
            "| worker nodes (replicas per shard) | matches/s | match p50 "
            "| fan-out searches/s | search p50 |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, key in (("1 (1)", "one_worker"), ("2 (2)", "two_workers")):
            r = cluster[key]
            lines.append(
                f"| {label} | {r['matches_per_s']:.1f} | {r['matches_ms_p50']:.1f} ms "
                f"| {r['searches_per_s']:.1f} | {r['searches_ms_p50']:.1f} ms |"
            )
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "not run" if value is None else f"{value:,.1f} ms"


def _percent(value: float | None) -> str:
    return "not run" if value is None else f"{100 * value:.1f} %"


def _count(value: float | None) -> str:
    return "not run" if value is None else f"{value:,.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--hours", type=float, nargs="*", default=list(HOURS))
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument(
        "--max-hits",
        type=int,
        default=HIT_BUDGET,
        help="the search's budget of hits per lookup (0: none); default the service's",
    )
    parser.add_argument(
        "--unbounded-up-to",
        type=float,
        default=1000,
        help="also match without a budget, up to this many hours",
    )
    parser.add_argument(
        "--nomination-hits",
        type=int,
        default=NOMINATION_HITS,
        help="postings a look over budget reads to nominate contents",
    )
    parser.add_argument(
        "--nominees", type=int, default=NOMINEES, help="contents a look over budget nominates"
    )
    parser.add_argument(
        "--page-cache",
        choices=("warm", "cold"),
        default="warm",
        help="cold: empty the page cache before each size, as after a reboot (root only)",
    )
    parser.add_argument(
        "--not-resident",
        action="store_true",
        help="leave the tables to fault in as they are read, instead of at start-up",
    )
    parser.add_argument("--no-cluster", action="store_true")
    parser.add_argument("--cluster-seconds", type=float, default=10.0)
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    max_hits = args.max_hits or None
    residency = ["--not-resident"] if args.not_resident else []
    nomination = ["--nomination-hits", str(args.nomination_hits), "--nominees", str(args.nominees)]
    cold = args.page_cache == "cold"
    if args.one is not None:
        found = measure_size(
            args.one,
            args.queries,
            max_hits=max_hits,
            nomination_hits=args.nomination_hits,
            nominees=args.nominees,
            resident=not args.not_resident,
        )
        print(json.dumps(found))
        return 0
    check = model_check(real_catalogue(args.queries))
    points = curve(args.hours, args.queries, max_hits, nomination + residency, cold=cold)
    if max_hits is not None:
        smaller = [size for size in args.hours if size <= args.unbounded_up_to]
        points += curve(smaller, args.queries, None, residency, cold=cold)
    cluster = None if args.no_cluster else cluster_run(args.queries, args.cluster_seconds)
    text = report(check, points, cluster, list(argv if argv is not None else sys.argv[1:]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
