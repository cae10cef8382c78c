"""Which structure should hold the code lookup? ``python -m benchmarks.index_choice``.

The code lookup (:mod:`acr.index.lookup`) answers one question: "which postings
have a code equal to, or one bit away from, one of these query codes?". This
benchmark builds every candidate structure over the codes of the real reference
corpus (ids = posting positions, as in the project) and measures, side by side
in one run, build time, memory, the time to look up one query's codes, and the
recall of the exact answer.

Data
    Every reference track of :func:`benchmarks.corpus.ensure_corpus` is decoded
    with the project's decoder at 8 kHz and fingerprinted with
    :func:`acr.signals.audio.fingerprint_reference`. :data:`N_QUERIES` clips of
    :data:`CLIP_S` seconds are cut from the same decoded tracks (round-robin over
    the tracks, start drawn from a generator seeded by :data:`SEED` and the clip
    slot), white noise is added at :data:`SNR_DB` dB SNR, and the clips are
    fingerprinted with :func:`acr.signals.audio.fingerprint_query`. Both code
    sets are cached in ``benchmarks/.cache/index_choice_codes.npz`` under a key
    made of the parameters that determine them (fingerprint constants, the
    SHA-256 of the fingerprinting code without its docstrings, track files,
    decoder versions and the query plan; no git state), so a rerun only
    measures.

Ground truth
    For each query code, the 25 codes at Hamming distance 0 or 1 (for 24-bit
    index vectors) are looked up in the sorted reference codes with
    :func:`numpy.searchsorted`. The brute-force :class:`faiss.IndexBinaryFlat`
    row checks that answer independently on its query subsample.

Timing
    One query's codes are looked up with a single call; conversion of the
    query codes to the structure's input format is not timed. FAISS runs with
    one OpenMP thread (as the project does); the current index is also timed
    with two threads. Medians and 95th percentiles are over queries. Slow
    candidates are measured on a fixed subsample of the queries, which the
    table states.

Memory
    The serialized size of a FAISS index (a proxy for its in-memory payload) or
    the bytes of a NumPy structure's arrays, plus the resident-memory growth of
    building the structure in a fresh Python process (``RSS Δ``), which also
    counts allocator and hash-table overhead.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import gc
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

import acr.signals.audio as audio
from acr.signals.audio import codes as codes_module
from acr.signals.audio import decode as decode_module
from acr.signals.audio import peaks as peaks_module
from acr.signals.audio import spectrogram as spectrogram_module
from acr.signals.audio.codes import CODE_BITS
from acr.signals.audio.decode import decode_audio
from benchmarks.common import RESULTS_DIR, cpu_model
from benchmarks.corpus import DEFAULT_CACHE_DIR, Track, ensure_corpus
from benchmarks.degrade import add_white_noise

SEED = 20261126
"""Seed of the query clips (starts and noise)."""

N_QUERIES = 200
"""Number of query clips."""

CLIP_S = 5.0
"""Length of a query clip in seconds."""

SNR_DB = 5.0
"""Signal-to-noise ratio of the white noise added to each clip."""

MIN_CLIP_DBFS = -45.0
"""Clips quieter than this (RMS, before noise) are redrawn: silence has no codes."""

MAX_DISTANCE = 1
"""The lookup's neighbourhood: codes within this Hamming distance."""

CODE_BYTES = (CODE_BITS + 7) // 8
"""Bytes per code in the index, as in :mod:`acr.index.lookup`."""

INDEX_BITS = 8 * CODE_BYTES
"""Width of the index's binary vectors (FAISS needs whole bytes); unused high bits are 0."""

N_PROBES = 1 + INDEX_BITS
"""A code and its one-bit neighbours: 25 for 24-bit vectors."""

SAMPLE_RATE = audio.SAMPLE_RATE
CACHE_FILE = DEFAULT_CACHE_DIR / "index_choice_codes.npz"
RESULTS_FILE = RESULTS_DIR / "index_choice.md"

BINARY_FLAT_QUERIES = 4
"""Queries measured on brute-force ``IndexBinaryFlat`` (seconds per query)."""

FLOAT_FLAT_QUERIES = 2
"""Queries measured on brute-force ``IndexFlatL2`` (over ten seconds per query)."""

MULTI_HASH_QUERIES = 8
"""Queries measured on the multi-hash indexes (up to a second per query)."""

MIN_QUERIES_FOR_P95 = 20
"""Below this many timed queries the 95th percentile is not reported."""

HNSW_M = 16
"""Graph degree of the HNSW candidate (FAISS's usual default range is 16-64)."""

HNSW_QUERIES = 100
"""Queries measured on the HNSW index (tens of milliseconds each)."""

WARMUP_QUERIES = 2
"""Queries looked up untimed before timing a structure (none for the ones that take
a second or more per query, where one cold call is noise next to the work)."""

_MAX_DRAWS = 50
_FLIPS = np.left_shift(np.uint32(1), np.arange(INDEX_BITS, dtype=np.uint32))

UInt8Array = NDArray[np.uint8]
UInt32Array = NDArray[np.uint32]
Int64Array = NDArray[np.int64]
Float32Array = NDArray[np.float32]


