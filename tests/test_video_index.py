"""The video index end to end: real PyAV encodes, real FAISS, temporal alignment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from acr.errors import IndexStoreError, UnknownContentError
from acr.index.video import VideoIndex
from acr.index.video_lookup import VideoLookup
from acr.index.video_segment import build_video_segment
from acr.signals.video import REFERENCE_VIEWS, VideoHashes, hash_video
from tests.video_clips import Frame, Programme, encode, render

WIDTH, HEIGHT = 192, 108
SECONDS = 24.0


@dataclass(frozen=True)
class Catalogue:
    directory: Path
    programmes: dict[str, Programme]
    files: dict[str, Path]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    """Three programmes of 24 s, indexed."""
    root = tmp_path_factory.mktemp("video-index")
    programmes = {f"prog-{seed}": Programme(seed, width=WIDTH, height=HEIGHT) for seed in (1, 2, 3)}
    files = {}
    with VideoIndex.open(root / "video", create=True) as index:
        for content_id, programme in programmes.items():
            path = root / f"{content_id}.mp4"
            path.write_bytes(encode(render(programme.frame, seconds=SECONDS, fps=25), fps=25))
            index.add_file(path, content_id=content_id, title=content_id.title())
            files[content_id] = path
    return Catalogue(root / "video", programmes, files)


@pytest.fixture(scope="module")
def index(catalogue: Catalogue) -> VideoIndex:
    with VideoIndex.open(catalogue.directory, readonly=True) as opened:
        yield opened  # type: ignore[misc]


def _resize(picture: Frame, height: int, width: int) -> Frame:
    zoom = (height / picture.shape[0], width / picture.shape[1], 1)
    return np.clip(ndimage.zoom(picture.astype(np.float32), zoom, order=1), 0, 255).astype(np.uint8)


def _crop(top: float, bottom: float, left: float, right: float) -> Callable[[Frame], Frame]:
    def crop(picture: Frame) -> Frame:
        h, w = picture.shape[:2]
        inside = picture[int(h * top) : h - int(h * bottom), int(w * left) : w - int(w * right)]
        return _resize(inside, h, w)

    return crop


def _letterbox(picture: Frame) -> Frame:
    h, w = picture.shape[:2]
    framed = np.zeros((w * 3 // 4, w, 3), dtype=np.uint8)
    top = (framed.shape[0] - h) // 2
    framed[top : top + h] = picture
    return framed


def _pillarbox(picture: Frame) -> Frame:
    h, w = picture.shape[:2]
    narrow = _resize(picture, h, h * 4 // 3)
    framed = np.full_like(picture, 30)
    left = (w - narrow.shape[1]) // 2
    framed[:, left : left + narrow.shape[1]] = narrow
    return framed


def _overlay(picture: Frame) -> Frame:
    h, w = picture.shape[:2]
    covered = picture.copy()
    covered[6 : 6 + h // 8, 6 : 6 + w // 5] = 250  # a channel logo
    covered[h - h // 6 : h - 4, w // 10 : w - w // 10] = 20  # a caption band
    return covered


def _gamma(picture: Frame) -> Frame:
    return np.clip(255 * (picture / 255.0) ** 0.7 * 1.15 + 12, 0, 255).astype(np.uint8)


def _phone(picture: Frame) -> Frame:
    """Blur, slight shear, colour cast, noise, moiré, and the room around the screen."""
    h, w = picture.shape[:2]
    rng = np.random.default_rng(int(picture.sum()) % 1000)
    seen = ndimage.gaussian_filter(picture.astype(np.float32), (1.0, 1.0, 0))
    shear = np.array([[1.0, 0.03, 0.0], [0.02, 1.0, 0.0], [0.0, 0.0, 1.0]])
    seen = ndimage.affine_transform(seen, shear, offset=(-2, -3, 0), order=1, mode="nearest")
    yy, xx = np.mgrid[0:h, 0:w]
    seen = seen * np.array([1.1, 1.0, 0.85]) + rng.normal(0, 5, seen.shape)
    seen += (6 * np.sin(xx * 1.3 + yy * 0.7))[..., None]
    room = np.full((int(h * 1.15), int(w * 1.15), 3), 35.0)
    top, left = (room.shape[0] - h) // 2, (room.shape[1] - w) // 2
    room[top : top + h, left : left + w] = seen
    return _resize(np.clip(room, 0, 255).astype(np.uint8), h, w)


def _identity(picture: Frame) -> Frame:
    return picture


HOST = Programme(90, width=WIDTH, height=HEIGHT)


def _picture_in_picture(t: float, picture: Frame) -> Frame:
    """The programme at half size, bordered, in a corner of unrelated footage."""
    host = HOST.frame(t).copy()
    h, w = picture.shape[:2]
    top, left = h - h // 2 - round(h * 0.05), w - w // 2 - round(w * 0.04)
    host[top - 2 : top + h // 2 + 2, left - 2 : left + w // 2 + 2] = 235
    host[top : top + h // 2, left : left + w // 2] = _resize(picture, h // 2, w // 2)
    return host


# name -> (picture change, frame rate of the sample, encoder options)
DEGRADATIONS: dict[str, tuple[Callable[[Frame], Frame], float, dict[str, str] | None]] = {
    "low-bitrate": (_identity, 25, {"preset": "ultrafast", "crf": "40"}),
    "24fps": (_identity, 24, None),
    "60fps": (_identity, 60, None),
    "half-size": (lambda p: _resize(p, HEIGHT // 2, WIDTH // 2), 25, None),
    "double-size": (lambda p: _resize(p, HEIGHT * 2, WIDTH * 2), 25, None),
    "letterbox": (_letterbox, 25, None),
    "pillarbox": (_pillarbox, 25, None),
    "crop-5%-one-side": (_crop(0, 0, 0.05, 0), 25, None),
    "crop-10%-mixed": (_crop(0.04, 0.03, 0.02, 0.06), 25, None),
    "logo-and-caption": (_overlay, 25, None),
    "gamma": (_gamma, 25, None),
    "phone-camera": (_phone, 25, None),
}


def sample(
    programme: Programme,
    start: float,
    change: Callable[[Frame], Frame] = _identity,
    fps: float = 25,
    options: dict[str, str] | None = None,
    seconds: float = 5.0,
) -> bytes:
    frames = render(lambda t: change(programme.frame(t)), seconds=seconds, fps=fps, start=start)
    return encode(frames, fps=fps, options=options)


def test_a_programme_inset_in_other_footage_is_found(
    index: VideoIndex, catalogue: Catalogue
) -> None:
    programme = catalogue.programmes["prog-2"]
    frames = render(
        lambda t: _picture_in_picture(t, programme.frame(t)), seconds=5, fps=25, start=11.0
    )
    best = index.match(encode(frames, fps=25)).best
    assert best is not None and best.content_id == "prog-2"
    assert best.offset_s == pytest.approx(11.0, abs=0.25)


@pytest.mark.parametrize("degradation", list(DEGRADATIONS))
def test_degraded_samples_find_their_programme_and_moment(
    index: VideoIndex, catalogue: Catalogue, degradation: str
) -> None:
    change, fps, options = DEGRADATIONS[degradation]
    content_id = list(catalogue.programmes)[list(DEGRADATIONS).index(degradation) % 3]
    start = 3.0 + (len(degradation) * 1.37) % 14.0
    result = index.match(sample(catalogue.programmes[content_id], start, change, fps, options))
    best = result.best
    assert best is not None, f"{degradation}: no match"
    assert best.content_id == content_id
    assert best.offset_s == pytest.approx(start, abs=0.25)  # within one sampling interval
    assert best.confidence >= 0.8 and best.duration_s == pytest.approx(SECONDS, abs=0.1)


def _alternating(first: Programme, second: Programme) -> Callable[[float], Frame]:
    return lambda t: (first if int(t * 2) % 2 == 0 else second).frame(t)


@pytest.mark.parametrize(
    "make",
    [
        lambda c: sample(Programme(77, width=WIDTH, height=HEIGHT), 2.0),
        lambda c: encode(
            render(lambda t: np.zeros((HEIGHT, WIDTH, 3), np.uint8), seconds=5, fps=25), fps=25
        ),
        lambda c: encode(
            render(lambda t: c.programmes["prog-1"].frame(7.0), seconds=5, fps=25), fps=25
        ),
        lambda c: encode(
            render(
                _alternating(
                    Programme(78, width=WIDTH, height=HEIGHT),
                    Programme(79, width=WIDTH, height=HEIGHT),
                ),
                seconds=5,
                fps=25,
            ),
            fps=25,
        ),
    ],
    ids=["unrelated", "black", "still-of-a-reference-frame", "cuts-between-unknown-shows"],
)
def test_honest_no_match(index: VideoIndex, catalogue: Catalogue, make: object) -> None:
    assert callable(make)
    result = index.match(make(catalogue), top_k=3)
    assert result.matches == []


def test_client_hashes_match_like_the_clip(index: VideoIndex, catalogue: Catalogue) -> None:
    clip = sample(catalogue.programmes["prog-2"], 9.0)
    wire = hash_video(clip).to_bytes()
    assert len(wire) < 14_000  # 5 s: 20 frames x 15 views (whole, halves, overscan) x 42 B
    from_clip = index.match(clip)
    from_wire = index.match_hashes(VideoHashes.from_bytes(wire))
    assert from_clip.best is not None and from_wire.best is not None
    assert from_wire.best.content_id == from_clip.best.content_id == "prog-2"
    assert from_wire.best.offset_s == pytest.approx(from_clip.best.offset_s)


def test_the_cascade_answers_as_every_view_at_once(
    index: VideoIndex, catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = hash_video(sample(catalogue.programmes["prog-1"], 6.0))
    cascade = index.match_hashes(clip).best
    # Never decisive: the overscan crops are always looked up, with the plain views' hits.
    monkeypatch.setattr("acr.index.video.decisive", lambda *_: False)
    full = index.match_hashes(clip).best
    assert cascade is not None and full is not None
    assert cascade.content_id == full.content_id == "prog-1"
    assert cascade.offset_s == pytest.approx(full.offset_s, abs=0.25)


def test_store_lifecycle(tmp_path: Path, catalogue: Catalogue) -> None:
    programme = catalogue.programmes["prog-3"]
    path = catalogue.files["prog-3"]
    query = sample(programme, 4.0)
    directory = tmp_path / "video"
    with pytest.raises(IndexStoreError, match="no video index"):
        VideoIndex.open(directory)
    with VideoIndex.open(directory, create=True) as index:
        first = index.add_file(path, content_id="a", title="A")
        assert index.add_file(path, content_id="b") == first  # same bytes: already indexed
        hashes = hash_video(path, views=REFERENCE_VIEWS)
        index.add_hashes(hashes, content_id="copy", title="Copy")
        with pytest.raises(IndexStoreError, match="already indexed"):
            index.add_hashes(hashes, content_id="copy", title="Again")
        with pytest.raises(IndexStoreError, match="being written"):
            VideoIndex.open(directory)
        with VideoIndex.open(directory, readonly=True) as reader:
            # Two identical contents share every hit: each is less certain than one alone.
            both = reader.match(query, top_k=2, min_confidence=0.5).matches
            assert {m.content_id for m in both} == {"a", "copy"}
            index.remove("copy")
            # (A 24 s synthetic catalogue: the calibrated confidence of 5 s is about 0.7.)
            alone = reader.match(query, top_k=2, min_confidence=0.5).matches
            assert [m.content_id for m in alone] == ["a"]
        with pytest.raises(UnknownContentError):
            index.remove("copy")
        before = index.stats()
        assert index.compact() == 2
        after = index.stats()
        assert after.contents == 1 and after.segments == 1
        assert after.bytes_on_disk < before.bytes_on_disk
        assert after.hours == pytest.approx(SECONDS / 3600, rel=0.01)
    with VideoIndex.open(directory, readonly=True) as reopened:
        best = reopened.match(query, min_confidence=0.5).best
        assert best is not None and best.content_id == "a"
        assert best.offset_s == pytest.approx(4.0, abs=0.25)


def test_the_lookup_knows_which_reference_frames_are_not_flat() -> None:
    """The frames a reference has hashes for; a flat frame (a fade, black) has none."""
    rng = np.random.default_rng(3)
    times = np.array([0.0, 0.0, 0.25, 1.0, 1.25])  # two views at 0; 0.5 and 0.75 were flat
    hashes = VideoHashes(
        hashes=rng.integers(0, 256, (5, 32), dtype=np.uint8),
        times_s=times,
        quality=np.full(5, 80, dtype=np.uint8),
        duration_s=1.5,
        views=np.array([0, 16, 0, 0, 0], dtype=np.uint8),
    )
    lookup = VideoLookup()
    lookup.add_segment(build_video_segment([(7, hashes)]))
    assert lookup.frames(7).tolist() == [0.0, 0.25, 1.0, 1.25]
    lookup.remove_key(7)
    assert lookup.frames(7).size == 0
