"""Stage 3b: triplet codes — two pairs of one anchor, for a selective first look.

A pair code has 23 bits, and music spends them unevenly: a 5 s sample's
codes meet about 1,100 chance postings per indexed hour, so past a few
hundred hours the chance hits of a pair lookup, not the true ones, are what a
match costs. Two pairs that share an anchor peak describe three peaks — the
anchor's band, and each target's frequency ratio, time difference and level —
in 38 bits; measured on 40 clips of 5 s with white noise at 10 dB SNR, such
triplets meet about 11 chance postings per indexed hour (a hundredth) while
keeping half of the true hits (51 against 96 at the median), since the
targets of an anchor are its loudest, which a noisy sample keeps.

Triplets are derived from the pair codes alone — pairs of one anchor share
its frame and its band field, and no two peaks share both — so the index
builds them from the segments it already has, and client-side fingerprints
give them too. Only the triplets that a hash of the key puts in one half are kept, on both
sides: it halves the postings (and what they cost in memory) and the chance
hits, and keeps every surviving triplet of a reference findable.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from acr.signals.audio.codes import CODE_BITS, DT_BITS, F1_BITS, RATIO_BITS

TARGET_BITS = CODE_BITS - F1_BITS
"""A target's fields within a pair code: level, frequency ratio, time difference."""
TRIPLET_BITS = F1_BITS + 2 * TARGET_BITS
"""Width of a triplet key: the anchor band and two targets, 38 bits."""
BUCKET_BITS = CODE_BITS
"""Leading key bits that address a triplet table's directory, as a code does a pair table's."""
CHECK_BITS = TRIPLET_BITS - BUCKET_BITS
"""Trailing key bits stored beside each posting, to tell the keys of a bucket apart."""
_MASK = (1 << TRIPLET_BITS) - 1
_MULTIPLIER = 0x9E3779B97F4A7C15 & _MASK
"""Odd, so that multiplying by it modulo 2^38 is a bijection that spreads nearby keys."""
_SAMPLER = 0xC2B2AE3D27D4EB4F
"""Another odd multiplier: the leading bit of a key times it decides whether the key is kept,
independently of the bits that address and check it."""
_F1_SHIFT = RATIO_BITS + DT_BITS
_TARGET_LOW = (1 << _F1_SHIFT) - 1


def triplet_codes(
    codes: NDArray[np.uint32], frames: NDArray[np.uint32]
) -> tuple[NDArray[np.uint64], NDArray[np.uint32]]:
    """Combine the pair codes of each anchor two by two into triplet keys.

    Parameters
    ----------
    codes, frames : ndarray of uint32
        Pair codes and their anchor frames (:func:`~acr.signals.audio.codes.pair_codes`,
        possibly warped by :func:`~acr.signals.audio.warp.warp_codes`).

    Returns
    -------
    keys : ndarray of uint64
        Mixed triplet keys (:data:`TRIPLET_BITS` wide), the kept half.
    frames : ndarray of uint32
        The anchor's frame of each key, in non-decreasing order.
    """
    raw, anchors = raw_triplets(codes, frames)
    keys, kept = triplet_keys(raw)
    return keys, anchors[kept]


def raw_triplets(
    codes: NDArray[np.uint32], frames: NDArray[np.uint32]
) -> tuple[NDArray[np.int64], NDArray[np.uint32]]:
    """Every triplet of the pair codes, unmixed and unsampled, with its anchor's frame.

    Returns
    -------
    raw : ndarray of int64
        ``band << 30 | low_target << 15 | high_target`` (see :func:`triplet_keys`).
    frames : ndarray of uint32
        The anchor's frame of each triplet, in non-decreasing order.
    """
    values = codes.astype(np.int64)
    band = (values >> _F1_SHIFT) & ((1 << F1_BITS) - 1)
    target = ((values >> (F1_BITS + _F1_SHIFT)) << _F1_SHIFT) | (values & _TARGET_LOW)
    anchor = (frames.astype(np.int64) << F1_BITS) | band
    order = np.lexsort((target, anchor))
    anchor, target = anchor[order], target[order]
    starts = np.flatnonzero(np.r_[True, anchor[1:] != anchor[:-1]]) if anchor.size else anchor
    sizes = np.diff(np.r_[starts, anchor.size])
    raws: list[NDArray[np.int64]] = [np.zeros(0, dtype=np.int64)]
    anchors: list[NDArray[np.int64]] = [np.zeros(0, dtype=np.int64)]
    for size in range(2, int(sizes.max(initial=0)) + 1):
        first = starts[sizes == size]
        for i in range(size):
            for j in range(i + 1, size):
                raws.append(
                    ((anchor[first] & ((1 << F1_BITS) - 1)) << (2 * TARGET_BITS))
                    | (target[first + i] << TARGET_BITS)
                    | target[first + j]
                )
                anchors.append(anchor[first])
    anchor_of = np.concatenate(anchors)
    by_frame = np.argsort(anchor_of >> F1_BITS, kind="stable")
    return np.concatenate(raws)[by_frame], (anchor_of[by_frame] >> F1_BITS).astype(np.uint32)


def triplet_keys(raw: NDArray[np.int64]) -> tuple[NDArray[np.uint64], NDArray[np.bool_]]:
    """The mixed keys of the kept triplets among ``raw`` ones, and which were kept.

    Parameters
    ----------
    raw : ndarray of int64
        ``band << 30 | low_target << 15 | high_target``: the anchor's band
        field and the two targets' fields, the smaller target first.

    Returns
    -------
    keys : ndarray of uint64
        Mixed keys of the kept triplets: a bijection of the raw key whose
        leading :data:`BUCKET_BITS` depend on every field.
    kept : ndarray of bool
        Which raw triplets were kept (about half, by a hash of the key).
    """
    kept = (raw.astype(np.uint64) * np.uint64(_SAMPLER)) >> np.uint64(63) == 0
    key = (raw[kept].astype(np.uint64) * np.uint64(_MULTIPLIER)) & np.uint64(_MASK)
    return key ^ (key >> np.uint64(TRIPLET_BITS // 2)), kept