# ---------------------------------------------------------------------------
# Codes: the reference corpus and the noisy queries, cached.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeSets:
    """Reference and query codes of the benchmark.

    Attributes
    ----------
    reference : ndarray of uint32
        Codes of every reference posting, in posting order (track by track).
    reference_frames : ndarray of uint32
        Anchor frame of each reference posting in its track.
    reference_lims : ndarray of int64
        ``reference[reference_lims[t]:reference_lims[t + 1]]`` are track ``t``'s.
    reference_seconds : float
        Decoded duration of the references.
    reference_tracks : int
        Number of reference tracks.
    query : ndarray of uint32
        Codes of every query, concatenated.
    query_lims : ndarray of int64
        ``query[query_lims[i]:query_lims[i + 1]]`` are the codes of query ``i``.
    query_frames : ndarray of uint32
        Anchor frame of each query code in its clip.
    query_track : ndarray of int64
        Track each query clip was cut from.
    query_start : ndarray of int64
        Start of each clip in samples at :data:`SAMPLE_RATE`.
    key : str
        JSON of the parameters the codes were computed with.
    """

    reference: UInt32Array
    reference_frames: UInt32Array
    reference_lims: Int64Array
    reference_seconds: float
    reference_tracks: int
    query: UInt32Array
    query_lims: Int64Array
    query_frames: UInt32Array
    query_track: Int64Array
    query_start: Int64Array
    key: str

    @property
    def n_queries(self) -> int:
        """Number of queries."""
        return int(self.query_lims.shape[0] - 1)

    def query_codes(self, i: int) -> UInt32Array:
        """Codes of query ``i``."""
        return self.query[self.query_lims[i] : self.query_lims[i + 1]]


