"""Compiling the core's Numba kernels (or loading them from its cache) before requests need them."""

from __future__ import annotations

import numpy as np

from acr.index.lookup import CodeLookup
from acr.index.segment import build_segment
from acr.matching import align
from acr.signals.audio.peaks import find_peaks


def compile_kernels() -> None:
    """Fingerprint, search and align tiny made-up inputs once, so that Numba compiles their kernels.

    Compiling takes a few seconds the first time on a machine (then it is
    cached beside the modules, and loading takes a fraction of that); a server
    calls this before it reports ready, so that no request waits for it.
    """
    spectrogram = np.random.default_rng(0).normal(size=(64, 256)).astype(np.float32)
    find_peaks(spectrogram, peaks_per_second=30.0)
    codes = np.arange(64, dtype=np.uint32) * 977
    frames = np.arange(64, dtype=np.uint32)
    lookup = CodeLookup()
    lookup.add_segment(build_segment("audio", 0.0, [(1, codes, frames)]))
    hits = lookup.search(codes, frames)
    lookup.search_contents(codes, frames, np.array([1], dtype=np.int64))
    align(hits, query_frames=64, ref_frames=lambda _: 64, n_references=1, min_confidence=0.0)
