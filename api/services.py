"""What the request handlers share: settings, database, index, rate limiter, key cache.

Built once per server process by :func:`build_services` and reached through
the dependencies in :mod:`api.deps`; tests build their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from acr.auth import KeyCache
from acr.db.session import make_engine, session_factory
from acr.index.shared import SharedIndex, SharedVideoIndex
from acr.index.video import VIDEO_SUBDIRECTORY
from acr.ratelimit import RateLimiter, build_rate_limiter
from acr.settings import Settings
from acr.signals.base import Fingerprints, MediaSource
from acr.streaming import Matcher
from api.lane import MatchLane


class AudioIndex(Matcher, Protocol):
    """What the routes need of the audio index: in-process or sharded on a cluster."""

    def ready(self) -> bool: ...

    def fingerprint_query(
        self, source: MediaSource, *, max_seconds: float | None, max_bytes: int | None
    ) -> Fingerprints: ...

    def close(self) -> None: ...


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    index: AudioIndex
    """``SharedIndex`` in-process, or ``ClusterIndex`` when ``ray_address`` is set."""
    video_index: SharedVideoIndex
    """Pictures: ``<index_dir>/video``, beside the audio index's own files."""
    viewer_secret: bytes
    rate_limiter: RateLimiter
    match_lane: MatchLane
    """The threads that identify samples in this process (see :func:`match_lane`)."""
    keys: KeyCache = field(default_factory=KeyCache)
    """API keys this process authenticated recently (see :class:`~acr.auth.KeyCache`)."""

    def close(self) -> None:
        self.match_lane.close()
        self.index.close()
        self.video_index.close()
        self.rate_limiter.close()
        self.engine.dispose()


def build_services(settings: Settings) -> Services:
    engine = make_engine(settings.database_url)
    return Services(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        index=_audio_index(settings),
        video_index=SharedVideoIndex(settings.index_path / VIDEO_SUBDIRECTORY),
        viewer_secret=settings.viewer_secret(),
        rate_limiter=build_rate_limiter(settings),
        match_lane=match_lane(settings),
    )


def match_lane(settings: Settings) -> MatchLane:
    """How many match requests one server process works on at once.

    Matching in-process is Python and numpy under one GIL: a second thread adds
    no CPU, it only slices the process's time, and on SQLite it makes the
    database's write lock wait for its holder to get the GIL back from a thread
    that is matching, while the other worker processes queue on that lock with
    idle cores. One lane per process (requests queue in arrival order) lets
    each worker run its write transactions at full speed. A cluster index waits
    on the network instead, so its lane is as wide as the thread pool.
    """
    return MatchLane(1 if not settings.ray_address else 40)


def _audio_index(settings: Settings) -> AudioIndex:
    if not settings.ray_address:
        return SharedIndex(settings.index_path)
    from acr.cluster.service import ClusterIndex  # Ray is imported only for a cluster

    return ClusterIndex(
        settings.index_path,
        address=settings.ray_address,
        shards=settings.shards,
        replicas=settings.replicas,
        timeout_s=settings.shard_timeout_s,
    )