def _is_string_statement(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def code_digest() -> str:
    """SHA-256 of the code of the modules that turn audio into codes.

    The modules are parsed and their syntax trees hashed without docstrings
    (comments and formatting are not in the tree), so editing documentation
    does not invalidate the cache while any change of behaviour does.
    """
    digest = hashlib.sha256()
    for module in (audio, codes_module, peaks_module, spectrogram_module, decode_module):
        path = module.__file__
        if path is None:
            raise RuntimeError(f"{module.__name__} has no source file")
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                node.body = [s for s in node.body if not _is_string_statement(s)] or [ast.Pass()]
        digest.update(module.__name__.encode())
        digest.update(ast.dump(tree, annotate_fields=False).encode())
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def cache_key(tracks: Sequence[Track], n_queries: int) -> str:
    """The parameters that determine the codes, as canonical JSON.

    Parameters
    ----------
    tracks : sequence of Track
        Reference tracks, in posting order.
    n_queries : int
        Number of query clips.

    Returns
    -------
    str
        JSON text; equal keys mean equal codes.
    """
    params = {
        "format": 3,
        "sample_rate": SAMPLE_RATE,
        "hop_s": audio.HOP_S,
        "code_bits": CODE_BITS,
        "index_bits": INDEX_BITS,
        "reference_peaks_per_second": audio.REFERENCE_PEAKS_PER_SECOND,
        "reference_fanout": audio.REFERENCE_FANOUT,
        "query_peaks_per_second": audio.QUERY_PEAKS_PER_SECOND,
        "query_fanout": audio.QUERY_FANOUT,
        "fingerprint_code_sha256": code_digest(),
        "decoder_versions": {name: _version(name) for name in ("av", "soxr", "numpy", "scipy")},
        "tracks": [[t.name, t.path.stat().st_size] for t in tracks],
        "seed": SEED,
        "n_queries": n_queries,
        "clip_s": CLIP_S,
        "snr_db": SNR_DB,
        "min_clip_dbfs": MIN_CLIP_DBFS,
    }
    return json.dumps(params, sort_keys=True)


def _rms_dbfs(x: Float32Array) -> float:
    if x.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(np.square(x, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def _cut_clip(samples: Float32Array, slot: int) -> tuple[int, Float32Array]:
    """Draw a clip start for ``slot``, cut the clip and add the noise."""
    rng = np.random.default_rng([SEED, slot])
    length = round(CLIP_S * SAMPLE_RATE)
    last = samples.shape[0] - length
    if last < 0:
        raise ValueError(f"clip slot {slot}: track shorter than {CLIP_S} s")
    start = 0
    for _ in range(_MAX_DRAWS):
        start = int(rng.integers(0, last + 1))
        if _rms_dbfs(samples[start : start + length]) >= MIN_CLIP_DBFS:
            break
    clip = np.ascontiguousarray(samples[start : start + length])
    return start, add_white_noise(clip, rng, SNR_DB)


def compute_codes(tracks: Sequence[Track], n_queries: int, key: str) -> CodeSets:
    """Fingerprint the references and the noisy query clips.

    Parameters
    ----------
    tracks : sequence of Track
        Reference tracks, in posting order.
    n_queries : int
        Number of clips, dealt round-robin over the tracks at least
        :data:`CLIP_S` + 1 s long.
    key : str
        Cache key to record (see :func:`cache_key`).

    Returns
    -------
    CodeSets
        The codes, queries in slot order.
    """
    eligible = [i for i, t in enumerate(tracks) if t.duration_s >= CLIP_S + 1.0]
    if not eligible:
        raise RuntimeError("no reference track is long enough to cut query clips")
    slots_of: dict[int, list[int]] = {}
    for slot in range(n_queries):
        slots_of.setdefault(eligible[slot % len(eligible)], []).append(slot)

    reference: list[UInt32Array] = []
    reference_frames: list[UInt32Array] = []
    seconds = 0.0
    query_codes: list[UInt32Array | None] = [None] * n_queries
    query_frames: list[UInt32Array] = [np.zeros(0, dtype=np.uint32)] * n_queries
    query_track = np.zeros(n_queries, dtype=np.int64)
    query_start = np.zeros(n_queries, dtype=np.int64)
    started = time.perf_counter()
    for i, track in enumerate(tracks):
        samples = decode_audio(track.path, sample_rate=SAMPLE_RATE)
        seconds += samples.shape[0] / SAMPLE_RATE
        fingerprints = audio.fingerprint_reference(samples)
        reference.append(fingerprints.codes)
        reference_frames.append(fingerprints.frames)
        for slot in slots_of.get(i, []):
            start, clip = _cut_clip(samples, slot)
            query = audio.fingerprint_query(clip)
            query_codes[slot] = query.codes
            query_frames[slot] = query.frames
            query_track[slot] = i
            query_start[slot] = start
        print(
            f"\r  fingerprinting {i + 1}/{len(tracks)} tracks "
            f"({time.perf_counter() - started:.0f} s)",
            end="",
            file=sys.stderr,
            flush=True,
        )
    print(file=sys.stderr)
    done = [q for q in query_codes if q is not None]
    if len(done) != n_queries:
        raise RuntimeError("some query clips were not cut")
    lims = np.zeros(n_queries + 1, dtype=np.int64)
    np.cumsum([q.size for q in done], out=lims[1:])
    reference_lims = np.zeros(len(tracks) + 1, dtype=np.int64)
    np.cumsum([r.size for r in reference], out=reference_lims[1:])
    return CodeSets(
        reference=np.concatenate(reference).astype(np.uint32),
        reference_frames=np.concatenate(reference_frames).astype(np.uint32),
        reference_lims=reference_lims,
        reference_seconds=seconds,
        reference_tracks=len(tracks),
        query=np.concatenate(done).astype(np.uint32),
        query_lims=lims,
        query_frames=np.concatenate(query_frames).astype(np.uint32),
        query_track=query_track,
        query_start=query_start,
        key=key,
    )


def load_codes(path: Path, key: str | None) -> CodeSets | None:
    """The cached codes at ``path`` if their key is ``key`` (any key when ``None``)."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        stored = str(data["key"])
        if key is not None and stored != key:
            return None
        return CodeSets(
            reference=data["reference"].astype(np.uint32),
            reference_frames=data["reference_frames"].astype(np.uint32),
            reference_lims=data["reference_lims"].astype(np.int64),
            reference_seconds=float(data["reference_seconds"]),
            reference_tracks=int(data["reference_tracks"]),
            query=data["query"].astype(np.uint32),
            query_lims=data["query_lims"].astype(np.int64),
            query_frames=data["query_frames"].astype(np.uint32),
            query_track=data["query_track"].astype(np.int64),
            query_start=data["query_start"].astype(np.int64),
            key=stored,
        )


def save_codes(path: Path, codes: CodeSets) -> None:
    """Write ``codes`` to ``path`` (atomically replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        reference=codes.reference,
        reference_frames=codes.reference_frames,
        reference_lims=codes.reference_lims,
        reference_seconds=np.float64(codes.reference_seconds),
        reference_tracks=np.int64(codes.reference_tracks),
        query=codes.query,
        query_lims=codes.query_lims,
        query_frames=codes.query_frames,
        query_track=codes.query_track,
        query_start=codes.query_start,
        key=np.str_(codes.key),
    )
    tmp.replace(path)


def get_codes(n_queries: int, cache_file: Path) -> tuple[CodeSets, bool]:
    """Cached codes for the current parameters, computing them if needed.

    Returns
    -------
    codes : CodeSets
        Reference and query codes.
    cached : bool
        Whether they came from the cache.
    """
    corpus = ensure_corpus(cache_file.parent)
    key = cache_key(corpus.references, n_queries)
    cached = load_codes(cache_file, key)
    if cached is not None:
        return cached, True
    codes = compute_codes(corpus.references, n_queries, key)
    save_codes(cache_file, codes)
    return codes, False


# ---------------------------------------------------------------------------
# Ground truth: every posting within Hamming distance 1, by sorted-array lookup.
# ---------------------------------------------------------------------------


def probes(codes: UInt32Array) -> UInt32Array:
    """The code itself and its one-bit neighbours, shape ``(n, N_PROBES)``."""
    out = np.empty((codes.shape[0], N_PROBES), dtype=np.uint32)
    out[:, 0] = codes
    np.bitwise_xor(codes[:, None], _FLIPS[None, :], out=out[:, 1:])
    return out


def _expand(lo: Int64Array, counts: Int64Array, order: Int64Array) -> Int64Array:
    """``order[lo[k] : lo[k] + counts[k]]`` for every ``k``, concatenated."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    skip = np.cumsum(counts) - counts  # where each run starts in the output
    positions = np.arange(total, dtype=np.int64) + np.repeat(lo - skip, counts)
    result: Int64Array = order[positions]
    return result


def _lims(counts: Int64Array, n_codes: int) -> Int64Array:
    lims = np.zeros(n_codes + 1, dtype=np.int64)
    np.cumsum(counts.reshape(n_codes, -1).sum(axis=1), out=lims[1:])
    return lims


def sorted_lookup(
    sorted_codes: UInt32Array, order: Int64Array, codes: UInt32Array
) -> tuple[Int64Array, Int64Array]:
    """Postings within one bit of each code, from codes sorted with their positions.

    Parameters
    ----------
    sorted_codes : ndarray of uint32
        Reference codes in increasing order.
    order : ndarray of int64
        Posting position of each entry of `sorted_codes`.
    codes : ndarray of uint32
        Query codes.

    Returns
    -------
    lims : ndarray of int64, shape (n + 1,)
        ``ids[lims[i]:lims[i + 1]]`` answer ``codes[i]`` (the layout of a FAISS
        range search).
    ids : ndarray of int64
        Posting positions.
    """
    flat = probes(codes).reshape(-1)
    lo = np.searchsorted(sorted_codes, flat, side="left").astype(np.int64)
    hi = np.searchsorted(sorted_codes, flat, side="right").astype(np.int64)
    counts = hi - lo
    return _lims(counts, codes.shape[0]), _expand(lo, counts, order)


# ---------------------------------------------------------------------------
# Candidate structures.
# ---------------------------------------------------------------------------


def as_bytes(codes: UInt32Array) -> UInt8Array:
    """The low :data:`CODE_BYTES` bytes of each code, as FAISS binary vectors."""
    little = np.ascontiguousarray(codes.astype("<u4")).view(np.uint8).reshape(-1, 4)
    return np.ascontiguousarray(little[:, :CODE_BYTES])


def as_bits(codes: UInt32Array) -> Float32Array:
    """Each code as a 0/1 float vector of :data:`INDEX_BITS` dimensions.

    The squared L2 distance between two such vectors is the Hamming distance
    between the codes.
    """
    bits = np.unpackbits(as_bytes(codes), axis=1, bitorder="little")
    return np.ascontiguousarray(bits, dtype=np.float32)


class Structure(ABC):
    """A searchable set of codes whose ids are posting positions."""

    name: str = ""
    note: str = ""

    @abstractmethod
    def build(self, codes: UInt32Array) -> None:
        """Index ``codes``; posting ``i`` gets id ``i``."""

    @abstractmethod
    def prepare(self, codes: UInt32Array) -> Any:
        """Convert query codes to the structure's input format (not timed)."""

    @abstractmethod
    def search(self, prepared: Any) -> tuple[Int64Array, Int64Array]:
        """``(lims, ids)``: the postings within one bit of each query code."""

    @abstractmethod
    def nbytes(self) -> int:
        """Size of the structure in bytes (serialized size for FAISS)."""


class FaissBinaryHash(Structure):
    """``IndexBinaryHash(24, 24)``: one hash table keyed by the whole code."""

    def __init__(self, nflip: int) -> None:
        self.nflip = nflip
        self.name = f"IndexBinaryHash({INDEX_BITS}, {INDEX_BITS}) nflip={nflip}"
        self.note = "project's current lookup" if nflip == 1 else "exact matches only"
        self.index: Any = None

    def build(self, codes: UInt32Array) -> None:
        self.index = faiss.IndexBinaryHash(INDEX_BITS, INDEX_BITS)
        self.index.nflip = self.nflip
        self.index.add_with_ids(as_bytes(codes), np.arange(codes.shape[0], dtype=np.int64))

    def prepare(self, codes: UInt32Array) -> Any:
        return as_bytes(codes)

    def search(self, prepared: Any) -> tuple[Int64Array, Int64Array]:
        lims, _, ids = self.index.range_search(prepared, MAX_DISTANCE + 1)
        return lims.astype(np.int64), ids.astype(np.int64)

    def nbytes(self) -> int:
        return int(faiss.serialize_index_binary(self.index).size)


class FaissMultiHash(Structure):
    """``IndexBinaryMultiHash(24, nhash, b)``: ``nhash`` tables on disjoint substrings.

    With ``nhash >= MAX_DISTANCE + 1`` disjoint substrings, a code within
    ``MAX_DISTANCE`` bits agrees exactly with the query on at least one of them
    (pigeonhole), so ``nflip = 0`` is exact; candidates are then checked with the
    full Hamming distance against a flat copy of the codes.
    """

    def __init__(self, nhash: int, b: int, nflip: int = 0) -> None:
        self.nhash, self.b, self.nflip = nhash, b, nflip
        self.name = f"IndexBinaryMultiHash({INDEX_BITS}, {nhash}, {b}) nflip={nflip}"
        self.note = f"pigeonhole: exact for distance ≤ {nhash - 1}"
        self.index: Any = None

    def build(self, codes: UInt32Array) -> None:
        self.index = faiss.IndexBinaryMultiHash(INDEX_BITS, self.nhash, self.b)
        self.index.nflip = self.nflip
        self.index.add(as_bytes(codes))  # ids are positions: 0, 1, 2, ...

    def prepare(self, codes: UInt32Array) -> Any:
        return as_bytes(codes)

    def search(self, prepared: Any) -> tuple[Int64Array, Int64Array]:
        lims, _, ids = self.index.range_search(prepared, MAX_DISTANCE + 1)
        return lims.astype(np.int64), ids.astype(np.int64)

    def nbytes(self) -> int:
        return int(faiss.serialize_index_binary(self.index).size)


class FaissBinaryFlat(Structure):
    """``IndexBinaryFlat``: brute force, every posting compared with every query code."""

    name = "IndexBinaryFlat"
    note = "brute force; checks the ground truth"

    def __init__(self) -> None:
        self.index: Any = None

    def build(self, codes: UInt32Array) -> None:
        self.index = faiss.IndexBinaryFlat(INDEX_BITS)
        self.index.add(as_bytes(codes))

    def prepare(self, codes: UInt32Array) -> Any:
        return as_bytes(codes)

    def search(self, prepared: Any) -> tuple[Int64Array, Int64Array]:
        lims, _, ids = self.index.range_search(prepared, MAX_DISTANCE + 1)
        return lims.astype(np.int64), ids.astype(np.int64)

    def nbytes(self) -> int:
        return int(faiss.serialize_index_binary(self.index).size)


class FaissFloat(Structure):
    """A float index over the codes as 0/1 vectors (L2² = Hamming distance).

    Range search keeps L2² < 1.5, i.e. Hamming distance ≤ 1.
    """

    RADIUS = MAX_DISTANCE + 0.5

    def __init__(self, kind: str) -> None:
        if kind not in ("flat", "hnsw"):
            raise ValueError(f"unknown float index {kind!r}")
        self.kind = kind
        if kind == "flat":
            self.name = f"IndexFlatL2 ({INDEX_BITS} float dims)"
            self.note = "brute force on floats"
        else:
            self.name = f"IndexHNSWFlat({INDEX_BITS}, M={HNSW_M}) ({INDEX_BITS} float dims)"
            self.note = "approximate graph; efSearch=16 (default)"
        self.index: Any = None

    def build(self, codes: UInt32Array) -> None:
        if self.kind == "flat":
            self.index = faiss.IndexFlatL2(INDEX_BITS)
        else:
            self.index = faiss.IndexHNSWFlat(INDEX_BITS, HNSW_M)
        self.index.add(as_bits(codes))

    def prepare(self, codes: UInt32Array) -> Any:
        return as_bits(codes)

    def search(self, prepared: Any) -> tuple[Int64Array, Int64Array]:
        lims, _, ids = self.index.range_search(prepared, self.RADIUS)
        return lims.astype(np.int64), ids.astype(np.int64)

    def nbytes(self) -> int:
        return int(faiss.serialize_index(self.index).size)


class NumpySorted(Structure):
    """Codes sorted with their posting positions; 25 ``searchsorted`` probes per code."""

    name = "NumPy sorted array + searchsorted"
    note = "same method as the ground truth"

    def __init__(self) -> None:
        self.codes = np.zeros(0, dtype=np.uint32)
        self.order = np.zeros(0, dtype=np.int64)

    def build(self, codes: UInt32Array) -> None:
        self.order = np.argsort(codes, kind="stable").astype(np.int64)
        self.codes = codes[self.order]

    def prepare(self, codes: UInt32Array) -> Any:
        return codes

    def search(self, prepared: Any) -> tuple[Int64Array, Int64Array]:
        return sorted_lookup(self.codes, self.order, prepared)

    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.order.nbytes)


class NumpyDirectory(Structure):
    """Postings grouped by code with a dense directory of 2**24 + 1 offsets (CSR).

    A probe is two array reads instead of a binary search; the directory is a
    fixed cost (8 bytes per possible code) independent of the corpus.
    """

    name = "NumPy bucket directory (CSR)"
    note = f"extra baseline: 2^{INDEX_BITS}+1 int64 offsets"

    def __init__(self) -> None:
        self.offsets = np.zeros(0, dtype=np.int64)
        self.order = np.zeros(0, dtype=np.int64)

    def build(self, codes: UInt32Array) -> None:
        self.order = np.argsort(codes, kind="stable").astype(np.int64)
        counts = np.bincount(codes, minlength=1 << INDEX_BITS).astype(np.int64)
        self.offsets = np.zeros((1 << INDEX_BITS) + 1, dtype=np.int64)
        np.cumsum(counts, out=self.offsets[1:])

    def prepare(self, codes: UInt32Array) -> Any:
        return codes

    def search(self, prepared: Any) -> tuple[Int64Array, Int64Array]:
        flat = probes(prepared).reshape(-1)
        lo = self.offsets[flat]
        counts = self.offsets[flat + 1] - lo
        return _lims(counts, prepared.shape[0]), _expand(lo, counts, self.order)

    def nbytes(self) -> int:
        return int(self.offsets.nbytes + self.order.nbytes)


@dataclass(frozen=True)
class Candidate:
    """A structure to measure and how many queries to measure it on.

    Attributes
    ----------
    key : str
        Short identifier (also used by the fresh-process memory probe).
    make : callable
        Creates the empty structure.
    max_queries : int or None
        Measure on this many queries of a fixed, seeded subsample (``None``:
        all queries).
    rss_probe : bool
        Whether to measure the resident-memory growth in a fresh process.
    warmup : int
        Queries looked up once, untimed, before timing.
    """

    key: str
    make: Callable[[], Structure]
    max_queries: int | None = None
    rss_probe: bool = True
    warmup: int = WARMUP_QUERIES


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("hash0", lambda: FaissBinaryHash(nflip=0)),
    Candidate("hash1", lambda: FaissBinaryHash(nflip=1)),
    Candidate("multi2x12", lambda: FaissMultiHash(2, 12), max_queries=MULTI_HASH_QUERIES, warmup=0),
    Candidate("multi2x11", lambda: FaissMultiHash(2, 11), max_queries=MULTI_HASH_QUERIES, warmup=0),
    Candidate("flat", FaissBinaryFlat, max_queries=BINARY_FLAT_QUERIES, warmup=0),
    Candidate("floatflat", lambda: FaissFloat("flat"), max_queries=FLOAT_FLAT_QUERIES, warmup=0),
    Candidate("hnsw", lambda: FaissFloat("hnsw"), max_queries=HNSW_QUERIES, rss_probe=False),
    Candidate("sorted", NumpySorted),
    Candidate("directory", NumpyDirectory),
)
"""Every structure of the benchmark, in table order. The HNSW build takes about
a minute, so it is not repeated in a fresh process for the memory probe."""

CURRENT = "hash1"
"""The project's current structure (timed with one and two threads)."""


def candidate(key: str) -> Candidate:
    """The candidate called ``key``."""
    for c in CANDIDATES:
        if c.key == key:
            return c
    raise KeyError(key)


# ---------------------------------------------------------------------------
# Measurement.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """Measurements of one structure (and thread count).

    Attributes
    ----------
    key : str
        :attr:`Candidate.key`.
    name : str
        Structure.
    threads : int
        FAISS OpenMP threads during lookups.
    build_s : float
        Wall time to build over all reference codes.
    nbytes : int
        Serialized size (FAISS) or array bytes (NumPy).
    rss_bytes : int or None
        Resident-memory growth of the build in a fresh process.
    queries : int
        Queries timed.
    median_ms, p95_ms : float
        Lookup time of one query's codes.
    recall : float
        Fraction of the ground-truth (query code, posting) pairs returned.
    returned_median : float
        Median number of postings returned per query.
    extra : int
        Returned pairs farther than :data:`MAX_DISTANCE` (should be 0).
    note : str
        Remark for the table.
    """

    key: str
    name: str
    threads: int
    build_s: float
    nbytes: int
    rss_bytes: int | None
    queries: int
    median_ms: float
    p95_ms: float
    recall: float
    returned_median: float
    extra: int
    note: str


def _which_code(lims: Int64Array) -> Int64Array:
    """For each result of a range search, the index of the query code it answers."""
    which: Int64Array = np.repeat(np.arange(lims.shape[0] - 1, dtype=np.int64), np.diff(lims))
    return which


def _pairs(lims: Int64Array, ids: Int64Array, n_postings: int) -> Int64Array:
    """Each result as ``query_code_index * n_postings + posting``, sorted."""
    pairs: Int64Array = np.sort(_which_code(lims) * n_postings + ids)
    return pairs


def query_subsample(n_queries: int, count: int | None) -> list[int]:
    """A fixed, seeded choice of ``count`` query indices (all when ``None``)."""
    if count is None or count >= n_queries:
        return list(range(n_queries))
    rng = np.random.default_rng([SEED, 1])
    return sorted(int(i) for i in rng.permutation(n_queries)[:count])


def measure_lookups(
    structure: Structure,
    codes: CodeSets,
    which: Sequence[int],
    truth: Sequence[Int64Array],
    threads: int,
    warmup: int,
) -> tuple[list[float], float, float, int]:
    """Time and score one structure's lookups.

    Parameters
    ----------
    structure : Structure
        Built structure.
    codes : CodeSets
        Reference and query codes.
    which : sequence of int
        Queries to look up.
    truth : sequence of ndarray of int64
        Ground-truth pairs of every query (see :func:`_pairs`).
    threads : int
        FAISS OpenMP threads during the lookups (reset to 1 afterwards).
    warmup : int
        Queries of `which` looked up once, untimed, first.

    Returns
    -------
    times_s : list of float
        Lookup time of each query in `which`.
    recall : float
        Ground-truth pairs returned over ground-truth pairs.
    returned_median : float
        Median postings returned per query.
    extra : int
        Returned pairs outside the ground truth.
    """
    n = codes.reference.shape[0]
    prepared = [structure.prepare(codes.query_codes(i)) for i in which]
    faiss.omp_set_num_threads(threads)
    try:
        for p in prepared[:warmup]:
            structure.search(p)
        times: list[float] = []
        results: list[tuple[Int64Array, Int64Array]] = []
        for p in prepared:
            t0 = time.perf_counter()
            result = structure.search(p)
            times.append(time.perf_counter() - t0)
            results.append(result)
    finally:
        faiss.omp_set_num_threads(1)
    found = expected = extra = 0
    returned: list[int] = []
    for i, (lims, ids) in zip(which, results, strict=True):
        got = _pairs(lims, ids, n)
        hit = np.intersect1d(got, truth[i], assume_unique=True).shape[0]
        found += hit
        expected += truth[i].shape[0]
        extra += got.shape[0] - hit
        returned.append(int(ids.shape[0]))
    recall = found / expected if expected else 1.0
    return times, recall, float(np.median(returned)), extra


def _vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def rss_probe(key: str, fraction: float, cache_file: Path) -> int:
    """Resident-memory growth of building candidate ``key`` (run in a fresh process).

    Parameters
    ----------
    key : str
        :attr:`Candidate.key`.
    fraction : float
        Build over this leading fraction of the reference postings.
    cache_file : Path
        The codes cache written by the main run.

    Returns
    -------
    int
        ``VmRSS`` after the build minus before (the input codes are loaded and
        converted before the first reading).
    """
    faiss.omp_set_num_threads(1)
    codes = load_codes(cache_file, None)
    if codes is None:
        raise RuntimeError(f"{cache_file} is missing: run the benchmark first")
    n = round(codes.reference.shape[0] * fraction)
    reference = np.ascontiguousarray(codes.reference[:n])
    structure = candidate(key).make()
    structure.prepare(reference[:1])  # first-call allocations of the conversion
    gc.collect()
    before = _vm_rss()
    structure.build(reference)
    gc.collect()
    return _vm_rss() - before


def run_rss_probe(key: str, fraction: float, cache_file: Path) -> int | None:
    """Run :func:`rss_probe` in a fresh interpreter; ``None`` if it failed."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.index_choice",
        "--rss-probe",
        key,
        "--fraction",
        repr(fraction),
        "--cache-file",
        str(cache_file),
    ]
    # A fixed mmap threshold: large arrays get fresh pages and return them when freed,
    # so the reading is not hidden by memory the allocator kept from loading the codes.
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="131072")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, check=False)
    if result.returncode != 0:
        print(f"  RSS probe {key} failed:\n{result.stderr}", file=sys.stderr)
        return None
    return int(result.stdout.strip().splitlines()[-1])


