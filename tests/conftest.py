"""Shared test fixtures: synthetic music written to real media files.

Every "song" is made at test time from a seed (:func:`synth_song`): random
melodies of harmonic notes with attack/decay envelopes, plus percussion clicks
on the beat. The same seed always gives the same song and different seeds give
unrelated songs, so a test can index some seeds and query with others.
:func:`write_audio` writes a song as WAV, FLAC or Ogg Vorbis.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: importable by the tests, their subprocesses and worker processes."""
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) does not add the cwd
    sys.path.insert(0, str(ROOT))

from acr.demo import DEMO_RATE, synth_song  # noqa: E402 - needs the path above

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from acr.settings import Settings
    from api.services import Services

SONG_RATE = DEMO_RATE
"""Sample rate of the synthetic songs (the core resamples to its own rate)."""

__all__ = ["SONG_RATE", "synth_song", "write_audio"]

_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}


def write_audio(path: Path, samples: NDArray[np.float32], rate: int = SONG_RATE) -> Path:
    """Write mono samples as WAV, FLAC or Ogg Vorbis, chosen by the suffix of ``path``."""
    fmt, subtype = _FORMATS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, format=fmt, subtype=subtype)
    return path


SongWriter = Callable[..., Path]


@pytest.fixture
def make_song(tmp_path: Path) -> SongWriter:
    """Factory fixture: ``make_song(name, seed, seconds=20.0)`` writes a song under tmp_path.

    ``name`` is a path relative to tmp_path whose suffix picks the format
    (``.wav``, ``.flac`` or ``.ogg``).
    """

    def make(name: str, seed: int, seconds: float = 20.0) -> Path:
        return write_audio(tmp_path / name, synth_song(seed, seconds))

    return make


# -- the HTTP service, on both databases ---------------------------------------------------

POSTGRES_ADMIN_URL = os.environ.get(
    "ACR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
"""Where the PostgreSQL tests make their own database (``.ci/run`` starts the server)."""


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run, dropped at the end."""
    from sqlalchemy import create_engine, text

    from acr.db.session import migrate

    name = f"acr_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:  # the suite is meant to run on both databases: say why not
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not usable ({error}); start it")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each service test runs once on SQLite (a new file) and once on PostgreSQL (emptied)."""
    from sqlalchemy import create_engine, text

    from acr.db.models import Base
    from acr.db.session import migrate

    if request.param == "sqlite":
        sqlite_url = f"sqlite:///{tmp_path / 'acr.db'}"
        migrate(sqlite_url)
        return sqlite_url
    url: str = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    with engine.begin() as connection:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Service settings on a temporary data directory with an empty index."""
    from acr.index.store import Index
    from acr.settings import Settings

    data = tmp_path / "data"
    result = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data,
        database_url=database_url,
        secret_key="test-secret",
        scheduler_interval_s=0.2,
        indexer_poll_s=0.1,
    )
    Index.open(result.index_path, create=True).close()
    return result


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    from api.services import build_services

    built = build_services(settings)
    yield built
    built.close()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    """A client of the app with its background work (indexing, schedule) running."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(services), raise_server_exceptions=False) as test_client:
        yield test_client


@dataclass(frozen=True)
class Keys:
    """Bearer headers for one key of each role and scope."""

    admin: dict[str, str]
    acme: dict[str, str]
    """campaign_manager of organisation ``acme``."""
    globex: dict[str, str]
    """campaign_manager of organisation ``globex``."""
    tv_app: dict[str, str]
    """viewer_app of app ``tv-app``."""
    other_app: dict[str, str]
    """viewer_app of app ``other-app``."""


@pytest.fixture
def keys(services: Services) -> Keys:
    from acr.auth import Role, create_key
    from acr.db.session import write_session

    def bearer(role: Role, **scope: str) -> dict[str, str]:
        with write_session(services.sessions) as session:
            created = create_key(session, role, **scope)
            session.commit()
        return {"Authorization": f"Bearer {created.secret}"}

    return Keys(
        admin=bearer(Role.ADMIN),
        acme=bearer(Role.CAMPAIGN_MANAGER, organisation="acme"),
        globex=bearer(Role.CAMPAIGN_MANAGER, organisation="globex"),
        tv_app=bearer(Role.VIEWER_APP, app="tv-app"),
        other_app=bearer(Role.VIEWER_APP, app="other-app"),
    )
