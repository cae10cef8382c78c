"""Degradations of video clips: pure functions of the frames and a seeded generator.

Each degradation takes a decoded clip (RGB frames and a frame rate), a
:class:`numpy.random.Generator` and a host clip (unrelated footage, used only
by picture-in-picture) and returns a new clip; it never changes its inputs.
The query is then written as H.264 (:mod:`benchmarks.video.queries`), at the
degradation's bit rate when it has one. :data:`REGISTRY` lists them in table
order, each with the accuracy the issue asks of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from benchmarks.video.media import U8, VideoClip, even
from benchmarks.video.scenes import font

Apply = Callable[[VideoClip, np.random.Generator, VideoClip], VideoClip]


@dataclass(frozen=True)
class Degradation:
    """A named condition applied to every query clip.

    Attributes
    ----------
    name : str
        Short name (a row of the results table).
    description : str
        What it does, for the report.
    target_pct : float
        Top-1 accuracy the issue asks for 5 s samples.
    apply : callable
        ``apply(clip, rng, host) -> clip``.
    bitrate : int or None
        Bit rate (bit/s) at which the query is encoded; None for the default
        constant quality.
    uses_host : bool
        Whether ``apply`` reads the host clip (otherwise any clip will do).
    """

    name: str
    description: str
    target_pct: float
    apply: Apply
    bitrate: int | None = None
    uses_host: bool = False


# -- helpers ----------------------------------------------------------------------------------


def _each(clip: VideoClip, fn: Callable[[U8], U8]) -> VideoClip:
    return VideoClip(np.stack([fn(frame) for frame in clip.frames]), clip.fps)


def _resize(frame: U8, size: tuple[int, int]) -> U8:
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))


def _lut(clip: VideoClip, table: NDArray[np.float64]) -> VideoClip:
    lut = np.clip(np.rint(table), 0, 255).astype(np.uint8)
    return VideoClip(lut[clip.frames], clip.fps)


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _host_frames(host: VideoClip, n: int, size: tuple[int, int]) -> list[U8]:
    """``n`` frames of the host clip at ``size`` (looping if it is short)."""
    count = host.frames.shape[0]
    return [_resize(host.frames[i % count], size) for i in range(n)]


# -- the degradations -------------------------------------------------------------------------


def identity(clip: VideoClip, rng: np.random.Generator, host: VideoClip) -> VideoClip:
    """The clip unchanged (it is still re-encoded as the query file)."""
    return clip


def scale(factor: float) -> Apply:
    """Resize every frame by ``factor`` (sizes rounded to even numbers)."""

    def apply(clip: VideoClip, rng: np.random.Generator, host: VideoClip) -> VideoClip:
        h, w = clip.frames.shape[1:3]
        size = (even(w * factor), even(h * factor))
        return _each(clip, lambda f: _resize(f, size))

    return apply


def frame_rate(target: float, *, blend: bool) -> Apply:
    """Convert to ``target`` frames/s by repeating or dropping frames, or by blending.

    With ``blend``, each output frame mixes the two source frames around its
    time in proportion (a standards converter without motion compensation).
    """

    def apply(clip: VideoClip, rng: np.random.Generator, host: VideoClip) -> VideoClip:
        n = clip.frames.shape[0]
        count = math.floor(n * target / clip.fps + 1e-9)
        position = np.arange(count) * clip.fps / target
        if not blend:
            index = np.minimum(np.floor(position + 1e-9).astype(np.int64), n - 1)
            return VideoClip(clip.frames[index], target)
        out = np.empty((count, *clip.frames.shape[1:]), dtype=np.uint8)
        for k, p in enumerate(position):
            i = min(int(p), n - 1)
            j = min(i + 1, n - 1)
            u = float(p - i)
            mixed = clip.frames[i].astype(np.float32) * (1 - u) + clip.frames[j] * u
            out[k] = (mixed + 0.5).astype(np.uint8)
        return VideoClip(out, target)

    return apply


def box(canvas_aspect: float) -> Apply:
    """Fit the picture, whole, into a canvas of another aspect ratio with black bars.

    A wider canvas gives pillarbox bars at the sides, a taller one letterbox
    bars at the top and bottom; the picture keeps its size.
    """

    def apply(clip: VideoClip, rng: np.random.Generator, host: VideoClip) -> VideoClip:
        n, h, w = clip.frames.shape[:3]
        if canvas_aspect > w / h:
            cw, ch = even(h * canvas_aspect), h
        else:
            cw, ch = w, even(w / canvas_aspect)
        out = np.zeros((n, ch, cw, 3), dtype=np.uint8)
        top, left = (ch - h) // 2, (cw - w) // 2
        out[:, top : top + h, left : left + w] = clip.frames
        return VideoClip(out, clip.fps)

    return apply


def crop(fraction: float) -> Apply:
    """Cut ``fraction`` of the width and of the height, split at random between the
    two sides, and scale the rest back to the original size (an overscan zoom)."""

    def apply(clip: VideoClip, rng: np.random.Generator, host: VideoClip) -> VideoClip:
        h, w = clip.frames.shape[1:3]
        left = float(rng.uniform(0, fraction)) * w
        top = float(rng.uniform(0, fraction)) * h
        area = (left, top, left + (1 - fraction) * w, top + (1 - fraction) * h)

        def one(frame: U8) -> U8:
            image = Image.fromarray(frame)
            return np.asarray(image.resize((w, h), Image.Resampling.BILINEAR, box=area))

        return _each(clip, one)

    return apply


def brightness(clip: VideoClip, rng: np.random.Generator, host: VideoClip) -> VideoClip:
    """Add or subtract 25-40 levels (of 255)."""
    offset = _sign(rng) * float(rng.uniform(25, 40))
    return _lut(clip, np.arange(256, dtype=np.float64) + offset)


def contrast(clip: VideoClip, rng: np.random.Generator, host: VideoClip) -> VideoClip:
    """Scale around mid-grey by 0.6-0.75 or 1.3-1.5."""
    factor = float(rng.uniform(0.6, 0.75) if rng.random() < 0.5 else rng.uniform(1.3, 1.5))
    return _lut(clip, 128.0 + (np.arange(256, dtype=np.float64) - 128.0) * factor)


def gamma(clip: VideoClip, rng: np.random.Generator, host: VideoClip) -> VideoClip:
    """Apply a gamma of 0.6-0.75 or 1.4-1.7."""
    g = float(rng.uniform(0.6, 0.75) if rng.random() < 0.5 else rng.uniform(1.4, 1.7))
    return _lut(clip, 255.0 * (np.arange(256, dtype=np.float64) / 255.0) ** g)


def _letters(rng: np.random.Generator, n: int) -> str:
    return "".join(chr(ord("A") + int(k)) for k in rng.integers(0, 26, size=n))


def _composite(clip: VideoClip, overlay: Image.Image, corner: tuple[int, int]) -> VideoClip:
    rgba = np.asarray(overlay, dtype=np.uint8)
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    x, y = corner
    oh, ow = rgba.shape[:2]
    out = clip.frames.copy()
    region = out[:, y : y + oh, x : x + ow].astype(np.float32)
    out[:, y : y + oh, x : x + ow] = (region * (1 - alpha) + rgb * alpha + 0.5).astype(np.uint8)
    return VideoClip(out, clip.fps)


def logo(clip: VideoClip, rng: np.random.Generator, host: VideoClip) -> VideoClip:
    """A channel logo (about 18 x 11 % of the frame, 75 % opaque) in a random corner."""
    h, w = clip.frames.shape[1:3]
    lw, lh = round(w * 0.18), round(h * 0.11)
    colour = tuple(int(c) for c in rng.integers(40, 255, size=3))
    overlay = Image.new("RGBA", (lw, lh), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rounded_rectangle((0, 0, lw - 1, lh - 1), radius=lh // 4, fill=(*colour, 190))
    draw.text(
        (lw / 2, lh / 2),
        _letters(rng, 3),
        fill=(255, 255, 255, 235),
        font=font(max(6, round(lh * 0.7))),
        anchor="mm",
    )
    mx, my = round(w * 0.04), round(h * 0.05)
    corner = int(rng.integers(4))
    x = mx if corner % 2 == 0 else w - lw - mx
    y = my if corner < 2 else h - lh - my
    return _composite(clip, overlay, (x, y))


def caption(clip: VideoClip, rng: np.random.Generator, host: VideoClip) -> VideoClip:
    """A news ticker: a band of 14 % of the height near the bottom, text scrolling left."""
    n, h, w = clip.frames.shape[:3]
    bh = round(h * 0.14)
    y = h - bh - round(h * 0.04)
    colour = tuple(int(c) for c in rng.integers(0, 90, size=3))
    text = " +++ ".join(
        " ".join(_letters(rng, int(rng.integers(3, 8))) for _ in range(4)) for _ in range(3)
    )
    fnt = font(max(6, round(bh * 0.6)))
    strip = Image.new("RGBA", (w, bh), (*colour, 215))
    text_w = round(ImageDraw.Draw(strip).textlength(text, font=fnt))
    speed = w / 8.0  # pixels per second
    start = float(rng.uniform(0, w / 2))
    frames = clip.frames.copy()
    for k in range(n):
        band = strip.copy()
        x = start - speed * k / clip.fps
        ImageDraw.Draw(band).text(
            (x % (text_w + w) - text_w / 2, bh / 2),
            text,
            fill=(255, 255, 255, 255),
            font=fnt,
            anchor="lm",
        )
        rgba = np.asarray(band, dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        region = frames[k, y : y + bh].astype(np.float32)
        frames[k, y : y + bh] = (region * (1 - alpha) + rgba[..., :3] * alpha + 0.5).astype(
            np.uint8
        )
    return VideoClip(frames, clip.fps)


def picture_in_picture(clip: VideoClip, rng: np.random.Generator, host: VideoClip) -> VideoClip:
    """The clip at half size, with a thin border, in a random corner of the host footage."""
    n, h, w = clip.frames.shape[:3]
    pw, ph = even(w / 2), even(h / 2)
    background = _host_frames(host, n, (w, h))
    mx, my = round(w * 0.04), round(h * 0.05)
    corner = int(rng.integers(4))
    x = mx if corner % 2 == 0 else w - pw - mx
    y = my if corner < 2 else h - ph - my
    out = np.stack(background)
    out[:, y - 2 : y + ph + 2, x - 2 : x + pw + 2] = 235
    for k in range(n):
        out[k, y : y + ph, x : x + pw] = _resize(clip.frames[k], (pw, ph))
    return VideoClip(out, clip.fps)


def _perspective(
    out_pts: Sequence[tuple[float, float]], in_pts: NDArray[np.float64]
) -> tuple[float, ...]:
    """PIL's PERSPECTIVE coefficients mapping output points to input points."""
    rows: list[list[float]] = []
    rhs: list[float] = []
    for (x, y), (u, v) in zip(out_pts, in_pts, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([float(u), float(v)])
    solution = np.linalg.solve(np.asarray(rows), np.asarray(rhs))
    return tuple(float(c) for c in solution)


def phone_camera(clip: VideoClip, rng: np.random.Generator, host: VideoClip) -> VideoClip:
    """A phone filming the screen.

    The screen fills 82-94 % of a 30 frames/s camera picture, seen slightly
    off-axis (each corner moved by up to 4 % of the width) with a slow hand
    shake; the picture is blurred (Gaussian, radius 0.8-1.4 px), tinted (gain
    0.85-1.15 per channel and a 6-18 level lift from room light), crossed by a
    moiré pattern (a 3.5-6 px grating at 4-10 % depth, drifting) and sensor
    noise (sigma 3-6 levels).
    """
    camera = frame_rate(30.0, blend=False)(clip, rng, host)
    n, h, w = camera.frames.shape[:3]
    fill = float(rng.uniform(0.82, 0.94))
    sw, sh = w * fill, h * fill
    x0, y0 = (w - sw) / 2, (h - sh) / 2
    corners = np.array([[x0, y0], [x0 + sw, y0], [x0 + sw, y0 + sh], [x0, y0 + sh]])
    corners += rng.uniform(-0.04, 0.04, size=(4, 2)) * w
    shake = rng.uniform(-0.006, 0.006, size=2) * w
    shake_hz = float(rng.uniform(0.3, 0.8))
    source = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    radius = float(rng.uniform(0.8, 1.4))
    gain = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    lift = np.float32(rng.uniform(6, 18))
    period = float(rng.uniform(3.5, 6.0))
    angle = float(rng.uniform(0, math.pi))
    depth = np.float32(rng.uniform(0.04, 0.10))
    sigma = np.float32(rng.uniform(3, 6))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase_map = (2 * math.pi / period) * (xx * math.cos(angle) + yy * math.sin(angle))
    sin_map, cos_map = np.sin(phase_map) * depth, np.cos(phase_map) * depth
    out = np.empty_like(camera.frames)
    for k in range(n):
        t = k / camera.fps
        drift = shake * math.sin(2 * math.pi * shake_hz * t)
        coeffs = _perspective([tuple(p + drift) for p in corners], source)
        image = Image.fromarray(camera.frames[k]).transform(
            (w, h),
            Image.Transform.PERSPECTIVE,
            coeffs,
            Image.Resampling.BILINEAR,
            fillcolor=(22, 20, 18),
        )
        blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
        drift_phase = 0.7 * k  # sin(a + b) = sin a cos b + cos a sin b
        moire = (
            1
            + sin_map * np.float32(math.cos(drift_phase))
            + cos_map * np.float32(math.sin(drift_phase))
        )
        x = (blurred * gain + lift) * moire[..., None]
        x += rng.standard_normal(size=x.shape, dtype=np.float32) * sigma
        out[k] = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    return VideoClip(out, camera.fps)


REGISTRY: tuple[Degradation, ...] = (
    Degradation("clean", "no change (encoded as H.264 at CRF 23)", 99.0, identity),
    Degradation(
        "reencode_low", "re-encoded at 96 kbit/s (480x270: heavy blocking)", 99.0, identity, 96_000
    ),
    Degradation("scale0.25", "scaled to 0.25x (120x68)", 99.0, scale(0.25)),
    Degradation("scale0.5", "scaled to 0.5x (240x136)", 99.0, scale(0.5)),
    Degradation("scale2", "scaled to 2x (960x540)", 99.0, scale(2.0)),
    Degradation("fps24", "25 -> 24 frames/s, frames dropped", 99.0, frame_rate(24.0, blend=False)),
    Degradation("fps30", "25 -> 30 frames/s, frames blended", 99.0, frame_rate(30.0, blend=True)),
    Degradation("fps60", "25 -> 60 frames/s, frames repeated", 99.0, frame_rate(60.0, blend=False)),
    Degradation("letterbox", "whole picture in a 4:3 frame, bars top and bottom", 99.0, box(4 / 3)),
    Degradation(
        "pillarbox", "whole picture in a 2.37:1 frame, bars left and right", 99.0, box(64 / 27)
    ),
    Degradation("crop5", "5 % of width and height cut, scaled back", 95.0, crop(0.05)),
    Degradation("crop10", "10 % of width and height cut, scaled back", 95.0, crop(0.10)),
    Degradation("brightness", "+/-25-40 levels", 95.0, brightness),
    Degradation("contrast", "x0.6-0.75 or x1.3-1.5 around mid-grey", 95.0, contrast),
    Degradation("gamma", "gamma 0.6-0.75 or 1.4-1.7", 95.0, gamma),
    Degradation("logo", "a channel logo (18 x 11 % of the frame) in a corner", 95.0, logo),
    Degradation(
        "caption", "a scrolling news ticker over the bottom 14 % (+4 % margin)", 95.0, caption
    ),
    Degradation(
        "pip_half",
        "picture-in-picture: the clip at half size in a corner of unrelated footage",
        95.0,
        picture_in_picture,
        uses_host=True,
    ),
    Degradation(
        "phone",
        "phone camera: 30 frames/s, perspective, shake, blur, colour cast, moire, noise",
        80.0,
        phone_camera,
    ),
)
"""Every degradation, in table order."""

_BY_NAME = {d.name: d for d in REGISTRY}


def get(name: str) -> Degradation:
    """The degradation called ``name``."""
    return _BY_NAME[name]
