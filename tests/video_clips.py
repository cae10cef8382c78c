"""Synthetic moving pictures for the video tests, encoded with PyAV.

A clip is a sequence of shots; a shot pans across a random picture with the
spectrum of natural images (1/f amplitude) and moves a few discs over it.
The picture at time ``t`` depends on ``t`` alone, so the same clip can be
rendered at any frame rate and size and stays the same programme.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import numpy as np
from numpy.typing import NDArray

from acr.demo import DEMO_RATE, synth_song

Frame = NDArray[np.uint8]


def _canvas(seed: int, height: int, width: int) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    falloff = np.sqrt(fy**2 + fx**2)
    falloff[0, 0] = 1.0
    planes = []
    for _ in range(3):
        spectrum = (rng.normal(size=(height, width)) + 1j * rng.normal(size=(height, width))) / (
            falloff**1.1
        )
        plane = np.real(np.fft.ifft2(spectrum))
        planes.append((plane - plane.mean()) / plane.std())
    mix = rng.normal(size=(3, 3)) * 0.3 + np.eye(3)
    picture = np.stack(planes, axis=-1) @ mix
    return np.asarray(np.clip(128 + 45 * picture, 0, 255), dtype=np.float32)


class Programme:
    """A synthetic programme: ``frame(t)`` renders the picture at time `t` (seconds)."""

    def __init__(self, seed: int, *, width: int = 320, height: int = 180) -> None:
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.width, self.height = width, height
        self.cuts = np.cumsum(rng.uniform(1.5, 3.5, size=200))
        self._canvases: dict[int, NDArray[np.float32]] = {}
        self._motion = rng.uniform(-1, 1, size=(200, 2))
        self._discs = rng.uniform(0, 1, size=(200, 4, 5))

    def _shot(self, t: float) -> tuple[int, float]:
        shot = int(np.searchsorted(self.cuts, t, side="right"))
        start = float(self.cuts[shot - 1]) if shot else 0.0
        return shot, t - start

    def frame(self, t: float) -> Frame:
        shot, since = self._shot(t)
        h, w = self.height, self.width
        if shot not in self._canvases:
            self._canvases[shot] = _canvas(self.seed * 1000 + shot, int(h * 1.4), int(w * 1.4))
        canvas = self._canvases[shot]
        span_y, span_x = canvas.shape[0] - h, canvas.shape[1] - w
        vy, vx = self._motion[shot]
        y = int((0.5 + 0.12 * vy * since) % 1.0 * span_y)
        x = int((0.5 + 0.12 * vx * since) % 1.0 * span_x)
        picture = canvas[y : y + h, x : x + w].copy()
        yy, xx = np.mgrid[0:h, 0:w]
        for cy, cx, radius, speed, shade in self._discs[shot]:
            py = (cy + 0.1 * speed * since) % 1.0 * h
            px = (cx + 0.15 * speed * since) % 1.0 * w
            inside = (yy - py) ** 2 + (xx - px) ** 2 < (0.05 + 0.1 * radius) ** 2 * h * h
            picture[inside] = 255.0 * shade
        return np.asarray(picture, dtype=np.uint8)


def render(
    frame: Callable[[float], Frame], *, seconds: float, fps: float, start: float = 0.0
) -> Iterator[tuple[float, Frame]]:
    """``(time, frame)`` at `fps` from `start` for `seconds`."""
    for i in range(round(seconds * fps)):
        t = start + i / fps
        yield t, frame(t)


def encode(
    frames: Iterator[tuple[float, Frame]],
    *,
    fps: float,
    container: str = "mp4",
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    audio: NDArray[np.float32] | None = None,
    sample_rate: int = 16000,
) -> bytes:
    """Encode RGB frames (and optionally a mono float32 soundtrack) into a file's bytes."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        rate = Fraction(fps).limit_denominator(1001)
        stream = output.add_stream(codec, rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.options = options or ({"preset": "ultrafast"} if codec == "libx264" else {})
        sound = None
        if audio is not None:
            sound = output.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
        first = True
        for _, frame in frames:
            # 4:2:0 chroma needs even sizes.
            picture = np.ascontiguousarray(
                frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]
            )
            if first:
                stream.height, stream.width = picture.shape[:2]
                first = False
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
        if sound is not None and audio is not None:
            chunk = 1024
            for start in range(0, audio.size, chunk):
                piece = audio[start : start + chunk].reshape(1, -1)
                samples = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
                samples.sample_rate = sample_rate
                samples.pts = start
                for packet in sound.encode(samples):
                    output.mux(packet)
            for packet in sound.encode():
                output.mux(packet)
    return buffer.getvalue()


def movie(
    seed: int,
    *,
    start: float = 0.0,
    seconds: float = 16.0,
    sound: int | None = None,
    with_pictures: bool = True,
    song_seconds: float = 16.0,
) -> bytes:
    """Programme `seed`'s pictures (or a black screen) with song `sound` (default `seed`)."""
    programme = Programme(seed, width=160, height=90)
    song = synth_song(seed if sound is None else sound, song_seconds)
    audio = song[int(start * DEMO_RATE) : int((start + seconds) * DEMO_RATE)]
    picture = programme.frame if with_pictures else (lambda t: np.zeros((90, 160, 3), np.uint8))
    frames = render(picture, seconds=seconds, fps=25, start=start)
    return encode(frames, fps=25, audio=audio.astype(np.float32), sample_rate=DEMO_RATE)
