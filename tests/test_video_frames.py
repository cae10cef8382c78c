"""Decoding and sampling video with PyAV: containers, codecs, times, and bad input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest

from acr.errors import (
    CorruptMediaError,
    EmptyMediaError,
    MediaTooLargeError,
    MediaTooLongError,
    NoVideoStreamError,
    UnsupportedFormatError,
)
from acr.signals.video import QUERY_VIEWS, VideoHashes, hash_frames, hash_stills, hash_video
from acr.signals.video.frames import sample_frames
from acr.signals.video.pdq import hamming
from acr.signals.video.views import CENTRE, WHOLE
from tests.video_clips import Programme, encode, render

PROGRAMME = Programme(21, width=192, height=108)


def clip(seconds: float = 3.0, fps: float = 25, **options: object) -> bytes:
    return encode(render(PROGRAMME.frame, seconds=seconds, fps=fps), fps=fps, **options)  # type: ignore[arg-type]


def test_frames_are_sampled_at_the_rate_with_their_own_times() -> None:
    chunks = list(sample_frames(clip(fps=25), fps=4.0))
    times = np.concatenate([c.times_s for c in chunks])
    assert times[0] == 0.0
    # Decoded frames near a 4 fps grid (non-reference frames are not decoded at 25 fps).
    assert np.all(np.abs(times - np.round(times * 4) / 4) <= 0.1)
    assert np.all(np.diff(times) > 0.1) and 11 <= times.size <= 13
    assert chunks[0].luma.shape[1:] == (108, 192)  # already small: never scaled up


@pytest.mark.parametrize(
    ("container", "codec", "options"),
    [
        ("mp4", "libx264", {"preset": "ultrafast"}),
        ("mp4", "libx265", {"preset": "ultrafast", "x265-params": "log-level=none"}),
        ("webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}),
        ("matroska", "libx264", {"preset": "ultrafast"}),
        ("mpegts", "mpeg2video", {}),
    ],
    ids=["mp4-h264", "mp4-h265", "webm-vp9", "mkv-h264", "ts-mpeg2"],
)
def test_common_containers_and_codecs_hash_alike(
    container: str, codec: str, options: dict[str, str]
) -> None:
    reference = hash_video(clip(seconds=2.0, fps=25))
    hashes = hash_video(
        clip(seconds=2.0, fps=25, container=container, codec=codec, options=options)
    )
    assert len(hashes) == len(reference)
    assert np.allclose(hashes.times_s, reference.times_s, atol=0.1)
    whole = hashes.views == 0
    distances = hamming(hashes.hashes[whole], reference.hashes[whole])
    assert np.median(distances) <= 24


def test_still_images_are_one_frame_each(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="image2pipe") as output:
        stream = output.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 192, 108, "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(PROGRAMME.frame(1.0), "rgb24")):
            output.mux(packet)
    path = tmp_path / "still.png"
    path.write_bytes(buffer.getvalue())
    stills = hash_stills([path, buffer.getvalue()], interval_s=0.5)
    views = len(QUERY_VIEWS) - 2  # a single frame has no inset, a frame without bars no centre
    assert stills.times_s.tolist() == [0.0] * views + [0.5] * views
    assert stills.duration_s == 1.0
    from_pixels = hash_frames([PROGRAMME.frame(1.0)], [0.0])
    assert np.median(hamming(stills.hashes[:views], from_pixels.hashes)) <= 8


def test_a_sample_with_bars_is_also_hashed_without_its_sides() -> None:
    """A phone's picture of a screen keeps wedges of room along its sides: the centre drops them."""
    frame = PROGRAMME.frame(1.0)  # 192 x 108: 5 % is 9.6 and 5.4 pixels
    assert CENTRE not in hash_frames([frame], [0.0]).views  # no bars, no room to cut off
    in_room = np.full((128, 212, 3), 20, dtype=np.uint8)  # 10 rows and columns of room
    in_room[10:118, 10:202] = frame
    hashes = hash_frames([in_room], [0.0])
    inner = hash_frames([frame[5:103, 10:182]], [0.0])
    centre = hashes.hashes[hashes.views == CENTRE]
    assert centre.shape == (1, 32)
    assert int(hamming(centre[0], inner.hashes[inner.views == WHOLE][0])) <= 32  # one picture
    wire = VideoHashes.from_bytes(hashes.to_bytes())  # clients send it too
    assert wire.views.tolist() == hashes.views.tolist()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG of a black picture: its size is what matters."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    pixels = zlib.compressobj(1)
    row = b"\0" * (width * 3 + 1)
    body = b"".join(pixels.compress(row) for _ in range(height)) + pixels.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def _wav() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as output:
        stream = output.add_stream("pcm_s16le", rate=8000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 8000), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        for packet in (*stream.encode(frame), *stream.encode()):
            output.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: b"", EmptyMediaError),
        (lambda: b"not a video at all\n" * 50, UnsupportedFormatError),
        (lambda: clip()[:3000], CorruptMediaError),  # an MP4 cut before its index
        (_wav, NoVideoStreamError),
        (lambda: _png_header_only(9000, 4000), MediaTooLargeError),
    ],
    ids=["empty", "not-media", "truncated-mp4", "audio-only", "huge-resolution"],
)
def test_bad_input_is_a_clear_error(make: object, error: type[Exception]) -> None:
    assert callable(make)
    with pytest.raises(error):
        hash_video(make())


def test_absurd_frame_rates_and_long_samples_stop_early() -> None:
    tiny = Programme(5, width=32, height=32)
    thousand_fps = encode(
        render(tiny.frame, seconds=2.0, fps=1000), fps=1000, codec="mpeg4", options={}
    )
    with pytest.raises(MediaTooLongError, match="frames per second"):
        hash_video(thousand_fps)
    with pytest.raises(MediaTooLongError):
        hash_video(clip(seconds=3.0), max_seconds=1.0)


def test_a_truncated_stream_keeps_what_came_before_the_cut() -> None:
    ts = clip(seconds=4.0, container="mpegts", codec="mpeg2video", options={})
    whole = hash_video(ts)
    half = hash_video(ts[: len(ts) // 2])
    assert 0 < len(half) < len(whole)
    # Every frame before the cut is intact; the one at the cut may be half decoded.
    intact = half.times_s < half.times_s[-1]
    assert np.array_equal(half.hashes[intact], whole.hashes[: int(intact.sum())])
