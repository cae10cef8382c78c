"""Shots and their rendering: broadcast-like sequences made from stills and clips.

A programme or advert is a list of :class:`Shot`: a Ken Burns pan or zoom
over a photograph or a piece of artwork, a split screen of two such pans, a
stretch of a sample video (slowed, reversed, mirrored, reframed), a text slate
or black. Shots join with cuts, dissolves or fades through black, can carry a
lower-third caption and a colour grade. Rendering is deterministic: a shot
used twice (the near-duplicate adverts) gives the same pixels both times.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from benchmarks.video.media import U8

DISSOLVE_S = 0.6
"""Length of a dissolve (the two shots overlap by this much)."""

FADE_S = 0.4
"""Length of each half of a fade through black."""

Window = tuple[float, float, float]
"""A framing: centre x and centre y (fractions of the source) and width (fraction of its width)."""

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Grade:
    """A colour grade: per-channel gain, then saturation around the luma."""

    gain: tuple[float, float, float]
    saturation: float


@dataclass(frozen=True)
class Pan:
    """A Ken Burns move over a still, from one framing to another (eased)."""

    image: str
    start: Window
    end: Window
    mirror: bool


@dataclass(frozen=True)
class Split:
    """Two pans side by side, each in half of the frame."""

    left: Pan
    right: Pan


@dataclass(frozen=True)
class Footage:
    """A stretch of a sample video.

    ``speed`` is source frames per output frame (negative plays backwards);
    playback bounces off the ends of the source.
    """

    video: str
    first: int
    speed: float
    mirror: bool
    window: Window


@dataclass(frozen=True)
class Slate:
    """Static text on a vertical gradient."""

    lines: tuple[str, ...]
    top: RGB
    bottom: RGB


@dataclass(frozen=True)
class Black:
    """Black frames."""


Visual = Pan | Split | Footage | Slate | Black


@dataclass(frozen=True)
class Shot:
    """One shot of a sequence.

    Attributes
    ----------
    visual : Visual
        What is shown.
    duration_s : float
        Length, including a dissolve into the next shot.
    transition : str
        How the shot begins: ``"cut"``, ``"dissolve"`` (overlaps the previous
        shot by :data:`DISSOLVE_S`) or ``"fade"`` (the previous shot fades to
        black and this one fades in).
    grade : Grade or None
        Colour grade.
    caption : str or None
        Lower-third caption, shown from 1 s after the start to 1 s before the end.
    """

    visual: Visual
    duration_s: float
    transition: str = "cut"
    grade: Grade | None = None
    caption: str | None = None

    @property
    def low_information(self) -> bool:
        """Black and slates: stretches that identify little and have no motion."""
        return isinstance(self.visual, (Slate, Black))


def shot_starts(shots: Sequence[Shot]) -> list[float]:
    """Start time of each shot (dissolves overlap the previous shot)."""
    starts: list[float] = []
    t = 0.0
    for i, shot in enumerate(shots):
        if i and shot.transition == "dissolve":
            t -= DISSOLVE_S
        starts.append(t)
        t += shot.duration_s
    return starts


def sequence_duration(shots: Sequence[Shot]) -> float:
    """Length of a sequence in seconds."""
    if not shots:
        return 0.0
    return shot_starts(shots)[-1] + shots[-1].duration_s


def low_information_spans(shots: Sequence[Shot]) -> list[tuple[float, float]]:
    """``(start, end)`` of the black and slate shots of a sequence."""
    return [
        (start, start + shot.duration_s)
        for shot, start in zip(shots, shot_starts(shots), strict=True)
        if shot.low_information
    ]


def _ease(u: float) -> float:
    u = min(1.0, max(0.0, u))
    return u * u * (3.0 - 2.0 * u)


def _extent(
    window: Window, src: tuple[int, int], aspect: float
) -> tuple[float, float, float, float]:
    """Source rectangle (x0, y0, x1, y1) of a framing, kept inside the source."""
    sw, sh = src
    w = min(window[2] * sw, sw, sh * aspect)
    h = w / aspect
    cx = min(max(window[0] * sw, w / 2), sw - w / 2)
    cy = min(max(window[1] * sh, h / 2), sh - h / 2)
    # Clamp rounding errors: PIL rejects a box a hair outside the image.
    return (max(0.0, cx - w / 2), max(0.0, cy - h / 2), min(sw, cx + w / 2), min(sh, cy + h / 2))


def _frame_from(source: Image.Image, window: Window, size: tuple[int, int], mirror: bool) -> U8:
    box = _extent(window, source.size, size[0] / size[1])
    out = source.resize(size, Image.Resampling.BILINEAR, box=box)
    array = np.asarray(out, dtype=np.uint8)
    return array[:, ::-1] if mirror else array


def _lerp(a: Window, b: Window, u: float) -> Window:
    # Zoom geometrically so that the apparent speed of a zoom stays even.
    width = a[2] * (b[2] / a[2]) ** u
    return (a[0] + (b[0] - a[0]) * u, a[1] + (b[1] - a[1]) * u, width)


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` pixels."""
    return ImageFont.load_default(size=size)


