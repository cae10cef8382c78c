"""PDQ hashes, bars and the video wire format: pure functions over arrays."""

from __future__ import annotations

import numpy as np
import pytest

from acr.errors import FingerprintFormatError
from acr.signals.video import MIN_QUALITY, REFERENCE_VIEWS, VideoHashes, hash_frames
from acr.signals.video.bars import content_box
from acr.signals.video.inset import find_inset
from acr.signals.video.pdq import hamming, luma, pdq_hashes, pdq_rects
from acr.signals.video.views import LAST_VIEW
from tests.video_clips import Programme


def _picture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    blocks = rng.random((height // 8 + 2, width // 8 + 2, 3))
    smooth = np.kron(blocks, np.ones((8, 8, 1)))[:height, :width]
    noisy = smooth * 255 * rng.uniform(0.2, 1.0) + rng.normal(0, 10, smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "shape", [(64, 64), (144, 256), (288, 512), (1080, 1920), (37, 91), (5, 7)]
)
def test_hashes_and_quality_are_bit_exact_with_the_reference_implementation(
    shape: tuple[int, int],
) -> None:
    pdqhash = pytest.importorskip("pdqhash")
    rng = np.random.default_rng(sum(shape))
    for _ in range(3):
        image = _picture(rng, *shape)
        bits, quality = pdqhash.compute(image)
        mine, my_quality = pdq_hashes(luma(image[None]))
        assert np.array_equal(np.unpackbits(mine[0]), bits)
        assert int(my_quality[0]) == quality


def test_rectangles_hash_bit_for_bit_as_if_cut_out() -> None:
    rng = np.random.default_rng(5)
    frames = luma(np.stack([_picture(rng, 270, 480) for _ in range(3)]))
    # Shared rows (two windows of one height), shared columns, a small inset, one pixel.
    rects = [
        (0, 270, 0, 480),
        (14, 256, 0, 442),
        (14, 256, 38, 480),
        (0, 135, 0, 480),
        (100, 190, 300, 460),
        (5, 6, 7, 8),
    ]
    hashes, quality = pdq_rects(frames, rects)
    for k, (top, bottom, left, right) in enumerate(rects):
        alone, alone_quality = pdq_hashes(np.ascontiguousarray(frames[:, top:bottom, left:right]))
        assert np.array_equal(hashes[:, k], alone) and np.array_equal(quality[:, k], alone_quality)
    with pytest.raises(ValueError, match="not inside"):
        pdq_rects(frames, [(0, 271, 0, 480)])


def test_flat_frames_have_no_quality_and_are_not_kept() -> None:
    black = np.zeros((90, 160, 3), dtype=np.uint8)
    grey = np.full((90, 160, 3), 128, dtype=np.uint8)
    _, quality = pdq_hashes(luma(np.stack([black, grey])))
    assert quality.tolist() == [0, 0]
    assert len(hash_frames([black, grey], [0.0, 0.25])) == 0


def test_hamming_of_a_hash_with_its_complement_is_256() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (4, 32), dtype=np.uint8)
    assert hamming(a, a).tolist() == [0] * 4
    assert hamming(a, ~a).tolist() == [256] * 4


def test_letterbox_and_grey_pillarbox_bars_are_found() -> None:
    picture = luma(np.stack([Programme(3, width=160, height=90).frame(t) for t in (0.0, 1.0)]))
    letterboxed = np.zeros((2, 120, 160), dtype=np.float32)
    letterboxed[:, 15:105] = picture
    box = content_box(letterboxed)
    assert 15 <= box.top <= 17 and 103 <= box.bottom <= 105
    assert (box.left, box.right) == (0, 160)
    pillarboxed = np.full((2, 90, 200), 40.0, dtype=np.float32)
    pillarboxed[:, :, 20:180] = picture
    box = content_box(pillarboxed)
    assert (box.top, box.bottom) == (0, 90)
    assert 20 <= box.left <= 22 and 178 <= box.right <= 180


def test_a_flat_band_in_one_frame_is_not_taken_for_a_bar() -> None:
    frames = luma(np.stack([Programme(4, width=160, height=90).frame(t) for t in (0.0, 2.0)]))
    frames[0, :30] = 0.0  # a dark sky in one frame only
    assert content_box(frames).top == 0
    flat = np.zeros((3, 90, 160), dtype=np.float32)
    assert content_box(flat) == (0, 90, 0, 160)


def test_wire_format_round_trips_and_is_small() -> None:
    programme = Programme(5, width=160, height=90)
    times = [i / 4 for i in range(20)]
    hashes = hash_frames([programme.frame(t) for t in times], times, views=REFERENCE_VIEWS)
    assert len(hashes) > 0 and int(hashes.quality.min()) >= MIN_QUALITY
    wire = hashes.to_bytes()
    again = VideoHashes.from_bytes(wire)
    assert np.array_equal(again.hashes, hashes.hashes)
    assert np.array_equal(again.times_s, hashes.times_s)
    assert np.array_equal(again.views, hashes.views)
    assert again.duration_s == hashes.duration_s
    query = hash_frames([programme.frame(t) for t in times], times)
    assert len(query.to_bytes()) < 14_000  # 5 s of pictures in about 12 kilobytes


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:10],
        lambda b: b"XXXX" + b[4:],
        lambda b: b[:-1],
        lambda b: b + b"\0",
        lambda b: b[:4] + b"\x09\x00" + b[6:],
    ],
    ids=["short", "magic", "truncated", "trailing", "version"],
)
def test_malformed_wire_payloads_are_refused(mutate: object) -> None:
    assert callable(mutate)
    programme = Programme(6, width=160, height=90)
    wire = hash_frames([programme.frame(t) for t in (0.0, 0.25)], [0.0, 0.25]).to_bytes()
    with pytest.raises(FingerprintFormatError):
        VideoHashes.from_bytes(mutate(wire))


