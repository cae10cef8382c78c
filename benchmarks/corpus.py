"""Real-music benchmark corpus fetched from Debian packages.

The references are the music of two free games (SuperTux and Extreme Tux
Racer, 61 Ogg Vorbis tracks, about 1.8 hours). The negatives, music that is
never indexed, are the soundtrack of Hedgewars (26 Ogg Vorbis tracks, about
94 minutes, a 145 MB package). Packages are fetched with ``apt-get download``
and unpacked with ``dpkg -x`` into a cache directory; nothing is installed, and
a second run with the same cache downloads nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

DEFAULT_CACHE_DIR = Path(__file__).resolve().parent / ".cache"
"""Where packages are downloaded and unpacked (gitignored)."""


@dataclass(frozen=True)
class PackageSource:
    """A Debian package and the folders inside it that hold music.

    Attributes
    ----------
    package : str
        Debian binary package name.
    music_dirs : tuple of str
        Folders, relative to the package root, searched recursively for music.
    """

    package: str
    music_dirs: tuple[str, ...]


REFERENCE_SOURCES: tuple[PackageSource, ...] = (
    PackageSource("supertux-data", ("usr/share/games/supertux2/music",)),
    PackageSource("extremetuxracer-data", ("usr/share/games/etr/music",)),
)
"""Packages whose music is indexed."""

NEGATIVE_SOURCES: tuple[PackageSource, ...] = (
    PackageSource("hedgewars-data", ("usr/share/games/hedgewars/Data/Music",)),
)
"""Packages whose music is never indexed (false-positive probes)."""

MUSIC_SUFFIXES = (".ogg", ".mp3")
_MARKER = ".unpacked.json"


@dataclass(frozen=True)
class PackageInfo:
    """A package that was fetched and unpacked.

    Attributes
    ----------
    package : str
        Package name.
    version : str
        Debian version of the ``.deb`` that was used.
    deb_file : str
        File name of the ``.deb`` in the cache.
    deb_bytes : int
        Size of the ``.deb``.
    """

    package: str
    version: str
    deb_file: str
    deb_bytes: int


@dataclass(frozen=True)
class Track:
    """One music file of the corpus.

    Attributes
    ----------
    path : Path
        Absolute path of the file in the cache.
    package : str
        Package the file came from.
    name : str
        Path relative to the package's music folder (a stable, readable id).
    duration_s : float
        Duration from the container's metadata (may differ slightly from the
        decoded length).
    """

    path: Path
    package: str
    name: str
    duration_s: float


@dataclass(frozen=True)
class Corpus:
    """References, negatives and the packages they came from.

    Attributes
    ----------
    references : tuple of Track
        Tracks to index, sorted by package and name.
    negatives : tuple of Track
        Tracks never indexed, sorted by package and name.
    packages : tuple of PackageInfo
        Every package used, references first.
    downloaded : tuple of str
        Packages that had to be downloaded during this call (empty when the
        cache was complete).
    """

    references: tuple[Track, ...]
    negatives: tuple[Track, ...]
    packages: tuple[PackageInfo, ...]
    downloaded: tuple[str, ...]

    @property
    def reference_hours(self) -> float:
        """Total duration of the references in hours."""
        return sum(t.duration_s for t in self.references) / 3600.0

    @property
    def negative_hours(self) -> float:
        """Total duration of the negatives in hours."""
        return sum(t.duration_s for t in self.negatives) / 3600.0


def _run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)


def _download_deb(package: str, deb_dir: Path) -> Path:
    """Download ``package``'s ``.deb`` into ``deb_dir`` with ``apt-get download``.

    Runs ``apt-get update`` once and retries if the first attempt fails (a fresh
    machine may have no package lists yet).
    """
    deb_dir.mkdir(parents=True, exist_ok=True)
    result = _run(["apt-get", "download", package], deb_dir)
    if result.returncode != 0:
        update = _run(["apt-get", "update"], deb_dir)
        if update.returncode != 0:
            raise RuntimeError(f"apt-get update failed:\n{update.stderr}")
        result = _run(["apt-get", "download", package], deb_dir)
    if result.returncode != 0:
        raise RuntimeError(f"apt-get download {package} failed:\n{result.stderr}")
    debs = sorted(deb_dir.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
    if not debs:
        raise RuntimeError(f"apt-get download {package} produced no .deb in {deb_dir}")
    return debs[-1]


def _deb_version(deb: Path) -> str:
    result = _run(["dpkg-deb", "--field", str(deb), "Version"], deb.parent)
    if result.returncode != 0:
        raise RuntimeError(f"dpkg-deb --field failed on {deb}:\n{result.stderr}")
    return result.stdout.strip()


def fetch_package(package: str, cache_dir: Path) -> tuple[PackageInfo, Path, bool]:
    """Make sure ``package`` is downloaded and unpacked in ``cache_dir``.

    Parameters
    ----------
    package : str
        Debian binary package name.
    cache_dir : Path
        Cache root; the ``.deb`` goes to ``debs/`` and its contents to
        ``pkgs/<package>/``.

    Returns
    -------
    info : PackageInfo
        Name, version and size of the package used.
    root : Path
        Folder the package was unpacked into (the ``.deb`` is deleted once
        unpacked; a marker file keeps its name, version and size).
    downloaded : bool
        Whether a download was needed.
    """
    root = cache_dir / "pkgs" / package
    marker = root / _MARKER
    if marker.is_file():
        data = json.loads(marker.read_text())
        return PackageInfo(**data), root, False
    deb_dir = cache_dir / "debs"
    existing = sorted(deb_dir.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
    downloaded = not existing
    deb = _download_deb(package, deb_dir) if downloaded else existing[-1]
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    result = _run(["dpkg", "-x", str(deb), str(root)], cache_dir)
    if result.returncode != 0:
        raise RuntimeError(f"dpkg -x {deb} failed:\n{result.stderr}")
    info = PackageInfo(
        package=package, version=_deb_version(deb), deb_file=deb.name, deb_bytes=deb.stat().st_size
    )
    marker.write_text(json.dumps(asdict(info), indent=2))
    deb.unlink()  # the unpacked tree and the marker are all later runs need
    return info, root, downloaded


def probe_duration(path: Path) -> float:
    """Duration of an audio file in seconds from its container metadata.

    Falls back to the audio stream's own duration, then to decoding.
    """
    with av.open(str(path)) as container:
        if container.duration is not None:
            return float(container.duration) / 1_000_000.0
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration) * float(stream.time_base)
    return float(decode_mono(path, 16_000).shape[0]) / 16_000.0


def _mono32(planes: NDArray[Any]) -> NDArray[np.float32]:
    """Average the channels of a planar ``(channels, n)`` block."""
    return np.ascontiguousarray(planes.mean(axis=0, dtype=np.float64), dtype=np.float32)


def decode_mono(path: Path, sample_rate: int) -> NDArray[np.float32]:
    """Decode an audio file to float32 mono at ``sample_rate`` with PyAV.

    This is the benchmark's own decoder, used to cut query clips; it is
    independent of the decoder inside the system under test.

    Parameters
    ----------
    path : Path
        Audio file.
    sample_rate : int
        Output sample rate in Hz.

    Returns
    -------
    ndarray of float32, shape (n,)
        Mono samples (channels averaged) at ``sample_rate``.
    """
    chunks: list[NDArray[np.float32]] = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        # Keep the channel layout and average the channels here: FFmpeg's own
        # down-mix adds channels at -3 dB each, which can exceed full scale.
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        for packet in container.demux(stream):
            if packet.size == 0 and packet.pts is not None:
                continue  # empty packet mid-stream (e.g. christmas_theme.ogg): FFmpeg rejects it
            for frame in packet.decode():
                chunks.extend(_mono32(out.to_ndarray()) for out in resampler.resample(frame))
        chunks.extend(_mono32(out.to_ndarray()) for out in resampler.resample(None))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _collect_tracks(package: str, root: Path, music_dirs: Sequence[str]) -> list[Track]:
    tracks: list[Track] = []
    for rel in music_dirs:
        base = root / rel
        if not base.is_dir():
            raise RuntimeError(f"{package}: expected music folder {rel} is missing")
        for path in sorted(base.rglob("*")):
            if path.is_file() and path.suffix.lower() in MUSIC_SUFFIXES:
                name = f"{package}:{path.relative_to(base).as_posix()}"
                tracks.append(Track(path, package, name, probe_duration(path)))
    return tracks


def ensure_corpus(cache_dir: Path = DEFAULT_CACHE_DIR) -> Corpus:
    """Fetch (if needed) and list the reference and negative music.

    Parameters
    ----------
    cache_dir : Path
        Cache root, created if missing.

    Returns
    -------
    Corpus
        Reference and negative tracks with the packages they came from.
    """
    cache_dir = cache_dir.resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    packages: list[PackageInfo] = []
    downloaded: list[str] = []
    groups: list[list[Track]] = []
    for sources in (REFERENCE_SOURCES, NEGATIVE_SOURCES):
        tracks: list[Track] = []
        for source in sources:
            info, root, was_downloaded = fetch_package(source.package, cache_dir)
            packages.append(info)
            if was_downloaded:
                downloaded.append(source.package)
            tracks.extend(_collect_tracks(source.package, root, source.music_dirs))
        groups.append(tracks)
    return Corpus(
        references=tuple(groups[0]),
        negatives=tuple(groups[1]),
        packages=tuple(packages),
        downloaded=tuple(downloaded),
    )
