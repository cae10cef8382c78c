"""Tests of the batch indexer (``indexer``): inputs, manifests, idempotency, failures, workers."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import indexer.job
from acr import ContentRecord, ContentSpec, Index
from acr.errors import IndexStoreError, MediaError
from indexer import BatchInterrupted, ManifestEntry, ManifestError, read_manifest, run_batch
from indexer.job import WORKER_CRASHED, _Outcome, fingerprint_file

SongWriter = Callable[..., Path]

SECONDS = 8.0
"""Songs here only need to be indexed, not matched: keep them short."""

MEDIA_ERROR_CODES = {cls.code for cls in (MediaError, *MediaError.__subclasses__())}


def _index(
    index_dir: Path, inputs: list[Path], *, workers: int = 0, **options: Any
) -> indexer.BatchSummary:
    """Index in this process (``workers=0``) without a progress bar unless told otherwise."""
    paths = [str(p) for p in inputs]
    return run_batch(index_dir, paths, workers=workers, progress=False, **options)


def _contents(index_dir: Path) -> dict[str, ContentRecord]:
    with Index.open(index_dir, readonly=True) as index:
        return {record.title: record for record in index.list()}


def _songs(make_song: SongWriter, names: list[str], first_seed: int = 0) -> list[Path]:
    return [make_song(name, first_seed + i, SECONDS) for i, name in enumerate(names)]


# -- inputs ------------------------------------------------------------------------------------


def test_directory_is_walked_recursively(tmp_path: Path, make_song: SongWriter) -> None:
    songs = _songs(make_song, ["lib/a.wav", "lib/x/b.flac", "lib/x/y/c.ogg"])
    (tmp_path / "lib" / "notes.txt").write_text("not media")
    make_song("lib/.hidden/d.wav", 10, SECONDS)
    make_song("lib/._e.wav", 11, SECONDS)

    summary = _index(tmp_path / "idx", [tmp_path / "lib"])

    assert (summary.files_seen, summary.indexed, summary.skipped, summary.failed) == (3, 3, 0, [])
    assert summary.hours_indexed == pytest.approx(3 * SECONDS / 3600, rel=0.01)
    assert summary.elapsed_s > 0
    records = _contents(tmp_path / "idx")
    assert sorted(records) == ["a", "b", "c"]
    for song in songs:
        record = records[song.stem]
        assert record.source == str(song.resolve())
        digest = hashlib.sha256(song.read_bytes()).hexdigest()
        assert record.content_hash == digest
        assert record.duration_s == pytest.approx(SECONDS, abs=0.05)
    json.dumps(summary.to_dict())


def test_commits_every_batch_size_files(tmp_path: Path, make_song: SongWriter) -> None:
    _songs(make_song, [f"lib/{i}.wav" for i in range(5)])

    summary = _index(tmp_path / "idx", [tmp_path / "lib"], batch_size=2)

    assert summary.indexed == 5
    with Index.open(tmp_path / "idx", readonly=True) as index:
        assert index.stats().segments == 3  # 2 + 2 + 1


def test_csv_manifest_carries_metadata(tmp_path: Path, make_song: SongWriter) -> None:
    _songs(make_song, ["media/one.wav", "media/two.flac"])
    manifest = tmp_path / "cat" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "path,title,external_id,owner,content_id,genre,year\n"
        "../media/one.wav,First Song,ISRC-1,label-a,song-1,jazz,1999\n"
        f"{tmp_path / 'media' / 'two.flac'},,,,,,\n"
    )

    summary = _index(tmp_path / "idx", [manifest], owner="default-owner", metadata={"batch": 7})

    assert (summary.indexed, summary.failed) == (2, [])
    records = _contents(tmp_path / "idx")
    first = records["First Song"]
    assert first.content_id == "song-1"
    assert first.external_id == "ISRC-1"
    assert first.owner == "label-a"
    assert first.metadata == {"genre": "jazz", "year": "1999", "batch": 7}
    assert first.source == str((tmp_path / "media" / "one.wav").resolve())
    second = records["two"]  # the title defaults to the file name
    assert second.owner == "default-owner"
    assert second.external_id is None
    assert second.metadata == {"batch": 7}


def test_jsonl_manifest_carries_metadata(tmp_path: Path, make_song: SongWriter) -> None:
    _songs(make_song, ["media/one.ogg", "media/two.wav"])
    manifest = tmp_path / "manifest.jsonl"
    rows = [
        {
            "path": "media/one.ogg",
            "title": "Uno",
            "external_id": 1234,
            "owner": "label-b",
            "content_id": "uno",
            "metadata": {"bpm": 120, "tags": ["a", "b"]},
            "territory": "FR",
        },
        {"path": "media/two.wav"},
    ]
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")

    summary = _index(tmp_path / "idx", [manifest])

    assert (summary.indexed, summary.failed) == (2, [])
    records = _contents(tmp_path / "idx")
    uno = records["Uno"]
    assert uno.content_id == "uno"
    assert uno.external_id == "1234"
    assert uno.owner == "label-b"
    assert uno.metadata == {"bpm": 120, "tags": ["a", "b"], "territory": "FR"}
    assert records["two"].metadata == {}


def test_malformed_manifest_rows_fail_alone_with_line_numbers(
    tmp_path: Path, make_song: SongWriter
) -> None:
    _songs(make_song, ["m/a.wav", "m/b.wav", "m/c.wav"])
    csv_manifest = tmp_path / "bad.csv"
    csv_manifest.write_text(
        "path,title\n"  # line 1
        "m/a.wav,A\n"  # line 2: fine
        "m/b.wav,B,surplus\n"  # line 3: too many fields
        "\n"  # line 4: blank, ignored
        ",no path\n"  # line 5: empty path
    )
    jsonl_manifest = tmp_path / "bad.jsonl"
    jsonl_manifest.write_text(
        '{"path": "m/b.wav", "title": "B"}\n'  # line 1: fine
        '{"path": "m/c.wav", "title": \n'  # line 2: broken JSON
        '["m/c.wav"]\n'  # line 3: not an object
        '{"title": "no path"}\n'  # line 4: no path
        '{"path": "m/c.wav", "metadata": [1]}\n'  # line 5: metadata not an object
        '{"path": "m/c.wav", "owner": {"x": 1}}\n'  # line 6: owner not a string
        '{"path": "m/c.wav", "metadata": {"gain": NaN}}\n'  # line 7: not JSON
    )

    summary = _index(tmp_path / "idx", [csv_manifest, jsonl_manifest])

    assert summary.indexed == 2
    assert summary.files_seen == 2 + len(summary.failed)
    failures = {path: (code, message) for path, code, message in summary.failed}
    assert sorted(failures) == sorted(
        [f"{csv_manifest}:3", f"{csv_manifest}:5"]
        + [f"{jsonl_manifest}:{line}" for line in (2, 3, 4, 5, 6, 7)]
    )
    assert {code for code, _ in failures.values()} == {"invalid_manifest"}
    assert "3 fields" in failures[f"{csv_manifest}:3"][1]
    assert "2 columns" in failures[f"{csv_manifest}:3"][1]
    assert failures[f"{csv_manifest}:5"][1].startswith(f"{csv_manifest}:5: ")
    assert "path" in failures[f"{jsonl_manifest}:4"][1]
    assert "metadata" in failures[f"{jsonl_manifest}:5"][1]
    assert sorted(_contents(tmp_path / "idx")) == ["A", "B"]


def test_read_manifest_reports_whole_file_problems(tmp_path: Path) -> None:
    no_path = tmp_path / "no_path.csv"
    no_path.write_text("file,title\na.wav,A\n")
    [error] = list(read_manifest(no_path))
    assert isinstance(error, ManifestError)
    assert error.line == 1 and "'path'" in error.message

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    [error] = list(read_manifest(empty))
    assert isinstance(error, ManifestError) and error.line is None

    for binary, good in (
        (tmp_path / "binary.jsonl", b'{"path": "a.wav"}\n'),
        (tmp_path / "binary.csv", b"path\na.wav\n"),
    ):
        binary.write_bytes(good + b"\xff\xfe garbage\n" + good.splitlines()[-1] + b"\n")
        first, second, third = list(read_manifest(binary))
        assert isinstance(first, ManifestEntry) and first.path == str(tmp_path / "a.wav")
        assert isinstance(second, ManifestError) and "UTF-8" in second.message
        assert second.line == first.line + 1
        assert isinstance(third, ManifestEntry)


def test_csv_manifest_quoted_fields_and_metadata_column(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "\ufeffPath,Title,metadata,label\n"
        '"a, b.wav","Title, with comma","{""k"": [1, 2]}",Acme\n'
        '"multi\nline.wav",T2,,\n'
        "c.wav,T3,not json,\n"
    )
    rows = list(read_manifest(manifest))
    first, second, third = rows
    assert isinstance(first, ManifestEntry)
    assert first.path == str(tmp_path / "a, b.wav")
    assert first.title == "Title, with comma"
    assert first.metadata == {"k": [1, 2], "label": "Acme"}
    assert (first.line, first.manifest) == (2, str(manifest))
    assert isinstance(second, ManifestEntry) and second.line == 3 and second.metadata == {}
    assert isinstance(third, ManifestError) and third.line == 5 and "JSON" in third.message


# -- idempotency and resumption ----------------------------------------------------------------


def test_rerun_skips_everything(tmp_path: Path, make_song: SongWriter) -> None:
    _songs(make_song, ["lib/a.wav", "lib/b.flac", "lib/c.ogg"])
    first = _index(tmp_path / "idx", [tmp_path / "lib"])
    assert first.indexed == 3

    again = _index(tmp_path / "idx", [tmp_path / "lib"])

    assert (again.files_seen, again.indexed, again.skipped, again.failed) == (3, 0, 3, [])
    assert again.hours_indexed == 0
    with Index.open(tmp_path / "idx", readonly=True) as index:
        assert len(index.list()) == 3
        assert index.stats().segments == 1  # nothing was committed by the rerun


def test_resume_after_partial_run_indexes_only_the_rest(
    tmp_path: Path, make_song: SongWriter
) -> None:
    songs = _songs(make_song, [f"lib/{i}.wav" for i in range(6)])
    # A "crash" after the first half was committed.
    assert _index(tmp_path / "idx", songs[:3]).indexed == 3

    summary = _index(tmp_path / "idx", [tmp_path / "lib"])

    assert (summary.indexed, summary.skipped, summary.failed) == (3, 3, [])
    records = _contents(tmp_path / "idx")
    assert sorted(records) == [str(i) for i in range(6)]
    hashes = [r.content_hash for r in records.values()]
    assert len(set(hashes)) == 6


def test_ctrl_c_commits_finished_files_and_rerun_resumes(
    tmp_path: Path, make_song: SongWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    songs = _songs(make_song, [f"lib/{i}.wav" for i in range(5)])
    calls: list[str] = []

    def interrupted_on_fourth(path: str) -> _Outcome[object]:
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return fingerprint_file(path)  # type: ignore[return-value]

    monkeypatch.setattr(indexer.job, "fingerprint_file", interrupted_on_fourth)
    with pytest.raises(BatchInterrupted) as caught:
        _index(tmp_path / "idx", [tmp_path / "lib"], batch_size=100)
    partial = caught.value.summary
    assert partial.interrupted and not partial.ok
    assert partial.indexed == 3  # the pending batch was committed on the way out
    monkeypatch.undo()

    summary = _index(tmp_path / "idx", [tmp_path / "lib"])

    assert (summary.indexed, summary.skipped, summary.failed) == (2, 3, [])
    assert sorted(_contents(tmp_path / "idx")) == sorted(song.stem for song in songs)


def test_identical_files_in_one_batch_are_indexed_once(
    tmp_path: Path, make_song: SongWriter
) -> None:
    song = make_song("lib/a.wav", 1, SECONDS)
    (tmp_path / "lib" / "copy of a.wav").write_bytes(song.read_bytes())
    make_song("lib/b.wav", 2, SECONDS)

    summary = _index(tmp_path / "idx", [tmp_path / "lib", song])

    assert (summary.files_seen, summary.indexed, summary.skipped) == (4, 2, 2)
    assert sorted(_contents(tmp_path / "idx")) == ["a", "b"]


def test_content_id_already_taken_is_a_failure_of_that_row(
    tmp_path: Path, make_song: SongWriter
) -> None:
    _songs(make_song, ["m/a.wav", "m/b.wav", "m/c.wav"])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"path": "m/a.wav", "content_id": "same"}\n'
        '{"path": "m/b.wav", "content_id": "same"}\n'
        '{"path": "m/c.wav", "content_id": "other"}\n'
    )

    summary = _index(tmp_path / "idx", [manifest])

    assert summary.indexed == 2
    [(path, code, _)] = summary.failed
    assert (path, code) == (str(tmp_path / "m" / "b.wav"), "duplicate_content_id")

    # An id already in the index is taken too.
    make_song("m/d.wav", 4, SECONDS)
    later = tmp_path / "later.csv"
    later.write_text("path,content_id\nm/d.wav,other\n")
    [(path, code, message)] = _index(tmp_path / "idx", [later]).failed
    assert (Path(path).name, code) == ("d.wav", "duplicate_content_id")
    assert "'other'" in message


def test_a_batch_the_index_refuses_is_retried_file_by_file(
    tmp_path: Path, make_song: SongWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    _songs(make_song, ["lib/a.wav", "lib/poison.wav", "lib/c.wav"])
    add_batch = Index.add_batch

    def refuse_poison(index: Index, batch: list[tuple[ContentSpec, Any]]) -> list[ContentRecord]:
        batch = list(batch)
        if any(spec.title == "poison" for spec, _ in batch):
            raise IndexStoreError("refused")
        return add_batch(index, batch)

    monkeypatch.setattr(Index, "add_batch", refuse_poison)

    summary = _index(tmp_path / "idx", [tmp_path / "lib"], batch_size=10)

    assert summary.indexed == 2
    failures = [(Path(path).name, code) for path, code, _ in summary.failed]
    assert failures == [("poison.wav", "index_error")]
    assert sorted(_contents(tmp_path / "idx")) == ["a", "c"]


# -- failures ----------------------------------------------------------------------------------


def test_bad_files_are_reported_and_skipped(tmp_path: Path, make_song: SongWriter) -> None:
    good = _songs(make_song, ["lib/a.wav", "lib/b.flac", "lib/c.ogg"])
    (tmp_path / "lib" / "empty.wav").write_bytes(b"")
    (tmp_path / "lib" / "noise.mp3").write_bytes(os.urandom(4096))
    truncated = tmp_path / "lib" / "truncated.wav"
    truncated.write_bytes(good[0].read_bytes()[:200])
    missing = tmp_path / "missing.wav"

    summary = _index(tmp_path / "idx", [tmp_path / "lib", missing])

    assert summary.indexed == 3
    assert summary.files_seen == 7
    failures = {Path(path).name: (code, message) for path, code, message in summary.failed}
    assert sorted(failures) == ["empty.wav", "missing.wav", "noise.mp3", "truncated.wav"]
    assert failures["empty.wav"][0] == "empty_media"
    assert failures["noise.mp3"][0] in MEDIA_ERROR_CODES
    assert failures["truncated.wav"][0] in MEDIA_ERROR_CODES
    assert failures["missing.wav"][0] == "file_not_found"
    assert all(message for _, message in failures.values())
    assert sorted(_contents(tmp_path / "idx")) == ["a", "b", "c"]
    assert not summary.ok


def crash_or_raise(path: str) -> _Outcome[object]:
    """Worker task for the pool test: die on 'crash' files, raise on 'boom' files."""
    name = Path(path).name
    if name.startswith("crash"):
        os._exit(3)  # a decoder segfault, as far as the pool can tell
    if name.startswith("boom"):
        raise ZeroDivisionError("division by zero in a decoder")
    return fingerprint_file(path)  # type: ignore[return-value]


def test_worker_pool_survives_crashes_and_unexpected_errors(
    tmp_path: Path, make_song: SongWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["lib/a.wav", "lib/b.wav", "lib/crash.wav", "lib/c.wav", "lib/d.wav", "lib/e.wav"]
    _songs(make_song, [*names, "lib/boom.wav"])
    # Workers import this module by name to run the task.
    monkeypatch.setattr(indexer.job, "fingerprint_file", crash_or_raise)
    # Replace the pool every 4 tasks, to exercise pool recycling as well.
    monkeypatch.setattr(indexer.job, "TASKS_PER_WORKER", 2)
    pools: list[object] = []
    new_pool = indexer.job._Runner._new_pool

    def counting_new_pool(runner: indexer.job._Runner) -> None:
        new_pool(runner)
        pools.append(runner.pool)

    monkeypatch.setattr(indexer.job._Runner, "_new_pool", counting_new_pool)

    summary = _index(tmp_path / "idx", [tmp_path / "lib"], workers=2, batch_size=2)

    failures = {Path(path).name: (code, message) for path, code, message in summary.failed}
    assert failures["crash.wav"][0] == WORKER_CRASHED
    assert failures["boom.wav"][0] == "unexpected_error"
    assert "ZeroDivisionError" in failures["boom.wav"][1]
    assert len(failures) == 2
    assert summary.indexed == 5
    assert sorted(_contents(tmp_path / "idx")) == ["a", "b", "c", "d", "e"]
    # 7 files x 2 stages at 4 tasks per pool need at least 4 pools (more after crashes).
    assert len(pools) >= 4
    assert all(isinstance(pool, ProcessPoolExecutor) for pool in pools)


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        run_batch(tmp_path / "idx", [], batch_size=0)
    with pytest.raises(ValueError, match="workers"):
        run_batch(tmp_path / "idx", [], workers=-1)
    empty = run_batch(tmp_path / "idx", [], workers=0, progress=False)
    assert (empty.files_seen, empty.indexed, empty.ok) == (0, 0, True)
