"""Fast checks of the video benchmark's pieces (benchmarks/video): degradations, shots,
query drawing, media round trips and report helpers. No corpus is rendered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.report import Outcome
from benchmarks.video import degrade, queries, report
from benchmarks.video.corpus import Item
from benchmarks.video.media import VideoClip, encode_video, read_clip
from benchmarks.video.scenes import (
    DISSOLVE_S,
    Black,
    Pan,
    Renderer,
    Shot,
    Slate,
    low_information_spans,
    sequence_duration,
    shot_starts,
)

W, H, FPS = 96, 54, 25.0


def _clip(n: int = 10, seed: int = 0) -> VideoClip:
    """Smooth random pictures that change from frame to frame."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(n, 6, 8, 3)).astype(np.uint8)
    frames = np.stack(
        [np.asarray(Image.fromarray(f).resize((W, H), Image.Resampling.BILINEAR)) for f in coarse]
    )
    return VideoClip(frames, FPS)


@pytest.mark.parametrize("name", [d.name for d in degrade.REGISTRY])
def test_degradations_are_pure_and_seeded(name: str) -> None:
    clip, host = _clip(), _clip(seed=1)
    before = clip.frames.copy()
    deg = degrade.get(name)
    a = deg.apply(clip, np.random.default_rng(7), host)
    b = deg.apply(clip, np.random.default_rng(7), host)
    np.testing.assert_array_equal(clip.frames, before)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.frames.dtype == np.uint8 and a.frames.ndim == 4 and a.frames.shape[3] == 3
    assert a.frames.shape[1] % 2 == 0 and a.frames.shape[2] % 2 == 0
    assert abs(a.duration_s - clip.duration_s) <= 1.0 / a.fps + 1e-9


def test_geometry_of_scaling_and_bars() -> None:
    clip, rng = _clip(), np.random.default_rng(0)
    assert degrade.get("scale0.25").apply(clip, rng, clip).frames.shape[1:3] == (14, 24)
    assert degrade.get("scale2").apply(clip, rng, clip).frames.shape[1:3] == (108, 192)
    letterbox = degrade.get("letterbox").apply(clip, rng, clip).frames
    assert letterbox.shape[1:3] == (72, 96)
    assert letterbox[:, :9].max() == 0 and letterbox[:, -9:].max() == 0
    np.testing.assert_array_equal(letterbox[:, 9:63], clip.frames)
    pillarbox = degrade.get("pillarbox").apply(clip, rng, clip).frames
    assert pillarbox.shape[1:3] == (54, 128)
    assert pillarbox[:, :, :16].max() == 0
    np.testing.assert_array_equal(pillarbox[:, :, 16:112], clip.frames)
    for name in ("crop5", "crop10", "brightness", "contrast", "gamma", "logo", "caption"):
        assert degrade.get(name).apply(clip, rng, clip).frames.shape == clip.frames.shape


def test_frame_rate_changes_keep_time() -> None:
    clip = _clip(25)
    for name, fps, n in (("fps24", 24.0, 24), ("fps30", 30.0, 30), ("fps60", 60.0, 60)):
        out = degrade.get(name).apply(clip, np.random.default_rng(0), clip)
        assert out.fps == fps and out.frames.shape[0] == n
    sixty = degrade.get("fps60").apply(clip, np.random.default_rng(0), clip).frames
    np.testing.assert_array_equal(sixty[12], clip.frames[5])  # t = 0.2 s in both


def test_brightness_contrast_gamma_change_levels() -> None:
    grey = VideoClip(np.full((2, H, W, 3), 100, dtype=np.uint8), FPS)
    for name in ("brightness", "gamma"):
        out = degrade.get(name).apply(grey, np.random.default_rng(3), grey).frames
        assert abs(int(out[0, 0, 0, 0]) - 100) >= 10
    out = degrade.get("contrast").apply(grey, np.random.default_rng(3), grey).frames
    assert out[0, 0, 0, 0] != 100


