"""Tests of the audio fingerprints: codes, density, robustness and the wire format."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from conftest import SONG_RATE, synth_song
from numpy.typing import NDArray

import acr.signals.audio as audio
from acr.errors import FingerprintFormatError, MediaTooShortError, SilentMediaError
from acr.signals.audio import HOP_S, KIND, SAMPLE_RATE, AudioSignal
from acr.signals.audio.codes import CODE_BITS, gray
from acr.signals.audio.decode import resample
from acr.signals.base import Fingerprints

SONG_SECONDS = 20.0
SIGNAL = AudioSignal()


@pytest.fixture(scope="module")
def song() -> NDArray[np.float32]:
    return synth_song(7, SONG_SECONDS)


@pytest.fixture(scope="module")
def reference(song: NDArray[np.float32]) -> Fingerprints:
    return SIGNAL.fingerprint_samples(song, SONG_RATE, query=False)


@pytest.fixture(scope="module")
def query(song: NDArray[np.float32]) -> Fingerprints:
    return SIGNAL.fingerprint_samples(song, SONG_RATE, query=True)


def _pairs(fingerprints: Fingerprints) -> set[tuple[int, int]]:
    """(code, frame) pairs: a code that reappears at the same moment."""
    return set(zip(fingerprints.codes.tolist(), fingerprints.frames.tolist(), strict=True))


def _surviving(reference: Fingerprints, degraded: Fingerprints) -> float:
    """Fraction of the reference's (code, frame) pairs found again in ``degraded``."""
    kept = _pairs(reference)
    return len(kept & _pairs(degraded)) / len(kept)


# -- codes --------------------------------------------------------------------------------------


def test_fingerprints_are_deterministic(song: NDArray[np.float32], reference: Fingerprints) -> None:
    again = SIGNAL.fingerprint_samples(song.copy(), SONG_RATE, query=False)
    assert np.array_equal(again.codes, reference.codes)
    assert np.array_equal(again.frames, reference.frames)
    assert again.duration_s == reference.duration_s


def test_fingerprint_metadata(reference: Fingerprints, query: Fingerprints) -> None:
    for fingerprints in (reference, query):
        assert fingerprints.kind == KIND
        assert fingerprints.hop_s == HOP_S
        assert fingerprints.duration_s == pytest.approx(SONG_SECONDS, abs=1e-3)
        assert fingerprints.codes.dtype == np.uint32
        assert fingerprints.frames.dtype == np.uint32


def test_codes_fit_in_code_bits(reference: Fingerprints, query: Fingerprints) -> None:
    # Codes must fit the 3-byte FAISS vectors and segment records.
    assert CODE_BITS <= 24
    for fingerprints in (reference, query):
        assert len(fingerprints) > 0
        assert int(fingerprints.codes.max()) < 1 << CODE_BITS
        # The time-difference field (low 6 bits, Gray-coded dt >= 1) is never zero.
        assert np.all(fingerprints.codes & 0x3F)


def test_frames_are_non_decreasing_and_inside_the_signal(
    reference: Fingerprints, query: Fingerprints
) -> None:
    last_frame = SONG_SECONDS / HOP_S
    for fingerprints in (reference, query):
        assert np.all(np.diff(fingerprints.frames.astype(np.int64)) >= 0)
        assert int(fingerprints.frames.max()) < last_frame
        # Codes are spread over the whole song, not bunched at its start.
        assert int(fingerprints.frames.max()) > 0.9 * last_frame
        assert int(fingerprints.frames.min()) < 0.1 * last_frame


def test_reference_density_is_sane_and_query_is_denser(
    reference: Fingerprints, query: Fingerprints
) -> None:
    per_second = len(reference) / SONG_SECONDS
    assert 30.0 <= per_second <= 120.0
    assert len(query) > 2 * len(reference)
    # The dense query side holds nearly every pair the sparse reference side holds.
    assert _surviving(reference, query) >= 0.95


def _one_pass(samples: NDArray[np.float32]) -> Fingerprints:
    return audio._fingerprint(samples, audio.QUERY_PEAKS_PER_SECOND, audio.QUERY_FANOUT)


