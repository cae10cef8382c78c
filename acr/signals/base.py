"""The one interface every signal kind implements.

Modelled on python-threatexchange's signal types: a signal kind knows how to
turn media into fingerprints and how to serialize them so a client can send
fingerprints instead of media. Storage and matching are shared: every kind
produces :class:`Fingerprints`, 32-bit codes with the frame at which each occurs.
A new signal kind is one new module implementing :class:`SignalKind`.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import numpy as np
from numpy.typing import NDArray

from acr.errors import FingerprintFormatError

MediaSource = str | os.PathLike[str] | bytes | BinaryIO
"""A file path, the bytes of a file, or an open binary file."""

_MAGIC = b"ACRF"
_FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sHH8sddI")


@dataclass(frozen=True)
class Fingerprints:
    """Fingerprint codes of one piece of media, ordered by frame.

    Attributes
    ----------
    kind : str
        Signal kind that produced the codes (``"audio"``, ``"video"``).
    codes : ndarray of uint32, shape (n,)
        Hash codes; equal codes are candidate matches.
    frames : ndarray of uint32, shape (n,)
        Frame index of each code's anchor, in units of ``hop_s``.
    hop_s : float
        Duration of one frame in seconds.
    duration_s : float
        Duration of the media the codes were taken from.
    """

    kind: str
    codes: NDArray[np.uint32]
    frames: NDArray[np.uint32]
    hop_s: float
    duration_s: float

    def __post_init__(self) -> None:
        if self.codes.shape != self.frames.shape or self.codes.ndim != 1:
            raise ValueError("codes and frames must be 1-D arrays of equal length")

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def to_bytes(self) -> bytes:
        """Serialize to a compact little-endian binary form (the client wire format)."""
        kind = self.kind.encode("ascii")
        if len(kind) > 8:
            raise ValueError("kind must be at most 8 ASCII characters")
        header = _HEADER.pack(
            _MAGIC, _FORMAT_VERSION, 0, kind.ljust(8, b"\0"), self.hop_s, self.duration_s, len(self)
        )
        body = io.BytesIO()
        body.write(header)
        body.write(self.codes.astype("<u4", copy=False).tobytes())
        body.write(self.frames.astype("<u4", copy=False).tobytes())
        return body.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Fingerprints:
        """Parse the output of :meth:`to_bytes`, validating every field."""
        if len(data) < _HEADER.size:
            raise FingerprintFormatError("fingerprint payload is shorter than its header")
        magic, version, _, kind_raw, hop_s, duration_s, count = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise FingerprintFormatError("not an ACR fingerprint payload (bad magic)")
        if version != _FORMAT_VERSION:
            raise FingerprintFormatError(f"unsupported fingerprint format version {version}")
        expected = _HEADER.size + 8 * count
        if len(data) != expected:
            raise FingerprintFormatError(
                f"fingerprint payload has {len(data)} bytes, header announces {expected}"
            )
        if not (np.isfinite(hop_s) and hop_s > 0 and np.isfinite(duration_s) and duration_s >= 0):
            raise FingerprintFormatError("fingerprint payload has an invalid hop or duration")
        body = np.frombuffer(data, dtype="<u4", offset=_HEADER.size)
        codes = body[:count].astype(np.uint32)
        frames = body[count:].astype(np.uint32)
        if count and np.any(np.diff(frames.astype(np.int64)) < 0):
            raise FingerprintFormatError("fingerprint frames must be in non-decreasing order")
        kind = kind_raw.rstrip(b"\0").decode("ascii", errors="replace")
        return cls(kind=kind, codes=codes, frames=frames, hop_s=hop_s, duration_s=duration_s)


class SignalKind(Protocol):
    """What a signal kind provides to the index, the indexer and the API."""

    name: str
    """Short identifier stored with every segment (``"audio"``)."""

    hop_s: float
    """Seconds per frame of the fingerprints this kind produces."""

    def fingerprint_media(
        self,
        source: MediaSource,
        *,
        max_seconds: float | None = None,
        max_bytes: int | None = None,
    ) -> Fingerprints:
        """Decode media and fingerprint it (reference side: sparse, compact codes)."""
        ...

    def fingerprint_query(
        self,
        source: MediaSource,
        *,
        max_seconds: float | None = None,
        max_bytes: int | None = None,
    ) -> Fingerprints:
        """Decode a sample and fingerprint it (query side: denser, for recall)."""
        ...