def test_picture_in_picture_shows_the_clip_at_half_size() -> None:
    clip, host = _clip(4), VideoClip(np.zeros((4, H, W, 3), dtype=np.uint8), FPS)
    out = degrade.get("pip_half").apply(clip, np.random.default_rng(2), host).frames
    assert out.shape == clip.frames.shape
    inset = (out.sum(axis=(0, 3)) > 0).sum()
    assert 0.2 * W * H < inset < 0.4 * W * H  # a quarter of the area, plus the border


def test_phone_camera_films_at_30_fps_with_noise() -> None:
    clip = _clip(25)
    out = degrade.get("phone").apply(clip, np.random.default_rng(4), clip)
    assert out.fps == 30.0 and out.frames.shape == (30, H, W, 3)
    diff = np.abs(out.frames.astype(np.int16) - clip.frames[np.arange(30) * 25 // 30])
    assert diff.mean() > 5


def test_shots_dissolve_and_shared_shots_render_identically() -> None:
    image = Image.fromarray(_clip(1).frames[0]).resize((320, 240))
    renderer = Renderer({"img": image}, {}, (W, H))
    pan = Pan("img", (0.5, 0.5, 0.9), (0.4, 0.6, 0.5), False)
    shots = [
        Shot(Slate(("Title",), (0, 0, 50), (0, 50, 0)), 1.0, "fade"),
        Shot(pan, 2.0, "dissolve"),
        Shot(Black(), 0.5, "cut"),
    ]
    assert shot_starts(shots) == pytest.approx([0.0, 1.0 - DISSOLVE_S, 3.0 - DISSOLVE_S])
    assert sequence_duration(shots) == pytest.approx(3.5 - DISSOLVE_S)
    spans = [t for span in low_information_spans(shots) for t in span]
    assert spans == pytest.approx([0.0, 1.0, 3.0 - DISSOLVE_S, 3.5 - DISSOLVE_S])
    frames = list(renderer.frames(shots, FPS))
    assert len(frames) == round((3.5 - DISSOLVE_S) * FPS)
    assert frames[0].max() == 0  # fade in from black
    assert frames[-1].max() == 0
    again = list(renderer.frames([shots[1]], FPS))
    np.testing.assert_array_equal(again[20], renderer.shot(shots[1], 20 / FPS))


def test_query_starts_avoid_black_and_slates(tmp_path: Path) -> None:
    item = Item("x", "programme", tmp_path / "x.mp4", 60.0, ((0.0, 30.0), (40.0, 60.0)))
    spec = queries.ClipSpec("positive", 0, 3)
    starts = [queries.draw_start(item, 5.0, queries.rng_for(spec, k)) for k in range(20)]
    for start in starts:
        assert queries.low_information_share(item, start, 5.0) <= queries.MAX_LOW_INFORMATION
        assert (start * FPS) == pytest.approx(round(start * FPS))
    again = queries.draw_start(item, 5.0, queries.rng_for(spec, 0))
    assert again == starts[0]
    assert [s.item for s in queries.assign_clips(5, 2, "positive")] == [0, 1, 0, 1, 0]


def test_encode_and_read_clip_round_trip(tmp_path: Path) -> None:
    clip = _clip(50)
    path = tmp_path / "clip.mp4"
    assert encode_video(path, clip.frames, FPS, crf=18) == 50
    part = read_clip(path, 1.0, 0.4)
    assert part.frames.shape == (10, H, W, 3)
    error = np.abs(part.frames.astype(np.int16) - clip.frames[25:35]).mean()
    assert error < 12
    low = tmp_path / "low.mp4"
    encode_video(low, clip.frames, FPS, bitrate=30_000)
    assert low.stat().st_size < path.stat().st_size


def _outcome(
    query_id: str, track: str, matched: str | None, correct: bool, **kw: object
) -> Outcome:
    fields: dict[str, object] = {
        "query_id": query_id,
        "kind": "positive",
        "track": track,
        "length_s": 5,
        "degradation": "clean",
        "true_offset_s": 1.0,
        "latency_ms": 3.0,
        "matched_track": matched,
        "offset_s": 1.0 if matched else None,
        "confidence": 0.9 if matched else None,
        "score": 10 if matched else None,
        "speed": 1.0 if matched else None,
        "pitch": None,
        "content_ok": correct,
        "correct": correct,
        "equivalent_offset_s": None,
        "equivalence": None,
        "candidate_track": matched,
        "candidate_confidence": 0.9 if matched else None,
        "candidate_correct": correct,
        "candidate_content_ok": correct,
        "error": None,
    }
    fields.update(kw)
    return Outcome(**fields)  # type: ignore[arg-type]


def test_report_helpers() -> None:
    siblings = {"twin-00a": "twin-00b", "twin-00b": "twin-00a"}
    outcomes = [
        _outcome("p-000-clean-5s", "twin-00a", "twin-00a", True),
        _outcome("p-001-clean-5s", "twin-00a", "twin-00b", True, equivalence="duplicate"),
        _outcome("p-002-clean-5s", "twin-00b", "twin-00a", False),
        _outcome("p-003-clean-5s", "programme-01", "programme-01", True),
    ]
    twins = report.near_duplicates(outcomes, siblings)
    assert (twins["n"], twins["correct"], twins["sibling_same"], twins["sibling_wrong"]) == (
        3,
        2,
        1,
        1,
    )
    negatives = [
        _outcome("n-black-000-clean-5s", "black", None, False, kind="negative"),
        _outcome("n-unseen-000-clean-5s", "unseen-00", "programme-01", False, kind="negative"),
    ]
    by_kind = report.false_positives_by_kind(negatives)
    assert by_kind["black"]["fp"] == 0 and by_kind["unseen"]["fp"] == 1
    summary = {
        "top1": {"clean": {"5": {"n": 4, "pct": 75.0}}},
        "match_latency": report.match_latency(outcomes),
        "costs": {"extract_xrt_per_core": 12.0},
    }
    rows = report.evaluate_targets(summary, report.targets_for({"clean": 99.0, "logo": 95.0}))
    verdicts = {r["label"]: (r["passed"], r["miss"]) for r in rows}
    assert verdicts["5 s clean, top-1"] == (False, 24.0)
    assert verdicts["5 s logo, top-1"] == (None, None)
    assert verdicts["p50 match, 5 s sample's hashes"] == (True, 0.0)


def test_flat_clips_are_recognised() -> None:
    ramp = np.linspace(60, 120, W, dtype=np.float32)[None, :, None]  # a smooth gradient
    gradient = np.broadcast_to(ramp, (10, H, W, 3)).astype(np.uint8)
    assert queries.flat_share(VideoClip(gradient, FPS)) == 1.0
    assert queries.flat_share(_clip(10)) == 0.0


def test_judge_accepts_verbatim_repeats_only(tmp_path: Path) -> None:
    from benchmarks.video.media import thumbnails
    from benchmarks.video.run import Judge

    half = _clip(50, seed=5).frames
    path = tmp_path / "looped.mp4"
    encode_video(path, np.concatenate([half, half]), FPS, crf=18)  # 2 s, then the same 2 s
    item = Item("looped", "advert", path, 4.0, ())
    judge = Judge([item], ["cid"])
    clean = thumbnails(read_clip(path, 0.0, 1.0))
    assert judge.verdict("cid", 0.0, clean, 1.0, "cid", 0.2)[:2] == (True, True)
    assert judge.verdict("cid", 0.0, clean, 1.0, "cid", 2.0) == (True, True, 2.0, "repeat")
    assert judge.verdict("cid", 0.0, clean, 1.0, "cid", 0.8)[:2] == (True, False)
    assert judge.verdict("cid", 0.0, clean, 1.0, "other", 0.0)[:2] == (False, False)
    assert judge.verdict(None, 0.0, clean, 1.0, "cid", 0.0)[:2] == (False, False)
