"""The service's view of a sharded index: what :class:`~acr.index.shared.SharedIndex` offers.

With ``ACR_RAY_ADDRESS`` set, the API matches through :class:`ClusterIndex`
instead of an in-process index. Fingerprinting stays in the API process; only
the lookups fan out to the shards. Ray is imported and the replicas are started
on first use, so the service starts without waiting for the cluster.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path

from acr.cluster.serving import ShardedIndex
from acr.errors import IndexStoreError, ShardsUnavailableError
from acr.matching import DEFAULT_MIN_CONFIDENCE
from acr.results import MatchResult
from acr.signals.audio import AudioSignal
from acr.signals.base import Fingerprints, MediaSource


class ClusterIndex:
    """A sharded index on a Ray cluster, opened on first use.

    Parameters
    ----------
    directory : path
        The index directory, on storage every node reads.
    address : str
        The Ray cluster (``HOST:PORT`` or ``auto``).
    shards, replicas : int
        How the index is split and how many copies of each part serve.
    timeout_s : float
        Longest wait for one replica before another is asked.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        address: str,
        shards: int,
        replicas: int,
        timeout_s: float,
    ) -> None:
        self.directory = Path(directory)
        self.address = address
        self._options = {"shards": shards, "replicas": replicas, "timeout_s": timeout_s}
        self._lock = threading.Lock()
        self._index: ShardedIndex | None = None
        self._signal = AudioSignal()

    def _open(self) -> ShardedIndex:
        with self._lock:
            if self._index is None:
                import ray

                if not ray.is_initialized():
                    ray.init(address=self.address, log_to_driver=False)
                self._index = ShardedIndex(
                    self.directory,
                    shards=int(self._options["shards"]),
                    replicas=int(self._options["replicas"]),
                    timeout_s=float(self._options["timeout_s"]),
                )
            return self._index

    def ready(self) -> bool:
        """Whether every shard has a live replica."""
        try:
            replicas = self._open().describe()
        except (IndexStoreError, OSError, RuntimeError):
            return False
        return len({r["shard"] for r in replicas}) == int(self._options["shards"])

    def fingerprint_query(
        self, source: MediaSource, *, max_seconds: float | None, max_bytes: int | None
    ) -> Fingerprints:
        return self._signal.fingerprint_query(source, max_seconds=max_seconds, max_bytes=max_bytes)

    def match_fingerprints(
        self,
        fingerprints: Fingerprints,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        started: float | None = None,
        warps: bool = True,
    ) -> MatchResult:
        """Match on every shard; refuse to answer from part of the index.

        Raises
        ------
        ShardsUnavailableError
            Some shard had no replica that answered: a partial answer could
            miss the right content, so none is given (HTTP 503, retry).
        """
        started = time.perf_counter() if started is None else started
        index = self._open()
        index.publish()  # contents committed since the last match are served from now on
        answer = index.match_fingerprints(
            fingerprints, top_k=top_k, min_confidence=min_confidence, warps=warps
        )
        if not answer.complete:
            missing = ", ".join(map(str, answer.missing_shards))
            raise ShardsUnavailableError(f"shards {missing} of the index did not answer; retry")
        return replace(answer.result, elapsed_ms=(time.perf_counter() - started) * 1000.0)

    def close(self) -> None:
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None