def test_short_sample_adds_the_codes_of_the_half_hop_phase(song: NDArray[np.float32]) -> None:
    clip = resample(song[SONG_RATE * 3 : SONG_RATE * 4], SONG_RATE, SAMPLE_RATE)
    once = _one_pass(clip)
    both = audio.fingerprint_query(clip)
    assert _pairs(once) <= _pairs(both)
    assert len(both) > 1.15 * len(once)
    assert np.all(np.diff(both.frames.astype(np.int64)) >= 0)
    # No added code is within a bit and a frame of one of the first pass: the lookup's
    # one-bit probes would reach the same postings and count them twice.
    for code, frame in _pairs(both) - _pairs(once):
        for held_code, held_frame in _pairs(once):
            assert abs(frame - held_frame) > 1 or bin(code ^ held_code).count("1") > 1
    assert both.duration_s == once.duration_s


def test_longer_sample_is_fingerprinted_once(song: NDArray[np.float32]) -> None:
    clip = resample(song[: round(SONG_RATE * audio.SHORT_SAMPLE_S * 2)], SONG_RATE, SAMPLE_RATE)
    assert _pairs(audio.fingerprint_query(clip)) == _pairs(_one_pass(clip))


def test_gray_code_steps_flip_one_bit() -> None:
    values = np.arange(1 << 16, dtype=np.int64)
    coded = gray(values)
    steps = coded[1:] ^ coded[:-1]
    assert np.all(steps > 0)
    assert np.all(steps & (steps - 1) == 0)  # a power of two: exactly one bit
    assert np.unique(coded).size == values.size  # a bijection
    assert gray(np.array([0, 1, 2, 3, 4], dtype=np.int64)).tolist() == [0, 1, 3, 2, 6]


# -- robustness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gain", [0.1, 3.0])
def test_pure_gain_change_keeps_the_codes(
    song: NDArray[np.float32], reference: Fingerprints, gain: float
) -> None:
    scaled = SIGNAL.fingerprint_samples(song * np.float32(gain), SONG_RATE, query=False)
    assert _surviving(reference, scaled) >= 0.95


@pytest.mark.parametrize(("gain", "at_least"), [(0.1, 0.95), (2.0, 0.8), (3.0, 0.5)])
def test_gain_change_with_clipping_keeps_most_codes(
    song: NDArray[np.float32], reference: Fingerprints, gain: float, at_least: float
) -> None:
    """Clipping distorts: ×2 clips ~0.3 % of samples, ×3 about 3 % (the clicks and loud notes).

    The query side is what meets the index, so the reference's pairs are looked
    for in the query fingerprints of the degraded signal.
    """
    clipped = np.clip(song * np.float32(gain), -1.0, 1.0)
    degraded = SIGNAL.fingerprint_samples(clipped, SONG_RATE, query=True)
    assert _surviving(reference, degraded) >= at_least


def test_resampled_input_gives_similar_codes(
    song: NDArray[np.float32], reference: Fingerprints
) -> None:
    """The same audio delivered at another rate is resampled to the same fingerprints."""
    from acr.signals.audio.decode import resample

    at_44k = resample(song, SONG_RATE, 44100)
    other = SIGNAL.fingerprint_samples(at_44k, 44100, query=True)
    assert _surviving(reference, other) >= 0.8


# -- input checks -------------------------------------------------------------------------------


@pytest.mark.parametrize("query_side", [False, True])
def test_digital_silence_is_rejected(query_side: bool) -> None:
    with pytest.raises(SilentMediaError):
        SIGNAL.fingerprint_samples(np.zeros(5 * SONG_RATE, np.float32), SONG_RATE, query=query_side)


def test_near_silence_is_rejected() -> None:
    hiss = np.random.default_rng(0).standard_normal(5 * SONG_RATE).astype(np.float32) * 1e-4
    with pytest.raises(SilentMediaError):
        SIGNAL.fingerprint_samples(hiss, SONG_RATE, query=True)


@pytest.mark.parametrize("seconds", [0.0, 0.05, 0.3])
def test_very_short_input_is_rejected(song: NDArray[np.float32], seconds: float) -> None:
    with pytest.raises(MediaTooShortError):
        SIGNAL.fingerprint_samples(song[: int(seconds * SONG_RATE)], SONG_RATE, query=True)