def ground_truth(codes: CodeSets) -> list[Int64Array]:
    """Every (query code, posting) pair within :data:`MAX_DISTANCE` bits, per query."""
    reference = codes.reference
    order = np.argsort(reference, kind="stable").astype(np.int64)
    sorted_codes = reference[order]
    return [
        _pairs(*sorted_lookup(sorted_codes, order, codes.query_codes(i)), reference.shape[0])
        for i in range(codes.n_queries)
    ]


def measure(codes: CodeSets, truth: Sequence[Int64Array], cache_file: Path) -> list[Row]:
    """Build and measure every candidate.

    Parameters
    ----------
    codes : CodeSets
        Reference and query codes.
    truth : sequence of ndarray of int64
        Ground truth of every query (:func:`ground_truth`).
    cache_file : Path
        Codes cache, read by the fresh-process memory probes.

    Returns
    -------
    list of Row
        One row per candidate, plus the current index with two threads.
    """
    rows: list[Row] = []
    for cand in CANDIDATES:
        structure = cand.make()
        print(f"  {structure.name}: build", file=sys.stderr, flush=True)
        gc.collect()
        t0 = time.perf_counter()
        structure.build(codes.reference)
        build_s = time.perf_counter() - t0
        nbytes = structure.nbytes()
        which = query_subsample(codes.n_queries, cand.max_queries)
        for threads in (1, 2) if cand.key == CURRENT else (1,):
            print(
                f"  {structure.name}: {len(which)} queries, {threads} thread(s)",
                file=sys.stderr,
                flush=True,
            )
            times, recall, returned, extra = measure_lookups(
                structure, codes, which, truth, threads, cand.warmup
            )
            rows.append(
                Row(
                    key=cand.key,
                    name=structure.name,
                    threads=threads,
                    build_s=build_s,
                    nbytes=nbytes,
                    rss_bytes=None,
                    queries=len(which),
                    median_ms=1e3 * float(np.median(times)),
                    p95_ms=1e3 * float(np.percentile(times, 95)),
                    recall=recall,
                    returned_median=returned,
                    extra=extra,
                    note=structure.note if threads == 1 else "same index, 2 OpenMP threads",
                )
            )
        del structure
    print("  memory probes (fresh processes)", file=sys.stderr, flush=True)
    rss = {
        c.key: run_rss_probe(c.key, 1.0, cache_file) if c.rss_probe else None for c in CANDIDATES
    }
    return [replace(r, rss_bytes=rss[r.key]) for r in rows]