def slate_frame(slate: Slate, size: tuple[int, int]) -> U8:
    """Render a slate: gradient background and centred lines of text."""
    w, h = size
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    top = np.asarray(slate.top, dtype=np.float32)
    bottom = np.asarray(slate.bottom, dtype=np.float32)
    gradient = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (h, w, 3))
    image = Image.fromarray(np.ascontiguousarray(gradient.astype(np.uint8)))
    draw = ImageDraw.Draw(image)
    fnt = font(max(8, h // 9))
    line_h = h // 7
    y = h / 2 - line_h * len(slate.lines) / 2
    for line in slate.lines:
        draw.text((w / 2, y + line_h / 2), line, fill=(245, 245, 245), font=fnt, anchor="mm")
        y += line_h
    return np.asarray(image, dtype=np.uint8)


def caption_overlay(text: str, size: tuple[int, int]) -> tuple[U8, U8, int]:
    """A lower-third caption: RGB and alpha of the strip, and the row where it starts."""
    w, h = size
    strip_h = max(8, h // 8)
    strip = Image.new("RGBA", (w, strip_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(strip)
    box_w = int(w * 0.72)
    draw.rectangle((int(w * 0.05), 0, int(w * 0.05) + box_w, strip_h - 1), fill=(12, 24, 64, 210))
    draw.text(
        (int(w * 0.08), strip_h // 2),
        text,
        fill=(255, 255, 255, 255),
        font=font(max(6, int(strip_h * 0.55))),
        anchor="lm",
    )
    rgba = np.asarray(strip, dtype=np.uint8)
    return rgba[..., :3].copy(), rgba[..., 3].copy(), h - strip_h - h // 14


@lru_cache(maxsize=256)
def _gain_table(gain: tuple[float, float, float]) -> list[int]:
    levels = np.arange(256, dtype=np.float64)
    return [int(v) for g in gain for v in np.clip(np.rint(levels * g), 0, 255)]


def apply_grade(frame: U8, grade: Grade) -> U8:
    """Apply a colour grade to one frame (per-channel gain, then saturation)."""
    image = Image.fromarray(np.ascontiguousarray(frame)).point(_gain_table(grade.gain))
    if grade.saturation != 1.0:
        image = ImageEnhance.Color(image).enhance(grade.saturation)
    return np.asarray(image, dtype=np.uint8)


def blend_over(frame: U8, rgb: U8, alpha: U8, row: int) -> U8:
    """Alpha-blend an overlay strip onto ``frame`` starting at ``row`` (a new array)."""
    out = frame.copy()
    h = rgb.shape[0]
    a = alpha[..., None].astype(np.float32) / 255.0
    region = out[row : row + h, : rgb.shape[1]].astype(np.float32)
    out[row : row + h, : rgb.shape[1]] = (region * (1 - a) + rgb * a + 0.5).astype(np.uint8)
    return out


class Renderer:
    """Renders shots at one frame size from the loaded material.

    Parameters
    ----------
    images : Mapping of str to PIL.Image.Image
        Stills by name (RGB).
    videos : Mapping of str to ndarray of uint8, shape (n, h, w, 3)
        Sample videos by name.
    size : tuple of int
        Output ``(width, height)``.
    """

    def __init__(
        self, images: Mapping[str, Image.Image], videos: Mapping[str, U8], size: tuple[int, int]
    ) -> None:
        self.images = images
        self.videos = videos
        self.size = size
        self._slates: dict[Slate, U8] = {}
        self._captions: dict[str, tuple[U8, U8, int]] = {}

    def visual(self, visual: Visual, t: float, duration_s: float) -> U8:
        """One frame of ``visual``, ``t`` seconds into a shot of ``duration_s``."""
        w, h = self.size
        if isinstance(visual, Pan):
            return self._pan(visual, t / duration_s, self.size)
        if isinstance(visual, Split):
            half = (w // 2, h)
            u = t / duration_s
            return np.concatenate(
                [self._pan(visual.left, u, half), self._pan(visual.right, 1 - u, half)], axis=1
            )
        if isinstance(visual, Footage):
            return self._footage(visual, t)
        if isinstance(visual, Slate):
            if visual not in self._slates:
                self._slates[visual] = slate_frame(visual, self.size)
            return self._slates[visual]
        return np.zeros((h, w, 3), dtype=np.uint8)

    def _pan(self, pan: Pan, u: float, size: tuple[int, int]) -> U8:
        window = _lerp(pan.start, pan.end, _ease(u))
        return _frame_from(self.images[pan.image], window, size, pan.mirror)

    def _footage(self, footage: Footage, t: float) -> U8:
        frames = self.videos[footage.video]
        n = frames.shape[0]
        position = footage.first + round(t * 25.0 * footage.speed)
        period = 2 * (n - 1)
        k = position % period
        index = k if k < n else period - k
        image = Image.fromarray(frames[index])
        return _frame_from(image, footage.window, self.size, footage.mirror)

    def shot(self, shot: Shot, t: float) -> U8:
        """One frame of ``shot`` at ``t`` seconds into it, with grade and caption."""
        frame = self.visual(shot.visual, t, shot.duration_s)
        if shot.grade is not None:
            frame = apply_grade(frame, shot.grade)
        if shot.caption is not None and 1.0 <= t <= shot.duration_s - 1.0:
            if shot.caption not in self._captions:
                self._captions[shot.caption] = caption_overlay(shot.caption, self.size)
            rgb, alpha, row = self._captions[shot.caption]
            frame = blend_over(frame, rgb, alpha, row)
        return frame

    def frames(self, shots: Sequence[Shot], fps: float) -> Iterator[U8]:
        """Every frame of a sequence at ``fps``.

        Yields
        ------
        ndarray of uint8, shape (h, w, 3)
            Frame ``i`` shows time ``i / fps``.
        """
        starts = shot_starts(shots)
        total = sequence_duration(shots)
        n = math.floor(total * fps + 1e-6)
        current = 0
        for i in range(n):
            t = i / fps
            while current + 1 < len(shots) and t >= starts[current] + shots[current].duration_s:
                current += 1
            shot = shots[current]
            local = t - starts[current]
            frame = self.shot(shot, local)
            nxt = current + 1
            gain = 1.0
            if shot.transition == "fade":
                gain = min(gain, local / FADE_S)
            if nxt < len(shots) and shots[nxt].transition == "fade":
                gain = min(gain, (shot.duration_s - local) / FADE_S)
            if nxt < len(shots) and shots[nxt].transition == "dissolve" and t >= starts[nxt]:
                u = (t - starts[nxt]) / DISSOLVE_S
                incoming = self.shot(shots[nxt], t - starts[nxt])
                mixed = frame.astype(np.float32) * (1 - u) + incoming.astype(np.float32) * u
                frame = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
            if gain < 1.0:
                frame = (frame.astype(np.float32) * max(0.0, gain) + 0.5).astype(np.uint8)
            yield frame
