"""The per-frame hashes of a clip, and their client wire format."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

from acr.errors import FingerprintFormatError
from acr.signals.video.pdq import HASH_BYTES
from acr.signals.video.views import LAST_VIEW

__all__ = ["VideoHashes"]

_MAGIC: Final = b"ACRV"
_FORMAT_VERSION: Final = 1
_HEADER: Final = struct.Struct("<4sHHdI")
_BYTES_PER_HASH: Final = HASH_BYTES + 8 + 1 + 1


@dataclass(frozen=True)
class VideoHashes:
    """Perceptual hashes of the sampled frames of a clip, in time order.

    Several hashes may share a time: each is one view of the same frame
    (see :mod:`acr.signals.video.views`), named in :attr:`views`.

    Attributes
    ----------
    hashes : ndarray of uint8, shape (n, 32)
        256-bit PDQ hashes, in the byte order of PDQ's hexadecimal form.
    times_s : ndarray of float64, shape (n,)
        Presentation time of each hash's frame, from the clip's first frame.
    quality : ndarray of uint8, shape (n,)
        PDQ quality of each hash, 0 (flat) to 100.
    duration_s : float
        Duration of the clip the frames were sampled from.
    views : ndarray of uint8, shape (n,)
        View id of each hash (:data:`acr.signals.video.views.VIEWS`); left
        out, every hash is of the whole picture (view 0).
    """

    hashes: NDArray[np.uint8]
    times_s: NDArray[np.float64]
    quality: NDArray[np.uint8]
    duration_s: float
    views: NDArray[np.uint8] = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))

    def __post_init__(self) -> None:
        n = self.times_s.shape[0] if self.times_s.ndim == 1 else -1
        if self.views.size == 0 and n > 0:
            object.__setattr__(self, "views", np.zeros(n, dtype=np.uint8))
        if (
            self.hashes.shape != (n, HASH_BYTES)
            or self.quality.shape != (n,)
            or self.views.shape != (n,)
        ):
            raise ValueError(
                f"hashes must be (n, {HASH_BYTES}) with n times, qualities and views, got "
                f"{self.hashes.shape}, {self.times_s.shape}, {self.quality.shape} "
                f"and {self.views.shape}"
            )

    @classmethod
    def empty(cls, duration_s: float = 0.0) -> VideoHashes:
        """No hashes (every frame was flat), for a clip of `duration_s`."""
        return cls(
            hashes=np.zeros((0, HASH_BYTES), dtype=np.uint8),
            times_s=np.zeros(0, dtype=np.float64),
            quality=np.zeros(0, dtype=np.uint8),
            duration_s=duration_s,
        )

    def __len__(self) -> int:
        return int(self.times_s.shape[0])

    def to_bytes(self) -> bytes:
        """Serialize to the compact little-endian client wire format (42 bytes per hash)."""
        header = _HEADER.pack(_MAGIC, _FORMAT_VERSION, 0, self.duration_s, len(self))
        return b"".join(
            [
                header,
                np.ascontiguousarray(self.hashes, dtype=np.uint8).tobytes(),
                self.times_s.astype("<f8").tobytes(),
                self.quality.astype(np.uint8).tobytes(),
                self.views.astype(np.uint8).tobytes(),
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> VideoHashes:
        """Parse the output of :meth:`to_bytes`, validating every field.

        Raises
        ------
        FingerprintFormatError
            The payload is not a version-1 video hash payload, its length does
            not match its header, or a time, quality or the duration is invalid.
        """
        if len(data) < _HEADER.size:
            raise FingerprintFormatError("video hash payload is shorter than its header")
        magic, version, _, duration_s, count = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise FingerprintFormatError("not an ACR video hash payload (bad magic)")
        if version != _FORMAT_VERSION:
            raise FingerprintFormatError(f"unsupported video hash format version {version}")
        expected = _HEADER.size + _BYTES_PER_HASH * count
        if len(data) != expected:
            raise FingerprintFormatError(
                f"video hash payload has {len(data)} bytes, header announces {expected}"
            )
        if not (np.isfinite(duration_s) and duration_s >= 0):
            raise FingerprintFormatError("video hash payload has an invalid duration")
        offset = _HEADER.size
        hashes = np.frombuffer(data, np.uint8, count * HASH_BYTES, offset).reshape(
            count, HASH_BYTES
        )
        offset += count * HASH_BYTES
        times = np.frombuffer(data, "<f8", count, offset).astype(np.float64)
        quality = np.frombuffer(data, np.uint8, count, offset + 8 * count)
        views = np.frombuffer(data, np.uint8, count, offset + 9 * count)
        if count and not (
            np.isfinite(times).all()
            and times.min() >= 0
            and times.max() <= duration_s
            and np.all(np.diff(times) >= 0)
        ):
            raise FingerprintFormatError(
                "video hash times must be finite, non-decreasing and within the duration"
            )
        if count and int(quality.max()) > 100:
            raise FingerprintFormatError("video hash quality must be 0..100")
        if count and int(views.max()) > LAST_VIEW:
            raise FingerprintFormatError(f"video hash views must be 0..{LAST_VIEW}")
        return cls(
            hashes=hashes.copy(),
            times_s=times,
            quality=quality.copy(),
            duration_s=duration_s,
            views=views.copy(),
        )