@dataclass(frozen=True)
class Growth:
    """Memory of one structure over a leading fraction of the postings.

    Attributes
    ----------
    name : str
        Structure.
    postings : int
        Postings indexed.
    distinct : int
        Distinct codes among them (hash buckets).
    nbytes : int
        Serialized size (FAISS) or array bytes (NumPy).
    rss_bytes : int or None
        Resident-memory growth of the build in a fresh process.
    """

    name: str
    postings: int
    distinct: int
    nbytes: int
    rss_bytes: int | None


def growth(codes: CodeSets, rows: Sequence[Row], cache_file: Path) -> list[Growth]:
    """Memory of the current index and the sorted arrays at 1/4, 1/2 and all postings.

    The full-size readings are taken from `rows` (:func:`measure`).
    """
    out: list[Growth] = []
    for key in (CURRENT, "sorted"):
        full = next(r for r in rows if r.key == key)
        for fraction in (0.25, 0.5, 1.0):
            n = round(codes.reference.shape[0] * fraction)
            reference = np.ascontiguousarray(codes.reference[:n])
            distinct = int(np.unique(reference).shape[0])
            if fraction == 1.0:
                out.append(Growth(full.name, n, distinct, full.nbytes, full.rss_bytes))
                continue
            structure = candidate(key).make()
            structure.build(reference)
            rss = run_rss_probe(key, fraction, cache_file)
            out.append(Growth(structure.name, n, distinct, structure.nbytes(), rss))
    return out


