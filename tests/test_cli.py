"""Tests of the ``acr`` command line.

The main paths run the command as users do, in a real subprocess
(``python -m acr.cli``); secondary checks call :func:`acr.cli.main` in this
process, which saves the interpreter start-up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, SONG_RATE, synth_song, write_audio

import indexer.job
from acr import Index, cli

SONG_SECONDS = 20.0
EXCERPT_SECONDS = 5.0
OFFSET_TOLERANCE_S = 0.1


def run(*args: object, module: str = "acr.cli") -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> ARGS...`` with the repository importable; capture its output."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=300,
        check=False,
    )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """Parse output that must be one JSON object per line."""
    lines = stdout.splitlines()
    assert lines, "no output"
    return [json.loads(line) for line in lines]


def in_process(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run ``acr ARGS...`` in this process (cheaper than a subprocess); return status, out, err."""
    capsys.readouterr()
    status = cli.main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def assert_clean_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit status 1 and ``acr: error: ...`` on stderr, without a traceback."""
    assert result.returncode == 1, result
    assert result.stderr.startswith("acr: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


@dataclass(frozen=True)
class Library:
    """Songs indexed once for the whole module by ``acr index``."""

    root: Path
    index_dir: Path
    songs: dict[str, Path]
    indexed: subprocess.CompletedProcess[str]

    def excerpt(
        self, name: str, seed: int, start_s: float, seconds: float = EXCERPT_SECONDS
    ) -> Path:
        """Cut ``seconds`` of the song made from ``seed``, from ``start_s`` on, into a query."""
        song = synth_song(seed, SONG_SECONDS)
        begin = round(start_s * SONG_RATE)
        excerpt = song[begin : begin + round(seconds * SONG_RATE)]
        return write_audio(self.root / "queries" / name, excerpt)


SEEDS = {"alpha.wav": 1, "sub/bravo.flac": 2, "sub/deeper/charlie.ogg": 3, "delta.wav": 4}
NEGATIVE_SEED = 99


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    """Four 20 s songs (WAV, FLAC, Ogg Vorbis) in nested folders, indexed by ``acr index``."""
    root = tmp_path_factory.mktemp("cli")
    songs = {
        Path(name).stem: write_audio(root / "music" / name, synth_song(seed, SONG_SECONDS))
        for name, seed in SEEDS.items()
    }
    index_dir = root / "index"
    # Two worker processes: the parallel path, as users run it.
    indexed = run("index", "--index-dir", index_dir, "--workers", "2", root / "music")
    return Library(root, index_dir, songs, indexed)


@pytest.fixture(scope="module")
def catalogue(library: Library) -> list[dict[str, Any]]:
    """``acr list --json`` of the library's index."""
    listed = run("list", "--index-dir", library.index_dir, "--json")
    assert listed.returncode == 0, listed.stderr
    contents: list[dict[str, Any]] = json.loads(listed.stdout)
    return contents


def copy_index(library: Library, tmp_path: Path) -> Path:
    """A private copy of the library's index, for tests that change it."""
    copy = tmp_path / "index-copy"
    shutil.copytree(library.index_dir, copy, ignore=shutil.ignore_patterns("writer.lock"))
    return copy


# -- acr index ---------------------------------------------------------------------------------


def test_index_prints_a_summary(library: Library) -> None:
    result = library.indexed
    assert result.returncode == 0, result.stderr
    assert "indexed 4 files" in result.stdout
    assert "0 failed" in result.stdout
    assert "Traceback" not in result.stderr