def test_times_out_of_order_are_refused() -> None:
    programme = Programme(6, width=160, height=90)
    hashes = hash_frames([programme.frame(t) for t in (0.0, 0.25)], [0.0, 0.25])
    backwards = VideoHashes(
        hashes=hashes.hashes,
        times_s=hashes.times_s[::-1].copy(),
        quality=hashes.quality,
        duration_s=hashes.duration_s,
        views=hashes.views,
    )
    with pytest.raises(FingerprintFormatError):
        VideoHashes.from_bytes(backwards.to_bytes())
    with pytest.raises(ValueError, match="non-decreasing"):
        hash_frames([programme.frame(0.0)] * 2, [1.0, 0.5])


def test_a_picture_in_picture_inset_is_found_and_plain_pictures_have_none() -> None:
    inner, host = Programme(7, width=256, height=144), Programme(8, width=256, height=144)
    times = [i / 4 for i in range(16)]
    plain = luma(np.stack([host.frame(t) for t in times]))
    assert find_inset(plain) is None
    framed = plain.copy()
    small = luma(np.stack([inner.frame(t)[::2, ::2] for t in times]))  # half size
    top, left = 144 - 72 - 7, 10
    framed[:, top - 2 : top + 74, left - 2 : left + 130] = 235.0
    framed[:, top : top + 72, left : left + 128] = small
    box = find_inset(framed)
    assert box is not None
    assert abs(box.top - top) <= 6 and abs(box.left - left) <= 6
    assert abs((box.bottom - box.top) - 72) <= 10 and abs((box.right - box.left) - 128) <= 12


def test_unknown_views_are_refused() -> None:
    programme = Programme(6, width=160, height=90)
    hashes = hash_frames([programme.frame(0.0)], [0.0])
    assert int(hashes.views.max()) <= LAST_VIEW
    unknown = VideoHashes(
        hashes=hashes.hashes[:1],
        times_s=hashes.times_s[:1],
        quality=hashes.quality[:1],
        duration_s=hashes.duration_s,
        views=np.array([LAST_VIEW + 1], dtype=np.uint8),
    )
    with pytest.raises(FingerprintFormatError, match="views"):
        VideoHashes.from_bytes(unknown.to_bytes())


def _filmed(picture: np.ndarray, corners: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`picture` (h, w) seen as the quadrilateral `corners` inside a dark, noisy room."""
    from acr.signals.video.screen import _homography

    height, width = size
    h, w = picture.shape
    to_picture = np.linalg.inv(_homography(corners, w, h))
    gx, gy = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    points = to_picture @ np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size)])
    u, v = points[0] / points[2], points[1] / points[2]
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    room = np.full(height * width, 30.0, dtype=np.float32)
    room[inside] = picture[v[inside].astype(int), u[inside].astype(int)]
    noise = np.random.default_rng(1).normal(0, 3, room.shape).astype(np.float32)
    return (room + noise).reshape(1, height, width)


def test_a_screen_filmed_at_an_angle_is_straightened() -> None:
    from acr.signals.video.bars import content_box
    from acr.signals.video.screen import find_screens, straighten

    programme = Programme(11, width=320, height=180)
    picture = luma(programme.frame(1.0)[None])[0]
    corners = np.array([[30.0, 20.0], [300.0, 12.0], [306.0, 170.0], [22.0, 160.0]])
    seen = _filmed(picture, corners, (180, 320))
    box = content_box(seen)
    quads = find_screens(seen, box)
    assert quads is not None
    assert np.abs(quads[0] - corners).max() <= 3.0
    straight = straighten(seen, quads, 160, 90)
    reference = pdq_hashes(picture[None])[0]
    assert int(hamming(pdq_hashes(straight)[0][0], reference[0])) <= 40
    boxed = np.ascontiguousarray(seen[:, box.top : box.bottom, box.left : box.right])
    assert int(hamming(pdq_hashes(boxed)[0][0], reference[0])) > 60
    # A letterboxed picture is a rectangle already: nothing to straighten.
    letterbox = np.zeros((1, 240, 320), dtype=np.float32)
    letterbox[:, 30:210] = picture
    assert find_screens(letterbox, content_box(letterbox)) is None
