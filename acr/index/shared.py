"""The read-only indexes (audio, video) shared by a server's request threads."""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Generic, TypeVar

from acr.errors import IndexStoreError
from acr.index.directory import CATALOGUE_FILE
from acr.index.store import Index
from acr.index.video import VideoIndex
from acr.kernels import compile_kernels
from acr.matching import DEFAULT_MIN_CONFIDENCE
from acr.results import MatchResult
from acr.signals.base import Fingerprints, MediaSource
from acr.signals.video import VideoHashes, VideoSignal
from acr.video_matching import DEFAULT_MIN_CONFIDENCE as DEFAULT_VIDEO_MIN_CONFIDENCE

IndexT = TypeVar("IndexT", Index, VideoIndex)

_log = logging.getLogger(__name__)


class _Shared(ABC, Generic[IndexT]):
    """A read-only index behind a lock, opened on first use."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._index: IndexT | None = None

    @abstractmethod
    def _load(self) -> IndexT:
        """Open the index read-only."""

    def _open(self) -> IndexT:
        if self._index is None:
            self._index = self._load()
        return self._index

    def close(self) -> None:
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None


class SharedIndex(_Shared[Index]):
    """A read-only :class:`Index` behind a lock, opened on first use.

    Decoding and fingerprinting a sample run outside the lock, in the calling
    thread; only the lookup, which refreshes and reads the index's in-memory
    tables, is serialised. Server processes scale matching out, not threads.
    """

    def _load(self) -> Index:
        compile_kernels()
        index = Index.open(self.directory, readonly=True)
        started = time.perf_counter()
        resident = index.lookup.make_resident()
        if resident:
            _log.info(
                "index tables resident: %.2f GB in %.1f s",
                resident / 1e9,
                time.perf_counter() - started,
            )
        return index

    def ready(self) -> bool:
        """Whether the index can be opened and read."""
        try:
            with self._lock:
                self._open().refresh()
        except IndexStoreError:
            return False
        return True

    def fingerprint_query(
        self, source: MediaSource, *, max_seconds: float | None, max_bytes: int | None
    ) -> Fingerprints:
        with self._lock:
            signal = self._open().signal
        return signal.fingerprint_query(source, max_seconds=max_seconds, max_bytes=max_bytes)

    def match_fingerprints(
        self,
        fingerprints: Fingerprints,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        started: float | None = None,
        warps: bool = True,
    ) -> MatchResult:
        started = time.perf_counter() if started is None else started
        with self._lock:
            return self._open().match_fingerprints(
                fingerprints,
                top_k=top_k,
                min_confidence=min_confidence,
                started=started,
                warps=warps,
            )


class SharedVideoIndex(_Shared[VideoIndex]):
    """A read-only :class:`~acr.index.video.VideoIndex` behind a lock, opened on first use.

    The service's video index lives in ``<index_dir>/video``. Until something
    is indexed there it does not exist, and :meth:`available` is false: samples
    are then matched on their sound alone.
    """

    def _load(self) -> VideoIndex:
        return VideoIndex.open(self.directory, readonly=True)

    def available(self) -> bool:
        """Whether there is a video index to match against."""
        if self._index is not None:
            return True
        return (self.directory / CATALOGUE_FILE).exists()

    def hash_query(
        self, source: MediaSource, *, max_seconds: float | None, max_bytes: int | None
    ) -> VideoHashes:
        """Decode and hash a sample (outside the lock)."""
        return VideoSignal().hash_query(source, max_seconds=max_seconds, max_bytes=max_bytes)

    def match_hashes(
        self,
        hashes: VideoHashes,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_VIDEO_MIN_CONFIDENCE,
        started: float | None = None,
    ) -> MatchResult:
        started = time.perf_counter() if started is None else started
        with self._lock:
            return self._open().match_hashes(
                hashes, top_k=top_k, min_confidence=min_confidence, started=started
            )