@dataclass(frozen=True)
class FlipGain:
    """What the one-bit probes add to the exact lookup, over all queries.

    Attributes
    ----------
    exact_pairs, flip_pairs : int
        Ground-truth pairs at distance 0 and at distance 1.
    exact_aligned, flip_aligned : int
        Of those, the pairs that point into the query's own track at the
        clip's true offset (within one frame): the hits that vote for the
        right answer.
    median_exact_aligned, median_all_aligned : float
        Per query, the median number of aligned pairs exactly and within one bit.
    """

    exact_pairs: int
    flip_pairs: int
    exact_aligned: int
    flip_aligned: int
    median_exact_aligned: float
    median_all_aligned: float


def flip_gain(codes: CodeSets, truth: Sequence[Int64Array]) -> FlipGain:
    """Split the ground truth into exact and one-bit pairs, and count aligned hits."""
    n = codes.reference.shape[0]
    track_of = np.repeat(
        np.arange(codes.reference_tracks, dtype=np.int64), np.diff(codes.reference_lims)
    )
    hop = round(audio.HOP_S * SAMPLE_RATE)
    exact_pairs = flip_pairs = exact_aligned = flip_aligned = 0
    per_exact: list[int] = []
    per_all: list[int] = []
    for i in range(codes.n_queries):
        pairs = truth[i]
        code_idx, posting = np.divmod(pairs, n)
        lo = codes.query_lims[i]
        q_codes = codes.query[lo + code_idx]
        q_frames = codes.query_frames[lo + code_idx].astype(np.int64)
        exact = q_codes == codes.reference[posting]
        offset = codes.query_start[i] / hop
        aligned = (track_of[posting] == codes.query_track[i]) & (
            np.abs(codes.reference_frames[posting].astype(np.int64) - q_frames - offset) <= 1.0
        )
        exact_pairs += int(exact.sum())
        flip_pairs += int((~exact).sum())
        exact_aligned += int((aligned & exact).sum())
        flip_aligned += int((aligned & ~exact).sum())
        per_exact.append(int((aligned & exact).sum()))
        per_all.append(int(aligned.sum()))
    return FlipGain(
        exact_pairs,
        flip_pairs,
        exact_aligned,
        flip_aligned,
        float(np.median(per_exact)),
        float(np.median(per_all)),
    )


# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU, cores, load and library versions of this run."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "faiss": getattr(faiss, "__version__", "unknown"),
        "numpy": np.__version__,
    }


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:,.1f} MB"


def _per_posting(n: int | None, postings: int) -> str:
    return "n/a" if n is None else f"{n / postings:.1f}"


def render(
    rows: Sequence[Row],
    growth_rows: Sequence[Growth],
    gain: FlipGain,
    codes: CodeSets,
    info: dict[str, Any],
    started: dt.datetime,
    wall_s: float,
    cached: bool,
) -> str:
    """The results as Markdown."""
    n = codes.reference.shape[0]
    hours = codes.reference_seconds / 3600.0
    q_codes = np.diff(codes.query_lims)
    lines = [
        "# Code lookup structures",
        "",
        "Written by `python -m benchmarks.index_choice`; see `docs/index-choice.md`.",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}; whole run {wall_s:.0f} s"
        f" ({'codes from the cache' if cached else 'codes computed'})",
        f"- machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"load average at start {info['load_average']}; {info['platform']}, "
        f"Python {info['python']}, faiss {info['faiss']}, numpy {info['numpy']}",
        f"- corpus: {codes.reference_tracks} reference tracks, {hours:.2f} h decoded, "
        f"{n:,} reference codes (postings), {n / codes.reference_seconds:.1f} per second "
        f"of audio, {np.unique(codes.reference).shape[0]:,} distinct codes",
        f"- queries: {codes.n_queries} clips of {CLIP_S:g} s cut from the references, "
        f"white noise at {SNR_DB:g} dB SNR, seed {SEED}; {int(q_codes.sum()):,} codes, "
        f"median {np.median(q_codes):.0f} per query",
        f"- codes: {CODE_BITS} bits used (acr.signals.audio.codes), indexed as"
        f" {INDEX_BITS}-bit binary vectors ({CODE_BYTES} bytes); fingerprinting code"
        f" SHA-256 {json.loads(codes.key)['fingerprint_code_sha256'][:12]} (docstrings excluded)",
        f"- ground truth: every (query code, posting) pair at Hamming distance ≤ {MAX_DISTANCE}"
        f" ({N_PROBES} probes per code, NumPy `searchsorted`)",
        "- lookup: all of one query's codes in one call; FAISS with 1 OpenMP thread unless"
        " stated; the slow structures are timed on a fixed subsample of the queries"
        f" (p95 only with ≥ {MIN_QUERIES_FOR_P95} queries)",
        "",
        "| structure | threads | build (s) | size | B/posting | RSS Δ B/posting "
        "| queries | median lookup (ms) | p95 (ms) | recall (≤1) "
        "| postings returned (median/query) | outside ≤1 | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        p95 = f"{r.p95_ms:.1f}" if r.queries >= MIN_QUERIES_FOR_P95 else "–"
        lines.append(
            f"| {r.name} | {r.threads} | {r.build_s:.2f} | {_mb(r.nbytes)} "
            f"| {r.nbytes / n:.1f} | {_per_posting(r.rss_bytes, n)} | {r.queries} "
            f"| {r.median_ms:.1f} | {p95} | {r.recall:.4f} "
            f"| {r.returned_median:,.0f} | {r.extra:,} | {r.note} |"
        )
    total = gain.exact_pairs + gain.flip_pairs
    aligned = gain.exact_aligned + gain.flip_aligned
    lines += [
        "",
        "Size: serialized bytes for FAISS (`serialize_index_binary` / `serialize_index`),"
        " array bytes for NumPy. RSS Δ: growth of resident memory while building the"
        " structure in a fresh process (includes hash-table and allocator overhead;"
        " n/a: not measured). Posting arrays (content key, frame) are common to all"
        " structures and not counted.",
        "",
        "## What the one-bit probes buy",
        "",
        "Ground-truth pairs split by distance; *aligned* pairs point into the query's own"
        " track at the clip's true offset (±1 frame), i.e. the votes for the right answer.",
        "",
        "| | pairs | share | aligned pairs | share of aligned | median aligned per query |",
        "|---|---:|---:|---:|---:|---:|",
        f"| distance 0 (exact lookup) | {gain.exact_pairs:,} | {gain.exact_pairs / total:.1%} "
        f"| {gain.exact_aligned:,} | {gain.exact_aligned / max(aligned, 1):.1%} "
        f"| {gain.median_exact_aligned:.0f} |",
        f"| distance 1 (flip probes) | {gain.flip_pairs:,} | {gain.flip_pairs / total:.1%} "
        f"| {gain.flip_aligned:,} | {gain.flip_aligned / max(aligned, 1):.1%} | |",
        f"| distance ≤ 1 | {total:,} | 100% | {aligned:,} | 100% | {gain.median_all_aligned:.0f} |",
        "",
        "## Memory growth with the number of postings",
        "",
        "| structure | postings | distinct codes | size | B/posting | RSS Δ | RSS Δ B/posting |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for g in growth_rows:
        lines.append(
            f"| {g.name} | {g.postings:,} | {g.distinct:,} | {_mb(g.nbytes)} "
            f"| {g.nbytes / g.postings:.1f} "
            f"| {_mb(g.rss_bytes)} | {_per_posting(g.rss_bytes, g.postings)} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``--rss-probe``, one memory probe).

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.index_choice",
        description="Compare code lookup structures on the real reference corpus.",
    )
    parser.add_argument("--queries", type=int, default=N_QUERIES, help="number of query clips")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE, help="Markdown result file")
    parser.add_argument("--cache-file", type=Path, default=CACHE_FILE, help="codes cache")
    parser.add_argument("--rss-probe", metavar="KEY", help=argparse.SUPPRESS)
    parser.add_argument("--fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_probe:
        print(rss_probe(args.rss_probe, args.fraction, args.cache_file))
        return 0

    faiss.omp_set_num_threads(1)
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    info = machine()
    print("index_choice: codes", file=sys.stderr, flush=True)
    codes, cached = get_codes(args.queries, args.cache_file)
    print(
        f"  {codes.reference.shape[0]:,} reference codes, {codes.n_queries} queries "
        f"({'cached' if cached else f'computed in {time.perf_counter() - t0:.0f} s'})",
        file=sys.stderr,
    )
    print("index_choice: ground truth", file=sys.stderr, flush=True)
    truth = ground_truth(codes)
    gain = flip_gain(codes, truth)
    print("index_choice: structures", file=sys.stderr, flush=True)
    rows = measure(codes, truth, args.cache_file)
    print("index_choice: memory growth", file=sys.stderr, flush=True)
    growth_rows = growth(codes, rows, args.cache_file)
    text = render(rows, growth_rows, gain, codes, info, started, time.perf_counter() - t0, cached)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
