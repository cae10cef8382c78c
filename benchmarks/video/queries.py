"""The fixed, seeded query set: which clips are cut, where, and how they are degraded.

Every query is a 5 s clip written as an H.264 file; the 1 s and 2 s columns
of the tables are the first seconds of the same files (hashed with
``max_seconds``). Positive clips are dealt round-robin over the references,
their starts drawn on the frame grid from a generator seeded by :data:`SEED`
and the clip's identity, redrawn while more than half of the clip is black or
a slate. Every degradation is applied to the same clip (a paired design).

Negatives are of three kinds: clips of never-indexed programmes rendered from
held-out material (``unseen``), black (``black``) and one frame of held-out
material frozen for the whole clip (``static``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import stream_of
from benchmarks.video.corpus import (
    FPS,
    FULL_CATALOGUE,
    HEIGHT,
    QUICK_CATALOGUE,
    WIDTH,
    Catalogue,
    Item,
)
from benchmarks.video.corpus import SEED as CORPUS_SEED
from benchmarks.video.degrade import REGISTRY, Degradation, get
from benchmarks.video.media import VideoClip, detail, encode_video, read_clip, thumbnails

SEED = CORPUS_SEED
"""Master seed of the query set (the catalogue's seed)."""

CLIP_S = 5
"""Length of every query file in seconds."""

LENGTHS_S: tuple[int, ...] = (1, 2, 5)
"""Query lengths reported (the first seconds of each file)."""

QUERY_CRF = 23
"""x264 quality of query files (degradations with a bit rate use it instead)."""

MAX_LOW_INFORMATION = 0.5
"""Positive clips with more than this share of black or slate are redrawn."""

MIN_DETAIL = 4.0
"""A frame is flat when its thumbnail's mean neighbour difference is below this
(levels of 255): black, slates, fades, and pans over the smooth gradients of some
``desktop-base`` artwork. Such pictures identify nothing."""

MAX_FLAT = 0.5
"""Clips (positives, unseen and static negatives) with more than this share of flat
frames are redrawn, like silent clips in the audio benchmark."""

NEGATIVE_KINDS: tuple[str, ...] = ("unseen", "black", "static")

NEGATIVE_DEGRADATIONS: tuple[str, ...] = (
    "clean",
    "reencode_low",
    "scale0.25",
    "logo",
    "caption",
    "phone",
)
"""Conditions applied to the negative clips."""

_MAX_DRAWS = 50
_KIND_CODES = {"positive": 1, "unseen": 2, "black": 3, "static": 4}
_START_STREAM = 0x5747
_HOST_STREAM = 0x4057


@dataclass(frozen=True)
class QueryPlan:
    """How many clips of each kind, from which catalogue.

    Attributes
    ----------
    name : str
        ``"full"`` or ``"quick"``.
    catalogue : Catalogue
        Items rendered and indexed.
    positive_clips : int
        Clips from the references; each gets every degradation.
    negative_clips : dict of str to int
        Clips of each negative kind; each gets every negative degradation.
    degradations : tuple of str
        Conditions of the positives, in table order.
    negative_degradations : tuple of str
        Conditions of the negatives.
    hd_seconds : float
        Length of the 1080p clip used to time extraction.
    """

    name: str
    catalogue: Catalogue
    positive_clips: int
    negative_clips: dict[str, int]
    degradations: tuple[str, ...] = tuple(d.name for d in REGISTRY)
    negative_degradations: tuple[str, ...] = NEGATIVE_DEGRADATIONS
    hd_seconds: float = 60.0

    @property
    def positive_queries(self) -> int:
        """Number of positive query files."""
        return self.positive_clips * len(self.degradations)

    @property
    def negative_queries(self) -> int:
        """Number of negative query files."""
        return sum(self.negative_clips.values()) * len(self.negative_degradations)


FULL_PLAN = QueryPlan(
    name="full",
    catalogue=FULL_CATALOGUE,
    positive_clips=50,
    negative_clips={"unseen": 16, "black": 4, "static": 6},
)
"""The full benchmark: 50 clips (one per reference) x every degradation."""

QUICK_PLAN = QueryPlan(
    name="quick",
    catalogue=QUICK_CATALOGUE,
    positive_clips=3,
    negative_clips={"unseen": 1, "black": 1, "static": 1},
    hd_seconds=20.0,
)
"""Smoke run: 5 references, 3 clips."""


@dataclass(frozen=True)
class ClipSpec:
    """One clip to cut, before its start is drawn.

    Attributes
    ----------
    kind : str
        ``"positive"``, ``"unseen"``, ``"black"`` or ``"static"``.
    item : int
        Index of the source item (references for positives, negatives
        otherwise; for black, unused).
    slot : int
        Index of the clip among those of its kind.
    """

    kind: str
    item: int
    slot: int


@dataclass(frozen=True)
class Query:
    """A degraded query written to a file, with its ground truth.

    Attributes
    ----------
    query_id : str
        Stable identifier, e.g. ``"p-017-crop5"``.
    spec : ClipSpec
        The clip it was cut from.
    degradation : str
        Name of the degradation applied.
    true_offset_s : float
        Start of the clip in its source item.
    path : Path
        The H.264 file.
    fps : float
        Its frame rate.
    size : tuple of int
        Its ``(width, height)``.
    """

    query_id: str
    spec: ClipSpec
    degradation: str
    true_offset_s: float
    path: Path
    fps: float
    size: tuple[int, int]


def assign_clips(count: int, items: int, kind: str) -> list[ClipSpec]:
    """Deal ``count`` clips of ``kind`` round-robin over ``items`` items."""
    return [ClipSpec(kind, slot % max(items, 1), slot) for slot in range(count)]


def rng_for(spec: ClipSpec, stream: int) -> np.random.Generator:
    """The generator of one purpose (``stream``) of one clip."""
    key = (_KIND_CODES[spec.kind], spec.slot, stream)
    return np.random.default_rng(np.random.SeedSequence(SEED, spawn_key=key))


def low_information_share(item: Item, start_s: float, length_s: float) -> float:
    """Share of ``[start_s, start_s + length_s)`` covered by black or slates."""
    covered = sum(
        max(0.0, min(end, start_s + length_s) - max(begin, start_s))
        for begin, end in item.low_information
    )
    return covered / length_s


def draw_start(item: Item, length_s: float, rng: np.random.Generator) -> float:
    """A start on the frame grid, redrawn while the clip is mostly black or slate.

    Returns
    -------
    float
        Start in seconds; after ``_MAX_DRAWS`` poor draws the best one is kept.
    """
    last_frame = int((item.duration_s - length_s) * FPS) - 1
    if last_frame < 0:
        raise ValueError(f"{item.name} is shorter than {length_s} s")
    best, best_share = 0.0, 2.0
    for _ in range(_MAX_DRAWS):
        start = int(rng.integers(0, last_frame + 1)) / FPS
        share = low_information_share(item, start, length_s)
        if share <= MAX_LOW_INFORMATION:
            return start
        if share < best_share:
            best, best_share = start, share
    return best


def host_clip(negatives: Sequence[Item], spec: ClipSpec) -> VideoClip:
    """Unrelated footage (a never-indexed programme) for picture-in-picture."""
    rng = rng_for(spec, _HOST_STREAM)
    item = negatives[int(rng.integers(len(negatives)))]
    return read_clip(item.path, draw_start(item, CLIP_S, rng), CLIP_S)


def source_clip(
    spec: ClipSpec, references: Sequence[Item], negatives: Sequence[Item]
) -> tuple[VideoClip, float]:
    """The clean clip of ``spec`` and its start in its source.

    Positives and ``unseen`` negatives are cut from the rendered items with
    the benchmark's decoder; ``black`` is all zeros and ``static`` one frame
    of a never-indexed programme repeated. Mostly flat clips are redrawn
    (after ``_MAX_DRAWS`` the least flat is kept).
    """
    n = round(CLIP_S * FPS)
    if spec.kind == "black":
        return VideoClip(np.zeros((n, HEIGHT, WIDTH, 3), dtype=np.uint8), FPS), 0.0
    items = references if spec.kind == "positive" else negatives
    item = items[spec.item]
    rng = rng_for(spec, _START_STREAM)
    best: tuple[VideoClip, float] | None = None
    best_flat = 2.0
    for _ in range(_MAX_DRAWS):
        start = draw_start(item, CLIP_S, rng)
        if spec.kind == "static":
            frame = read_clip(item.path, start, 1.0 / FPS).frames[:1]
            clip = VideoClip(np.repeat(frame, n, axis=0), FPS)
        else:
            clip = read_clip(item.path, start, CLIP_S)
        flat = flat_share(clip)
        if flat <= MAX_FLAT:
            return clip, start
        if flat < best_flat:
            best, best_flat = (clip, start), flat
    assert best is not None
    return best


def flat_share(clip: VideoClip) -> float:
    """Share of a clip's frames (every fifth) that are flat (see :data:`MIN_DETAIL`)."""
    sampled = VideoClip(clip.frames[::5], clip.fps)
    return float(np.mean(detail(thumbnails(sampled)) < MIN_DETAIL))


def degrade(
    clip: VideoClip, degradation: Degradation, spec: ClipSpec, host: VideoClip
) -> VideoClip:
    """Apply ``degradation`` to ``clip`` with the clip's own generator for it."""
    return degradation.apply(clip, rng_for(spec, stream_of(degradation.name)), host)


def write_query(path: Path, clip: VideoClip, degradation: Degradation) -> None:
    """Encode a degraded clip as the query file (H.264, CRF or the degradation's bit rate)."""
    encode_video(path, clip.frames, clip.fps, crf=QUERY_CRF, bitrate=degradation.bitrate)


def queries_for_clip(
    spec: ClipSpec,
    clean: VideoClip,
    start_s: float,
    degradations: Sequence[str],
    host: VideoClip,
    folder: Path,
) -> Iterator[Query]:
    """Degrade one clip every way and write each result to ``folder``.

    Yields
    ------
    Query
        One per degradation; its file is overwritten by the next clip's.
    """
    prefix = "p" if spec.kind == "positive" else f"n-{spec.kind}"
    for name in degradations:
        degradation = get(name)
        clip = degrade(clean, degradation, spec, host)
        path = folder / f"query-{name}.mp4"
        write_query(path, clip, degradation)
        height, width = clip.frames.shape[1:3]
        yield Query(
            query_id=f"{prefix}-{spec.slot:03d}-{name}",
            spec=spec,
            degradation=name,
            true_offset_s=start_s,
            path=path,
            fps=clip.fps,
            size=(width, height),
        )
