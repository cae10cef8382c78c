"""``acr index --signal video`` and ``acr match`` on video files, with sound and pictures fused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from acr import cli
from acr.index.store import Index
from acr.index.video import VideoIndex
from acr.video_matching import FUSION_FLOOR
from tests.video_clips import movie

SECONDS = 16.0


def acr(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    capsys.readouterr()
    status = cli.main([str(a) for a in args])
    out, _ = capsys.readouterr()
    return status, out


def match(capsys: pytest.CaptureFixture[str], index_dir: Path, query: Path) -> dict[str, Any]:
    status, out = acr(capsys, "match", "--index-dir", index_dir, "--json", "--top-k", "2", query)
    assert status == 0, out
    record: dict[str, Any] = json.loads(out)
    return record


@pytest.fixture(scope="module")
def movies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("movies")
    for seed in (31, 32):
        (folder / f"movie-{seed}.mp4").write_bytes(movie(seed))
    return folder


def test_index_both_signals_and_match_on_each_and_both(
    movies: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index_dir = tmp_path / "index"
    status, out = acr(
        capsys, "index", "--index-dir", index_dir, "--workers", "0", "--no-progress", movies
    )
    assert status == 0, out
    status, out = acr(
        capsys, "index", "--index-dir", index_dir, "--signal", "video", "--json", movies
    )
    summary = json.loads(out)
    assert status == 0 and summary["indexed"] == 2 and summary["failed"] == []
    assert summary["index_dir"] == str(index_dir / "video")
    assert summary["hours_indexed"] == pytest.approx(2 * SECONDS / 3600, rel=0.01)
    status, out = acr(capsys, "index", "--index-dir", index_dir, "--signal", "video", movies)
    assert status == 0 and "2 already indexed" in out

    both = tmp_path / "both.mp4"
    both.write_bytes(movie(31, start=6.0, seconds=5.0))
    fused = match(capsys, index_dir, both)["match"]
    assert fused["title"] == "movie-31"
    assert fused["offset_s"] == pytest.approx(6.0, abs=0.1)  # the audio's precision
    with Index.open(index_dir, readonly=True) as audio:
        heard_alone = audio.match(both, min_confidence=FUSION_FLOOR).best
    with VideoIndex.open(index_dir / "video", readonly=True) as video:
        seen_alone = video.match(both, min_confidence=FUSION_FLOOR).best
    assert heard_alone is not None and seen_alone is not None
    assert heard_alone.content_id == seen_alone.content_id == fused["content_id"]
    assert fused["score"] == heard_alone.score + seen_alone.score  # one content, both signals

    pictures = tmp_path / "pictures-with-unknown-sound.mp4"
    pictures.write_bytes(movie(32, start=3.0, seconds=5.0, sound=99))
    seen = match(capsys, index_dir, pictures)["match"]
    assert seen["title"] == "movie-32" and seen["offset_s"] == pytest.approx(3.0, abs=0.25)

    sound = tmp_path / "sound-over-black.mp4"
    sound.write_bytes(movie(32, start=9.0, seconds=5.0, with_pictures=False))
    heard = match(capsys, index_dir, sound)["match"]
    assert heard["title"] == "movie-32" and heard["offset_s"] == pytest.approx(9.0, abs=0.1)

    # Sound of one, pictures of the other: both candidates are reported.
    mixed = tmp_path / "mixed.mp4"
    mixed.write_bytes(movie(31, start=2.0, seconds=5.0, sound=32))
    record = match(capsys, index_dir, mixed)
    titles = {record["match"]["title"], *(m["title"] for m in record["alternatives"])}
    assert titles == {"movie-31", "movie-32"}


def test_a_video_only_index_matches_pictures_and_reports_bad_files(
    movies: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index_dir = tmp_path / "index"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes((movies / "movie-31.mp4").read_bytes()[:2000])
    status, out = acr(
        capsys,
        "index",
        "--index-dir",
        index_dir,
        "--signal",
        "video",
        movies / "movie-31.mp4",
        broken,
    )
    assert status == 1
    assert "1 indexed" in out and "broken.mp4: [corrupt_media]" in out
    query = tmp_path / "q.mp4"
    query.write_bytes(movie(31, start=8.0, seconds=5.0, sound=77))
    best = match(capsys, index_dir, query)["match"]
    assert best["title"] == "movie-31" and best["offset_s"] == pytest.approx(8.0, abs=0.25)
    status, out = acr(capsys, "match", "--index-dir", index_dir, "--json", broken)
    assert status == 1 and json.loads(out)["error"]["code"] == "corrupt_media"


def test_list_stats_remove_and_compact_cover_the_pictures(
    movies: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index_dir = tmp_path / "index"
    status, _ = acr(
        capsys, "index", "--index-dir", index_dir, "--workers", "0", "--no-progress",
        movies / "movie-31.mp4",
    )  # fmt: skip
    assert status == 0
    status, _ = acr(capsys, "index", "--index-dir", index_dir, "--signal", "video", movies)
    assert status == 0
    status, out = acr(capsys, "list", "--index-dir", index_dir)
    lines = sorted(line.split("\t")[2:5:2] for line in out.splitlines())
    assert status == 0 and lines == [
        ["movie-31", "audio"],
        ["movie-31", "video"],
        ["movie-32", "video"],
    ]
    status, out = acr(capsys, "stats", "--index-dir", index_dir, "--json")
    numbers = json.loads(out)
    assert numbers["contents"] == 1 and numbers["video"]["contents"] == 2
    assert numbers["video"]["duration_s"] == pytest.approx(2 * SECONDS, abs=0.5)
    status, out = acr(capsys, "stats", "--index-dir", index_dir)
    assert status == 0 and "video:     2 contents" in out

    status, out = acr(capsys, "list", "--index-dir", index_dir, "--json")
    by_title = {(r["title"], r["kind"]): r["content_id"] for r in json.loads(out)}
    shared = by_title["movie-31", "audio"]
    assert by_title["movie-31", "video"] == shared  # sound and pictures: one content
    assert cli.main(["remove", "--index-dir", str(index_dir), shared, "no-such-id"]) == 1
    with VideoIndex.open(index_dir / "video", readonly=True) as video:
        assert len(video.list()) == 2  # a typo removes nothing
    status, out = acr(capsys, "remove", "--index-dir", index_dir, shared)
    assert status == 0 and out.count(f"removed {shared}") == 2 and "(pictures)" in out
    status, out = acr(capsys, "compact", "--index-dir", index_dir)
    assert status == 0 and out.count("compacted") == 2
    with VideoIndex.open(index_dir / "video", readonly=True) as video:
        assert [r.title for r in video.list()] == ["movie-32"] and video.stats().segments == 1
        query = movie(31, start=8.0, seconds=5.0, sound=77)
        assert video.match(query).best is None
    with Index.open(index_dir, readonly=True) as audio:
        assert audio.list() == []

    # An index directory with pictures only.
    video_only = tmp_path / "pictures"
    status, _ = acr(capsys, "index", "--index-dir", video_only, "--signal", "video", movies)
    status, out = acr(capsys, "stats", "--index-dir", video_only, "--json")
    assert status == 0 and "contents" not in json.loads(out) and "video" in json.loads(out)
    status, out = acr(capsys, "list", "--index-dir", video_only)
    assert status == 0 and len(out.splitlines()) == 2
