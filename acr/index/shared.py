"""One read-only index shared by a server's request threads."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from acr.errors import IndexStoreError
from acr.index.store import Index
from acr.matching import DEFAULT_MIN_CONFIDENCE
from acr.results import MatchResult
from acr.signals.base import Fingerprints, MediaSource


class SharedIndex:
    """A read-only :class:`Index` behind a lock, opened on first use.

    Decoding and fingerprinting a sample run outside the lock, in the calling
    thread; only the lookup, which refreshes and reads the index's in-memory
    tables, is serialised. Server processes scale matching out, not threads.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._index: Index | None = None

    def _open(self) -> Index:
        if self._index is None:
            self._index = Index.open(self.directory, readonly=True)
        return self._index

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

    def close(self) -> None:
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None
