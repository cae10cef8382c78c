"""The video index: a directory of immutable video segments, its catalogue, and matching.

An index directory (:mod:`acr.index.directory`, as the audio index's) whose
segments hold the per-frame hashes (:mod:`acr.index.video_segment`);
:meth:`VideoIndex.compact` rewrites the live hashes into one segment.

In the service the video index lives in ``<index_dir>/video``, beside the
audio index's own files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from acr.errors import IndexStoreError
from acr.index.catalogue import ContentRecord, ContentSpec
from acr.index.directory import IndexDirectory
from acr.index.store import DEFAULT_MAX_QUERY_BYTES, DEFAULT_MAX_QUERY_SECONDS
from acr.index.video_lookup import VideoLookup
from acr.index.video_segment import (
    VideoSegment,
    build_video_segment,
    merge_video_segments,
    read_video_segment,
    write_video_segment,
)
from acr.results import Match, MatchResult
from acr.signals.base import MediaSource
from acr.signals.video import KIND, QUERY_MIN_QUALITY, VideoHashes, VideoSignal
from acr.signals.video.views import FIRST_LOOK, LATER_LOOK, evidence_views
from acr.video_matching import (
    DECISIVE_RIVALS,
    DEFAULT_MIN_CONFIDENCE,
    VideoAlignment,
    align_video,
    concatenate_hits,
    decisive,
    shot_units,
    view_groups,
)

__all__ = ["VIDEO_SUBDIRECTORY", "VideoIndex", "VideoIndexStats"]

VIDEO_SUBDIRECTORY = "video"
"""Where the service keeps its video index, inside its index directory."""


@dataclass(frozen=True)
class VideoIndexStats:
    """Size of a video index."""

    contents: int
    hashes: int
    duration_s: float
    segments: int
    bytes_on_disk: int

    @property
    def hours(self) -> float:
        return self.duration_s / 3600.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "contents": self.contents,
            "hashes": self.hashes,
            "duration_s": self.duration_s,
            "hours": self.hours,
            "segments": self.segments,
            "bytes_on_disk": self.bytes_on_disk,
        }


class VideoIndex(IndexDirectory[VideoSegment, VideoHashes, VideoLookup]):
    """A video hash index on disk, loaded for matching.

    Open with :meth:`open`; use as a context manager. A writable index holds
    an exclusive lock on its directory; read-only instances may be open beside it.
    """

    noun = "video index"
    suffix = ".vseg"
    signal: ClassVar[VideoSignal] = VideoSignal()

    # -- the video signal's part of the directory -------------------------------------------

    def _new_lookup(self) -> VideoLookup:
        return VideoLookup()

    def _make_searchable(self, name: str, segment: VideoSegment | None) -> None:
        if segment is None:
            segment = read_video_segment(self._segment_path(name))
        self._lookup.add_segment(segment)
        self._loaded_segments.add(name)

    def _reference(self, path: str | os.PathLike[str]) -> VideoHashes:
        """Every reference view's hashes."""
        return self.signal.hash_reference(path)

    def _check_contents(self) -> None:
        kinds = {record.kind for record in self._records.values()}
        if kinds - {KIND}:
            raise IndexStoreError(
                f"{self.directory} holds {', '.join(sorted(kinds))} content, not video"
            )

    def _build_segment(self, contents: list[tuple[int, VideoHashes]]) -> VideoSegment:
        return build_video_segment(contents)

    def _write_segment(self, segment: VideoSegment, path: Path) -> int:
        return write_video_segment(segment, path)

    def _compacted(self, old: list[str]) -> list[VideoSegment]:
        """The live hashes in one segment."""
        parts = []
        for name in old:
            segment = read_video_segment(self._segment_path(name))
            parts += [
                segment.content(i)
                for i, key in enumerate(segment.keys)
                if int(key) in self._records
            ]
        return [merge_video_segments(parts)] if parts else []

    # -- writing ----------------------------------------------------------------------------

    def add_hashes(
        self,
        hashes: VideoHashes,
        *,
        content_id: str,
        title: str,
        metadata: dict[str, Any] | None = None,
    ) -> ContentRecord:
        """Add a content from hashes computed elsewhere (hash it with ``REFERENCE_VIEWS``)."""
        spec = ContentSpec(title=title, content_id=content_id, metadata=metadata or {})
        return self.add_batch([(spec, hashes)])[0]

    # -- reading ----------------------------------------------------------------------------

    def stats(self) -> VideoIndexStats:
        records = self._records.values()
        return VideoIndexStats(
            contents=len(self._records),
            hashes=sum(r.codes for r in records),
            duration_s=sum(r.duration_s for r in records),
            segments=len(self._loaded_segments),
            bytes_on_disk=self._bytes_on_disk(),
        )

    # -- matching ---------------------------------------------------------------------------

    def match(
        self,
        source: MediaSource,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        max_seconds: float | None = DEFAULT_MAX_QUERY_SECONDS,
        max_bytes: int | None = DEFAULT_MAX_QUERY_BYTES,
    ) -> MatchResult:
        """Identify a video sample given as a file path, file bytes or a binary file object."""
        started = time.perf_counter()
        hashes = self.signal.hash_query(source, max_seconds=max_seconds, max_bytes=max_bytes)
        return self.match_hashes(
            hashes, top_k=top_k, min_confidence=min_confidence, started=started
        )

    def match_hashes(
        self,
        hashes: VideoHashes,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        started: float | None = None,
    ) -> MatchResult:
        """Identify a sample from its frame hashes (computed here or on the client)."""
        started = time.perf_counter() if started is None else started
        if self.readonly:
            self.refresh()
        usable = hashes.quality >= QUERY_MIN_QUALITY
        query_hashes, views = hashes.hashes[usable], hashes.views[usable]
        times = hashes.times_s[usable]
        _, frame_of = np.unique(times, return_inverse=True)
        frames = frame_of.astype(np.int64)
        # The overscan crops of a frame are one view's evidence (see ``evidence_views``).
        evidence = evidence_views(views)
        interval = 1.0 / self.signal.fps
        total_cells = max(1, round(sum(r.duration_s for r in self._records.values()) / interval))
        durations = {key: record.duration_s for key, record in self._records.items()}
        align = partial(
            align_video,
            query_times_s=times,
            query_groups=view_groups(query_hashes, frames, evidence),
            query_views=evidence,
            interval_s=interval,
            total_cells=total_cells,
            sample_s=hashes.duration_s,
            reference_frames=self._lookup.frames,
            reference_s=durations,
            query_units=shot_units(query_hashes, frames, views),
        )
        # A cascade: the whole picture and the halves first (5 of the 20 reference indexes);
        # the crop windows, three quarters of the scan, only when those leave the answer
        # open (``decisive``).
        hits = self._lookup.search(query_hashes, views, within=FIRST_LOOK)
        ranked = align(hits, top_k=max(DECISIVE_RIVALS, top_k), min_confidence=0.0)
        if decisive(ranked, hashes.duration_s, durations):
            ranked = [a for a in ranked[: max(1, top_k)] if a.confidence >= min_confidence]
        else:
            more = self._lookup.search(query_hashes, views, within=LATER_LOOK)
            ranked = align(
                concatenate_hits([hits, more]), top_k=max(1, top_k), min_confidence=min_confidence
            )
        matches = [self._to_match(a, hashes.duration_s) for a in ranked]
        return MatchResult(
            matches=matches,
            segments=matches[:1],
            query_duration_s=hashes.duration_s,
            query_codes=len(hashes),
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
        )

    # -- internals --------------------------------------------------------------------------

    def _to_match(self, alignment: VideoAlignment, query_duration_s: float) -> Match:
        record = self._records[alignment.key]
        return Match(
            content_id=record.content_id,
            title=record.title,
            source=record.source,
            offset_s=alignment.offset_s,
            confidence=alignment.confidence,
            score=alignment.votes,
            speed=1.0,
            pitch=1.0,
            query_start_s=0.0,
            query_end_s=query_duration_s,
            duration_s=record.duration_s,
            metadata=record.metadata,
        )