def test_index_json_reports_failures_and_exit_status(
    library: Library, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index_dir = copy_index(library, tmp_path)
    (tmp_path / "new").mkdir()
    shutil.copy(library.songs["alpha"], tmp_path / "new" / "alpha again.wav")
    write_audio(tmp_path / "new" / "echo.wav", synth_song(5, 6.0))
    (tmp_path / "new" / "broken.wav").write_bytes(b"RIFF\x00\x10\x00\x00WAVEfmt garbage")

    # `python -m indexer` is `acr index`; no worker processes, to save their start-up.
    new = tmp_path / "new"
    result = run("--index-dir", index_dir, "--workers", "0", "--json", new, module="indexer")

    assert result.returncode == 1
    [summary] = json_lines(result.stdout)
    assert summary["files_seen"] == 3
    assert (summary["indexed"], summary["skipped"]) == (1, 1)
    [failure] = summary["failed"]
    assert failure["path"].endswith("broken.wav")
    assert failure["code"] in {"corrupt_media", "unsupported_format"}
    assert failure["message"]
    assert summary["hours_indexed"] == pytest.approx(6.0 / 3600, rel=0.01)

    status, out, _ = in_process(capsys, "index", "--index-dir", index_dir, "--workers", "0", new)
    assert status == 1
    assert "broken.wav" in out and failure["code"] in out
    assert "2 already indexed, 1 failed" in out


def test_index_ctrl_c_exits_130_and_says_rerun_resumes(
    library: Library,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(path: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(indexer.job, "fingerprint_file", interrupted)
    args = ["--index-dir", tmp_path / "idx", "--workers", "0", library.root / "music"]
    status, _, err = in_process(capsys, "index", *args)
    assert status == 130
    assert "interrupted" in err and "rerun" in err
    assert "Traceback" not in err


# -- acr match ---------------------------------------------------------------------------------


def test_match_json_one_line_per_query(library: Library) -> None:
    bravo = library.excerpt("bravo at 7.wav", SEEDS["sub/bravo.flac"], 7.0)
    charlie = library.excerpt("charlie at 12.3.flac", SEEDS["sub/deeper/charlie.ogg"], 12.3)
    negative = write_audio(library.root / "queries" / "unknown.wav", synth_song(NEGATIVE_SEED, 6.0))

    result = run("match", "--index-dir", library.index_dir, "--json", bravo, negative, charlie)

    assert result.returncode == 0, result.stderr
    first, second, third = json_lines(result.stdout)
    assert first["query"] == str(bravo)
    match = first["match"]
    assert match["title"] == "bravo"
    assert match["source"] == str(library.songs["bravo"].resolve())
    assert match["offset_s"] == pytest.approx(7.0, abs=OFFSET_TOLERANCE_S)
    assert 0.5 <= match["confidence"] <= 1.0
    assert isinstance(match["content_id"], str) and match["content_id"]
    assert first["elapsed_ms"] > 0
    assert "error" not in first

    assert second["query"] == str(negative)
    assert second["match"] is None
    assert "error" not in second

    assert third["match"]["title"] == "charlie"
    assert third["match"]["offset_s"] == pytest.approx(12.3, abs=OFFSET_TOLERANCE_S)


def test_match_bad_queries_get_an_error_object(library: Library) -> None:
    good = library.excerpt("alpha at 3.wav", SEEDS["alpha.wav"], 3.0)
    corrupt = library.root / "queries" / "corrupt.mp3"
    corrupt.write_bytes(np.random.default_rng(0).bytes(8192))
    empty = library.root / "queries" / "empty.wav"
    empty.write_bytes(b"")
    missing = library.root / "queries" / "missing.wav"

    result = run("match", "--index-dir", library.index_dir, "--json", corrupt, good, empty, missing)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    records = json_lines(result.stdout)
    assert [r["query"] for r in records] == [str(p) for p in (corrupt, good, empty, missing)]
    for record in (records[0], records[2], records[3]):
        assert record["match"] is None
        assert set(record["error"]) == {"code", "message"}
        assert record["error"]["message"]
    assert records[0]["error"]["code"] in {"unsupported_format", "corrupt_media"}
    assert records[2]["error"]["code"] == "empty_media"
    assert records[3]["error"]["code"] == "file_not_found"
    assert records[1]["match"]["title"] == "alpha"
    assert records[1]["match"]["offset_s"] == pytest.approx(3.0, abs=OFFSET_TOLERANCE_S)
    assert "error" not in records[1]


def test_match_top_k_segments_and_readable_output(
    library: Library, capsys: pytest.CaptureFixture[str]
) -> None:
    alpha = synth_song(SEEDS["alpha.wav"], SONG_SECONDS)
    delta = synth_song(SEEDS["delta.wav"], SONG_SECONDS)
    # The last 4 s of alpha, then the first 4 s of delta (an ad break straddled).
    straddle = np.concatenate([alpha[-4 * SONG_RATE :], delta[: 4 * SONG_RATE]])
    straddling = write_audio(library.root / "queries" / "straddle.wav", straddle)
    single = library.excerpt("delta at 9.wav", SEEDS["delta.wav"], 9.0)

    result = run(
        "match", "--index-dir", library.index_dir, "--json", "--top-k", "3", straddling, single
    )

    assert result.returncode == 0, result.stderr
    both, one = json_lines(result.stdout)
    assert both["match"]["title"] in {"alpha", "delta"}
    assert isinstance(both["alternatives"], list)
    assert [s["title"] for s in both["segments"]] == ["alpha", "delta"]
    first_part, second_part = both["segments"]
    assert first_part["offset_s"] == pytest.approx(SONG_SECONDS - 4, abs=OFFSET_TOLERANCE_S)
    # delta starts 4 s into the sample. Whether a segment's offset_s names where the sample
    # (-4 s) or the segment (0 s) starts in its reference is the core's call: accept both.
    assert min(abs(second_part["offset_s"] - start) for start in (-4.0, 0.0)) < OFFSET_TOLERANCE_S
    assert first_part["query_end_s"] <= second_part["query_start_s"] + OFFSET_TOLERANCE_S
    assert one["match"]["title"] == "delta"
    assert all(alt["content_id"] != one["match"]["content_id"] for alt in one["alternatives"])

    index = ["--index-dir", library.index_dir]
    status, out, _ = in_process(capsys, "match", *index, single, straddling)
    assert status == 0
    first, second = out.splitlines()
    assert first.startswith(f"{single}: delta [") and "at 9.0" in first
    assert second.startswith(f"{straddling}: ") and "segments" in second


def test_match_threshold_and_limits(library: Library, capsys: pytest.CaptureFixture[str]) -> None:
    excerpt = library.excerpt("alpha at 10.wav", SEEDS["alpha.wav"], 10.0, seconds=8.0)
    index = ["--index-dir", library.index_dir, "--json"]

    status, out, _ = in_process(capsys, "match", *index, "--min-confidence", "1", excerpt)
    assert status == 0
    [record] = json_lines(out)
    assert record["match"] is None or record["match"]["confidence"] == 1.0

    status, out, _ = in_process(capsys, "match", *index, "--max-seconds", "2", excerpt)
    assert status == 1
    [record] = json_lines(out)
    assert record["error"]["code"] == "media_too_long"

    status, out, _ = in_process(capsys, "match", *index, "--max-mb", "0.01", excerpt)
    assert status == 1
    [record] = json_lines(out)
    assert record["error"]["code"] == "media_too_large"


# -- list / stats / remove / compact -----------------------------------------------------------


def test_list_and_stats(
    library: Library, catalogue: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    contents = catalogue
    assert sorted(c["title"] for c in contents) == sorted(library.songs)
    assert {c["source"] for c in contents} == {str(p.resolve()) for p in library.songs.values()}

    status, out, _ = in_process(capsys, "list", "--index-dir", library.index_dir)
    assert status == 0
    assert len(out.splitlines()) == len(library.songs)
    assert all(c["content_id"] in out for c in contents)

    stats = run("stats", "--index-dir", library.index_dir, "--json")
    assert stats.returncode == 0
    numbers = json.loads(stats.stdout)
    assert numbers["contents"] == 4
    assert numbers["duration_s"] == pytest.approx(4 * SONG_SECONDS, abs=0.5)
    assert numbers["codes"] > 0 and numbers["bytes_on_disk"] > 0

    status, out, _ = in_process(capsys, "stats", "--index-dir", library.index_dir)
    assert status == 0 and "contents:  4" in out


def test_remove_and_compact(
    library: Library, catalogue: list[dict[str, Any]], tmp_path: Path
) -> None:
    index_dir = copy_index(library, tmp_path)
    by_title = {c["title"]: c["content_id"] for c in catalogue}

    unknown = run("remove", "--index-dir", index_dir, by_title["alpha"], "no-such-id")
    assert_clean_error(unknown, "no-such-id")

    removed = run("remove", "--index-dir", index_dir, by_title["alpha"], by_title["delta"])
    assert removed.returncode == 0, removed.stderr
    assert by_title["alpha"] in removed.stdout

    compacted = run("compact", "--index-dir", index_dir)
    assert compacted.returncode == 0, compacted.stderr
    assert "compacted" in compacted.stdout

    with Index.open(index_dir, readonly=True) as index:
        assert sorted(c.title for c in index.list()) == ["bravo", "charlie"]
        assert index.stats().segments == 1
        query = library.excerpt("alpha at 5.wav", SEEDS["alpha.wav"], 5.0)
        assert index.match(query).best is None


# -- errors ------------------------------------------------------------------------------------


def test_missing_index_is_a_clean_error(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    result = run("match", "--index-dir", nowhere, "--json", "q.wav")
    assert_clean_error(result, "no index at", str(nowhere))
    assert result.stdout == ""
    assert not nowhere.exists()


@pytest.mark.parametrize("command", ["list", "stats", "remove", "compact"])
def test_missing_index_in_process(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["some-id"] if command == "remove" else []
    assert cli.main([command, "--index-dir", str(tmp_path / "nowhere"), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("acr: error: no index at")
    assert not (tmp_path / "nowhere").exists()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    result = run("match", "--index-dir", "somewhere")
    assert result.returncode == 2
    assert "usage:" in result.stderr and "Traceback" not in result.stderr
    for args in (
        [],
        ["frobnicate"],
        ["match", "--index-dir", "x", "--top-k", "0", "q.wav"],
        ["match", "--index-dir", "x", "--min-confidence", "1.5", "q.wav"],
        ["index", "--index-dir", "x", "--batch-size", "many", "song.wav"],
        ["index", "--index-dir", "x", "--metadata", "[1, 2]", "song.wav"],
        ["remove", "--index-dir", "x"],
    ):
        with pytest.raises(SystemExit) as caught:
            cli.main(args)
        assert caught.value.code == 2, args
        assert "usage:" in capsys.readouterr().err
