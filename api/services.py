"""What the request handlers share: settings, database, index, rate limiter.

Built once per server process by :func:`build_services` and reached through
the dependencies in :mod:`api.deps`; tests build their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from acr.db.session import make_engine, session_factory
from acr.index.shared import SharedIndex, SharedVideoIndex
from acr.index.video import VIDEO_SUBDIRECTORY
from acr.ratelimit import RateLimiter, build_rate_limiter
from acr.settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    index: SharedIndex
    video_index: SharedVideoIndex
    """Pictures: ``<index_dir>/video``, beside the audio index's own files."""
    viewer_secret: bytes
    rate_limiter: RateLimiter

    def close(self) -> None:
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
        index=SharedIndex(settings.index_path),
        video_index=SharedVideoIndex(settings.index_path / VIDEO_SUBDIRECTORY),
        viewer_secret=settings.viewer_secret(),
        rate_limiter=build_rate_limiter(settings),
    )
