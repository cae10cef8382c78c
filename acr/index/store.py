"""The audio index: a directory of immutable segments, its catalogue, and matching.

An index directory (see :mod:`acr.index.directory`) of audio segments (see
:mod:`acr.index.segment`), with one more folder::

    tables/            posting tables of the large segments, memory-mapped for lookups

:meth:`Index.compact` merges small segments into segments of up to
``COMPACT_TARGET_CODES`` codes.

A large segment's postings are searched from a table file memory-mapped from
``tables/`` (written the first time the segment is loaded, by whichever process
loads it), so opening an index of thousands of hours reads headers, not codes;
small segments are read and merged in memory. A table is derived data: a
missing or damaged one is rebuilt from its segment.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from acr.errors import FingerprintFormatError, IndexStoreError
from acr.index.catalogue import ContentRecord, ContentSpec
from acr.index.directory import IndexDirectory
from acr.index.files import delete_unlisted
from acr.index.lookup import CodeLookup
from acr.index.segment import (
    PostingTable,
    Segment,
    build_segment,
    map_table,
    read_segment,
    write_segment,
    write_table,
)
from acr.matching import DEFAULT_MIN_CONFIDENCE, Alignment
from acr.results import Match, MatchResult
from acr.search import Identification, Query, identify
from acr.signals.audio import AudioSignal
from acr.signals.audio.codes import CODE_BITS
from acr.signals.base import Fingerprints, MediaSource

if TYPE_CHECKING:
    from acr.monitor import Timeline

TABLE_DIR = "tables"
MAPPED_MIN_CODES = 1 << 20
"""Segments with at least this many codes (about 3.5 h of audio) are searched from
a memory-mapped table; smaller ones are merged in memory."""
DEFAULT_MAX_QUERY_SECONDS = 60.0
DEFAULT_MAX_QUERY_BYTES = 100 * 1024 * 1024
"""A minute of uncompressed 48 kHz stereo is 11 MB; a short video clip fits too."""

COMPACT_TARGET_CODES = 20_000_000


@dataclass(frozen=True)
class IndexStats:
    """Size of an index."""

    contents: int
    codes: int
    duration_s: float
    segments: int
    bytes_on_disk: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "contents": self.contents,
            "codes": self.codes,
            "duration_s": self.duration_s,
            "hours": self.duration_s / 3600.0,
            "segments": self.segments,
            "bytes_on_disk": self.bytes_on_disk,
        }


class Index(IndexDirectory[Segment, Fingerprints, CodeLookup]):
    """A fingerprint index on disk, loaded for matching.

    Open with :meth:`open`; use as a context manager. A writable index holds an
    exclusive lock on its directory; any number of read-only instances may be
    open beside it and pick up its commits with :meth:`refresh`.
    """

    noun = "index"
    suffix = ".seg"
    signal: ClassVar[AudioSignal] = AudioSignal()

    @property
    def lookup(self) -> CodeLookup:
        """The searchable postings (what :mod:`acr.search` looks codes up in)."""
        if self.readonly:
            self.refresh()
        return self._lookup

    # -- the audio signal's part of the directory -------------------------------------------

    def _new_lookup(self) -> CodeLookup:
        return CodeLookup()

    def _make_searchable(self, name: str, segment: Segment | None) -> None:
        """Add a live segment's postings to the lookup, from its mapped table if it has one."""
        table_path = self._table_path(name)
        if table_path.exists():
            try:
                self._lookup.add_table(map_table(table_path, CODE_BITS))
                self._loaded_segments.add(name)
                return
            except IndexStoreError:
                pass  # damaged: rebuilt below
        if segment is None:
            segment = read_segment(self._segment_path(name))
        if segment.codes.size < MAPPED_MIN_CODES:
            self._lookup.add_segment(segment)
        else:
            table = PostingTable.from_segment(segment, CODE_BITS)
            try:
                table_path.parent.mkdir(exist_ok=True)
                write_table(table, table_path)
                table = map_table(table_path, CODE_BITS)
            except OSError:
                pass  # a read-only directory: searched from memory
            self._lookup.add_table(table)
        self._loaded_segments.add(name)

    def _reference(self, path: str | os.PathLike[str]) -> Fingerprints:
        return self.signal.fingerprint_media(path)

    def _check_reference(self, reference: Fingerprints) -> None:
        if reference.kind != self.signal.name:
            raise ValueError(f"cannot index {reference.kind} fingerprints in an audio index")

    def _build_segment(self, contents: list[tuple[int, Fingerprints]]) -> Segment:
        return build_segment(
            self.signal.name,
            self.signal.hop_s,
            [(key, fp.codes, fp.frames) for key, fp in contents],
        )

    def _write_segment(self, segment: Segment, path: Path) -> int:
        return write_segment(segment, path)

    def _compacted(self, old: list[str]) -> Iterator[Segment]:
        """Live codes in segments of up to ``COMPACT_TARGET_CODES``, built one at a time."""
        groups: list[list[tuple[int, NDArray[np.uint32], NDArray[np.uint32]]]] = [[]]
        group_codes = 0
        for name in old:
            segment = read_segment(self._segment_path(name))
            for key, start, end in zip(segment.keys, segment.starts, segment.ends, strict=True):
                if int(key) not in self._records:
                    continue
                if group_codes and group_codes + (end - start) > COMPACT_TARGET_CODES:
                    groups.append([])
                    group_codes = 0
                groups[-1].append((int(key), segment.codes[start:end], segment.frames[start:end]))
                group_codes += int(end - start)
        return (
            build_segment(self.signal.name, self.signal.hop_s, group) for group in groups if group
        )

    def _delete_orphans(self) -> None:
        """Delete segment and table files of no committed batch (after a crash or a compaction)."""
        super()._delete_orphans()
        live = self._catalogue.live_segments()
        delete_unlisted(self.directory / TABLE_DIR, {self._table_path(name).name for name in live})

    def _table_path(self, name: str) -> Path:
        return self.directory / TABLE_DIR / f"{name}.post"

    # -- writing ----------------------------------------------------------------------------

    def add_samples(
        self, samples: NDArray[np.floating], sample_rate: int, spec: ContentSpec
    ) -> ContentRecord:
        """Fingerprint and add an in-memory mono signal."""
        fingerprints = self.signal.fingerprint_samples(samples, sample_rate, query=False)
        return self.add_batch([(spec, fingerprints)])[0]

    # -- reading ----------------------------------------------------------------------------

    def stats(self) -> IndexStats:
        records = self._records.values()
        tables = self.directory / TABLE_DIR
        on_disk = self._bytes_on_disk()
        if tables.is_dir():
            on_disk += sum(e.stat().st_size for e in tables.iterdir() if e.suffix == ".post")
        return IndexStats(
            contents=len(self._records),
            codes=sum(r.codes for r in records),
            duration_s=sum(r.duration_s for r in records),
            segments=len(self._loaded_segments),
            bytes_on_disk=on_disk,
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
        """Identify a sample given as a file path, file bytes or a binary file object."""
        started = time.perf_counter()
        fingerprints = self.signal.fingerprint_query(
            source, max_seconds=max_seconds, max_bytes=max_bytes
        )
        return self.match_fingerprints(
            fingerprints, top_k=top_k, min_confidence=min_confidence, started=started
        )

    def match_samples(
        self,
        samples: NDArray[np.floating],
        sample_rate: int,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    ) -> MatchResult:
        """Identify an in-memory mono sample at any rate."""
        started = time.perf_counter()
        fingerprints = self.signal.fingerprint_samples(samples, sample_rate, query=True)
        return self.match_fingerprints(
            fingerprints, top_k=top_k, min_confidence=min_confidence, started=started
        )

    def match_fingerprints(
        self,
        fingerprints: Fingerprints,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        started: float | None = None,
        warps: bool = True,
    ) -> MatchResult:
        """Identify a sample from its query fingerprints (e.g. computed on the client).

        ``warps=False`` skips the search over speed, pitch and tempo changes
        (see :mod:`acr.search`) when the sample does not match as it is.
        """
        started = time.perf_counter() if started is None else started
        if fingerprints.kind != self.signal.name or not np.isclose(
            fingerprints.hop_s, self.signal.hop_s
        ):
            raise FingerprintFormatError(
                f"fingerprints are {fingerprints.kind} with a {fingerprints.hop_s * 1000:g} ms "
                f"hop; this index holds {self.signal.name} with a "
                f"{self.signal.hop_s * 1000:g} ms hop"
            )
        if self.readonly:
            self.refresh()
        records = self._records

        def ref_frames(key: int) -> int:
            return round(records[key].duration_s / fingerprints.hop_s)

        found = identify(
            Query(fingerprints, self._lookup, ref_frames, max(1, len(records))),
            top_k=top_k,
            min_confidence=min_confidence,
            warps=warps,
        )
        return match_result(found, records, fingerprints, started)

    def monitor(self, source: MediaSource, **options: Any) -> Timeline:
        """Match a long recording into a timeline of segments; see :func:`acr.monitor.monitor`."""
        from acr.monitor import monitor

        return monitor(self, source, **options)


def match_result(
    found: Identification,
    records: Mapping[int, ContentRecord],
    fingerprints: Fingerprints,
    started: float,
) -> MatchResult:
    """The answer for a sample's alignments, with the references' records.

    Parameters
    ----------
    found : Identification
        What :func:`acr.search.identify` found.
    records : Mapping of int to ContentRecord
        The references by key.
    fingerprints : Fingerprints
        The sample's query fingerprints.
    started : float
        ``time.perf_counter()`` when the query arrived.
    """
    hop_s = fingerprints.hop_s

    def ref_frames(key: int) -> int:
        return round(records[key].duration_s / hop_s)

    def answer(alignment: Alignment, stretch: tuple[int, int]) -> Match:
        record = records[alignment.key]
        first, last = stretch
        return Match(
            content_id=record.content_id,
            title=record.title,
            source=record.source,
            offset_s=(alignment.offset_frames + alignment.scale * first) * hop_s,
            confidence=alignment.confidence,
            score=alignment.inliers,
            speed=alignment.scale,
            pitch=alignment.pitch,
            query_start_s=first * hop_s,
            query_end_s=(last + 1) * hop_s,
            duration_s=record.duration_s,
            metadata=record.metadata,
        )

    whole = (0, found.query_frames - 1)
    stretches = _tile(found.pieces, found.query_frames, ref_frames)
    return MatchResult(
        matches=[answer(a, whole) for a in found.ranked],
        segments=[answer(a, stretch) for a, stretch in zip(found.pieces, stretches, strict=True)],
        query_duration_s=fingerprints.duration_s,
        query_codes=len(fingerprints),
        elapsed_ms=(time.perf_counter() - started) * 1000.0,
    )


def _tile(
    pieces: list[Alignment], query_frames: int, ref_frames: Callable[[int], int]
) -> list[tuple[int, int]]:
    """Stretches of the sample for consecutive pieces, covering it without gaps.

    Each boundary goes midway between one piece's last inlier and the next
    one's first, then is moved, if needed, to where the earlier reference ends
    or the later one begins: a recording cannot be heard outside itself.
    """
    if not pieces:
        return []
    starts = [0]
    for before, after in itertools.pairwise(pieces):
        boundary = (before.query_end_frame + after.query_start_frame + 1) / 2
        after_begins = -after.offset_frames / after.scale
        before_ends = (ref_frames(before.key) - before.offset_frames) / before.scale
        if after_begins <= before_ends:
            boundary = min(max(boundary, after_begins), before_ends)
        starts.append(round(boundary))
    ends = [start - 1 for start in starts[1:]] + [query_frames - 1]
    return list(zip(starts, ends, strict=True))