# -- wire format --------------------------------------------------------------------------------


def test_to_bytes_round_trip(query: Fingerprints) -> None:
    data = query.to_bytes()
    assert isinstance(data, bytes)
    back = Fingerprints.from_bytes(data)
    assert back.kind == query.kind
    assert back.hop_s == query.hop_s
    assert back.duration_s == query.duration_s
    assert back.codes.dtype == np.uint32
    assert back.frames.dtype == np.uint32
    assert np.array_equal(back.codes, query.codes)
    assert np.array_equal(back.frames, query.frames)
    # Codes and frames, four bytes each, after a fixed-size header.
    header = len(data) - 8 * len(query)
    assert 0 < header <= 64
    assert back.to_bytes() == data


def test_empty_fingerprints_round_trip() -> None:
    empty = Fingerprints(
        kind=KIND,
        codes=np.zeros(0, np.uint32),
        frames=np.zeros(0, np.uint32),
        hop_s=HOP_S,
        duration_s=0.0,
    )
    back = Fingerprints.from_bytes(empty.to_bytes())
    assert len(back) == 0
    assert back.kind == KIND


def _small(frames: list[int] | None = None) -> Fingerprints:
    frames = frames if frames is not None else [0, 1, 1, 5]
    return Fingerprints(
        kind=KIND,
        codes=np.arange(10, 10 + len(frames), dtype=np.uint32),
        frames=np.array(frames, dtype=np.uint32),
        hop_s=HOP_S,
        duration_s=1.0,
    )


def _header_size() -> int:
    return len(_small([]).to_bytes())


def _with_header_field(data: bytes, fmt: str, offset: int, value: object) -> bytes:
    patched = bytearray(data)
    struct.pack_into(fmt, patched, offset, value)
    return bytes(patched)


def _bad_payloads() -> dict[str, bytes]:
    good = _small().to_bytes()
    header = _header_size()
    garbage = np.random.default_rng(1).integers(0, 256, 200, dtype=np.uint8).tobytes()
    return {
        "empty": b"",
        "shorter than header": good[: header - 1],
        "truncated body": good[:-1],
        "truncated by one code": good[:-4],
        "extra bytes": good + b"\0\0\0\0",
        "garbage": garbage,
        "bad magic": b"XXXX" + good[4:],
        "wrong version": _with_header_field(good, "<H", 4, 99),
        "count larger than body": _with_header_field(good, "<I", header - 4, 5),
        "count smaller than body": _with_header_field(good, "<I", header - 4, 3),
        "nan hop": _with_header_field(good, "<d", 16, float("nan")),
        "zero hop": _with_header_field(good, "<d", 16, 0.0),
        "negative duration": _with_header_field(good, "<d", 24, -1.0),
        "non-monotonic frames": _small([0, 7, 3, 9]).to_bytes(),
    }


@pytest.mark.parametrize("case", sorted(_bad_payloads()))
def test_from_bytes_rejects_malformed_payloads(case: str) -> None:
    payload = _bad_payloads()[case]
    with pytest.raises(FingerprintFormatError):
        Fingerprints.from_bytes(payload)


def test_malformed_payload_fixtures_are_only_wrong_where_intended() -> None:
    """The header offsets patched above are right: patching in valid values parses."""
    good = _small().to_bytes()
    header = _header_size()
    assert Fingerprints.from_bytes(_with_header_field(good, "<H", 4, 1)).hop_s == HOP_S
    assert len(Fingerprints.from_bytes(_with_header_field(good, "<I", header - 4, 4))) == 4
    assert Fingerprints.from_bytes(_with_header_field(good, "<d", 16, 0.5)).hop_s == 0.5
    assert Fingerprints.from_bytes(_with_header_field(good, "<d", 24, 7.5)).duration_s == 7.5


def test_fingerprint_format_error_has_stable_code() -> None:
    with pytest.raises(FingerprintFormatError) as caught:
        Fingerprints.from_bytes(b"nope")
    assert caught.value.code == "invalid_fingerprints"
