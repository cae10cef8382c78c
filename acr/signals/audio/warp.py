"""Query-side warps: the codes a sample would have had at another tempo and pitch.

A sample played 7 % fast has every peak 7 % higher and every interval between
peaks 7 % shorter than the reference's. A code keeps its pair's frequency
ratio, which such a change leaves alone, but its anchor band moves by
``36 · log2(1.07)`` ≈ 3.5 bands and its time difference shrinks by 7 %, so it
no longer meets the reference's code. Undoing a hypothesised change on the
codes themselves — shifting the anchor band, stretching the time difference
and the anchor frame — recovers them, without the audio, so client-side
fingerprints can be warped as well as decoded samples.

A warp is exact in band steps of ``2 ** (1/36)`` (1.94 %) for pitch; between
steps and for tempo, the one-bit-flip probes of the index absorb the rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from acr.signals.audio.codes import (
    DT_BITS,
    F1_BANDS_PER_OCTAVE,
    F1_BITS,
    RATIO_BITS,
    gray,
    ungray,
)

_DT_MASK = (1 << DT_BITS) - 1
_F1_MASK = (1 << F1_BITS) - 1
_F1_SHIFT = RATIO_BITS + DT_BITS


@dataclass(frozen=True)
class Warp:
    """A hypothesis about how the sample's playback differs from the reference.

    Attributes
    ----------
    tempo : float
        Reference seconds per sample second (1.05: the sample plays 5 % fast).
    pitch_bands : int
        Anchor bands (1/36 octave) the sample's pitch is above the reference's.
    coupled : bool
        Pitch and tempo changed together (a change of playback speed), so the
        pitch factor is the tempo that the alignment measures, not the band
        step the codes were shifted by.
    """

    tempo: float = 1.0
    pitch_bands: int = 0
    coupled: bool = False

    @property
    def pitch(self) -> float:
        """Frequency factor of the sample relative to the reference."""
        return float(2.0 ** (self.pitch_bands / F1_BANDS_PER_OCTAVE))

    @property
    def is_identity(self) -> bool:
        return self.tempo == 1.0 and self.pitch_bands == 0


IDENTITY = Warp()


def warp_grid(*, max_change: float = 0.10, tempo_step: float = 0.033) -> tuple[Warp, ...]:
    """The hypotheses searched when a sample does not match as it is.

    Three families, each covering ``±max_change``: speed (tempo and pitch
    together, as a sped-up broadcast or a turntable), pitch alone (a key
    change) and tempo alone (time-stretching). Pitch moves in whole bands;
    tempo in ``tempo_step``, which keeps a stretched time difference within
    one frame of the reference's for all but the longest pairs.

    Returns
    -------
    tuple of Warp
        Without the identity, nearest changes first.
    """
    max_bands = int(np.ceil(F1_BANDS_PER_OCTAVE * np.log2(1.0 + max_change) - 1e-9))
    max_steps = int(np.ceil(max_change / tempo_step - 1e-9))
    warps: list[Warp] = []
    for size in range(1, max(max_bands, max_steps) + 1):
        for sign in (1, -1):
            bands = sign * size
            if size <= max_bands:
                pitch = 2.0 ** (bands / F1_BANDS_PER_OCTAVE)
                warps.append(Warp(tempo=pitch, pitch_bands=bands, coupled=True))
                warps.append(Warp(tempo=1.0, pitch_bands=bands))
            if size <= max_steps:
                warps.append(Warp(tempo=1.0 + sign * size * tempo_step, pitch_bands=0))
    return tuple(warps)


def warp_codes(
    codes: NDArray[np.uint32], frames: NDArray[np.uint32], warp: Warp
) -> tuple[NDArray[np.uint32], NDArray[np.uint32]]:
    """The codes and anchor frames the reference would have where the sample has these.

    Parameters
    ----------
    codes, frames : ndarray of uint32
        Query codes and their anchor frames (:func:`~acr.signals.audio.codes.pair_codes`).
    warp : Warp
        The hypothesised change to undo.

    Returns
    -------
    codes, frames : ndarray of uint32
        Warped codes and frames, frames in non-decreasing order. Codes whose
        warped fields fall outside the code's range are dropped.
    """
    if warp.is_identity:
        return codes, frames
    values = codes.astype(np.int64)
    dt = ungray(values & _DT_MASK)
    f1 = ungray((values >> _F1_SHIFT) & _F1_MASK)
    warped_dt = np.rint(dt * warp.tempo).astype(np.int64)
    warped_f1 = f1 - warp.pitch_bands
    keep = (warped_dt >= 1) & (warped_dt <= _DT_MASK) & (warped_f1 >= 0) & (warped_f1 <= _F1_MASK)
    rest = values & ~((_F1_MASK << _F1_SHIFT) | _DT_MASK)
    warped = rest | (gray(warped_f1) << _F1_SHIFT) | gray(warped_dt)
    warped_frames = np.rint(frames.astype(np.float64) * warp.tempo)
    return warped[keep].astype(np.uint32), warped_frames[keep].astype(np.uint32)
