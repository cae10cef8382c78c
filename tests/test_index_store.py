"""Tests of the on-disk index: catalogue, segments, locking, compaction and crash safety."""

from __future__ import annotations

import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import SONG_RATE, synth_song, write_audio
from crash_writer import CODES_PER_CONTENT, fake_fingerprints, spec
from numpy.typing import NDArray

from acr import ContentSpec, Index
from acr.errors import IndexStoreError, UnknownContentError
from acr.index import store as store_module
from acr.index.directory import CATALOGUE_FILE, SEGMENT_DIR, file_sha256
from acr.index.segment import read_segment
from acr.index.store import TABLE_DIR
from acr.signals.audio import AudioSignal
from acr.signals.base import Fingerprints

SONG_SECONDS = 20.0
NAMES = ["alpha", "bravo", "charlie", "delta"]
EXCERPT_START_S = 6.0
EXCERPT_SECONDS = 4.0
CRASH_WRITER = Path(__file__).with_name("crash_writer.py")
SIGNAL = AudioSignal()


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def songs() -> dict[str, NDArray[np.float32]]:
    return {name: synth_song(300 + i, SONG_SECONDS) for i, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def references(songs: dict[str, NDArray[np.float32]]) -> dict[str, Fingerprints]:
    """Reference fingerprints, computed once: most tests add these with add_batch."""
    return {
        name: SIGNAL.fingerprint_samples(samples, SONG_RATE, query=False)
        for name, samples in songs.items()
    }


@pytest.fixture(scope="module")
def queries(songs: dict[str, NDArray[np.float32]]) -> dict[str, Fingerprints]:
    """Query fingerprints of a 4 s excerpt of each song, starting at 6 s."""
    begin = round(EXCERPT_START_S * SONG_RATE)
    end = begin + round(EXCERPT_SECONDS * SONG_RATE)
    return {
        name: SIGNAL.fingerprint_samples(samples[begin:end], SONG_RATE, query=True)
        for name, samples in songs.items()
    }


@pytest.fixture(scope="module")
def song_files(
    tmp_path_factory: pytest.TempPathFactory, songs: dict[str, NDArray[np.float32]]
) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("songs")
    return {
        name: write_audio(directory / f"{name}.wav", samples) for name, samples in songs.items()
    }


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"


@pytest.fixture
def writer(index_dir: Path) -> Iterator[Index]:
    index = Index.open(index_dir, create=True)
    yield index
    index.close()


def _add(index: Index, references: dict[str, Fingerprints], *names: str) -> None:
    """Add each named song as its own batch (its own segment), content id = name."""
    for name in names:
        index.add_batch(
            [
                (
                    ContentSpec(title=name.title(), content_id=name, metadata={"n": 1}),
                    references[name],
                )
            ]
        )


def _matched(index: Index, queries: dict[str, Fingerprints], name: str) -> str | None:
    """Content id that the excerpt of song ``name`` is matched to, checking its offset."""
    best = index.match_fingerprints(queries[name]).best
    if best is None:
        return None
    assert best.offset_s == pytest.approx(EXCERPT_START_S, abs=0.05)
    return best.content_id


def _segment_files(index_dir: Path) -> set[str]:
    return {entry.name for entry in (index_dir / SEGMENT_DIR).iterdir()}


def _segment_bytes(index_dir: Path) -> int:
    return sum(entry.stat().st_size for entry in (index_dir / SEGMENT_DIR).iterdir())


def _only_segment(index_dir: Path) -> Path:
    (name,) = _segment_files(index_dir)
    return index_dir / SEGMENT_DIR / name


# -- adding, listing, reading -------------------------------------------------------------------


def test_add_list_get_stats(
    writer: Index, songs: dict[str, NDArray[np.float32]], queries: dict[str, Fingerprints]
) -> None:
    assert writer.list() == []
    assert writer.stats().contents == 0
    added = [
        writer.add_samples(
            songs[name],
            SONG_RATE,
            ContentSpec(
                title=name.title(), content_id=name, external_id=f"ext-{name}", metadata={"i": i}
            ),
        )
        for i, name in enumerate(NAMES[:3])
    ]
    assert [r.content_id for r in writer.list()] == NAMES[:3]
    assert writer.list() == added

    record = writer.get("bravo")
    assert record == added[1]
    assert record.title == "Bravo"
    assert record.external_id == "ext-bravo"
    assert record.metadata == {"i": 1}
    assert record.kind == "audio"
    assert record.removed_at is None
    assert record.duration_s == pytest.approx(SONG_SECONDS, abs=0.01)
    assert record.codes > 0
    assert "key" not in record.to_dict()

    stats = writer.stats()
    assert stats.contents == 3
    assert stats.codes == sum(r.codes for r in added)
    assert stats.duration_s == pytest.approx(3 * SONG_SECONDS, abs=0.05)
    assert stats.segments == 3
    assert stats.bytes_on_disk > _segment_bytes(writer.directory) > 0

    for name in NAMES[:3]:
        assert _matched(writer, queries, name) == name
    assert _matched(writer, queries, "delta") is None
    with pytest.raises(UnknownContentError):
        writer.get("delta")


def test_contents_without_id_get_unique_ids(
    writer: Index, references: dict[str, Fingerprints]
) -> None:
    records = writer.add_batch(
        [(ContentSpec(title="same"), references["alpha"]) for _ in range(2)]
        + [(ContentSpec(title="other"), references["bravo"])]
    )
    ids = [r.content_id for r in records]
    assert len(set(ids)) == 3
    assert all(writer.get(content_id).content_id == content_id for content_id in ids)
    assert writer.stats().segments == 1  # one batch, one segment
    assert len(_segment_files(writer.directory)) == 1


def test_add_file_is_idempotent(writer: Index, song_files: dict[str, Path], tmp_path: Path) -> None:
    path = song_files["alpha"]
    first = writer.add_file(path, metadata={"album": "x"})
    again = writer.add_file(path, title="Another title")
    assert again == first
    assert first.title == "alpha"
    assert first.source == str(path.resolve())
    assert first.content_hash == file_sha256(path)
    # The same bytes under another name are still the same content.
    copy = shutil.copy(path, tmp_path / "renamed.wav")
    assert writer.add_file(copy) == first
    assert len(writer.list()) == 1
    assert writer.stats().segments == 1
    # skip_existing=False indexes it once more, on purpose.
    forced = writer.add_file(path, skip_existing=False)
    assert forced.content_id != first.content_id
    assert len(writer.list()) == 2


def test_duplicate_content_id_is_rejected(
    writer: Index, references: dict[str, Fingerprints], queries: dict[str, Fingerprints]
) -> None:
    _add(writer, references, "alpha")
    files = _segment_files(writer.directory)
    with pytest.raises(IndexStoreError, match="alpha"):
        writer.add_batch([(ContentSpec(title="x", content_id="alpha"), references["bravo"])])
    # Nothing of the refused batch was kept, not even a batch-mate with a fresh id.
    with pytest.raises(IndexStoreError):
        writer.add_batch(
            [
                (ContentSpec(title="ok", content_id="fresh"), references["charlie"]),
                (ContentSpec(title="x", content_id="alpha"), references["bravo"]),
            ]
        )
    assert [r.content_id for r in writer.list()] == ["alpha"]
    assert _segment_files(writer.directory) == files
    assert _matched(writer, queries, "bravo") is None
    assert _matched(writer, queries, "charlie") is None
    assert _matched(writer, queries, "alpha") == "alpha"


def test_duplicate_content_id_within_one_batch_is_rejected(
    writer: Index, references: dict[str, Fingerprints]
) -> None:
    with pytest.raises(IndexStoreError):
        writer.add_batch(
            [
                (ContentSpec(title="a", content_id="twin"), references["alpha"]),
                (ContentSpec(title="b", content_id="twin"), references["bravo"]),
            ]
        )


def test_wrong_kind_of_fingerprints_is_rejected(
    writer: Index, references: dict[str, Fingerprints]
) -> None:
    fp = references["alpha"]
    video = Fingerprints("video", fp.codes, fp.frames, fp.hop_s, fp.duration_s)
    with pytest.raises(ValueError, match="video"):
        writer.add_batch([(ContentSpec(title="v"), video)])
    assert writer.list() == []


# -- removing and compacting --------------------------------------------------------------------


def test_remove_then_readd(
    writer: Index, references: dict[str, Fingerprints], queries: dict[str, Fingerprints]
) -> None:
    _add(writer, references, "alpha", "bravo")
    removed = writer.remove("alpha")
    assert removed.content_id == "alpha"
    assert _matched(writer, queries, "alpha") is None
    assert _matched(writer, queries, "bravo") == "bravo"
    with pytest.raises(UnknownContentError):
        writer.get("alpha")
    with pytest.raises(UnknownContentError):
        writer.remove("alpha")
    assert [r.content_id for r in writer.list()] == ["bravo"]
    assert writer.stats().contents == 1
    assert writer.stats().codes == references["bravo"].codes.size

    _add(writer, references, "alpha")
    readded = writer.get("alpha")
    assert readded.key != removed.key
    assert _matched(writer, queries, "alpha") == "alpha"
    assert sorted(r.content_id for r in writer.list()) == ["alpha", "bravo"]


def test_add_file_again_after_remove(
    writer: Index, song_files: dict[str, Path], queries: dict[str, Fingerprints]
) -> None:
    first = writer.add_file(song_files["charlie"])
    writer.remove(first.content_id)
    assert writer.find_by_hash(file_sha256(song_files["charlie"])) is None
    second = writer.add_file(song_files["charlie"])
    assert second.key != first.key
    assert _matched(writer, queries, "charlie") == second.content_id


def test_compact_drops_removed_codes(
    index_dir: Path, references: dict[str, Fingerprints], queries: dict[str, Fingerprints]
) -> None:
    with Index.open(index_dir, create=True) as writer:
        _add(writer, references, *NAMES)
        before = writer.stats()
        assert before.segments == 4
        writer.remove("bravo")
        assert writer.stats().codes == before.codes - references["bravo"].codes.size
        on_disk = _segment_bytes(index_dir)

        assert writer.compact() == 4
        after = writer.stats()
        assert after.segments == 1
        assert after.contents == 3
        assert after.codes == before.codes - references["bravo"].codes.size
        assert _segment_bytes(index_dir) < on_disk
        assert len(_segment_files(index_dir)) == 1
        listed = writer.list()
        assert {r.segment for r in listed} == _segment_files(index_dir)
        for name in ("alpha", "charlie", "delta"):
            assert _matched(writer, queries, name) == name
        assert _matched(writer, queries, "bravo") is None
        # The compacted segment holds exactly the live contents' codes, unchanged.
        segment = read_segment(_only_segment(index_dir))
        assert segment.codes.size == after.codes
        by_key = {r.key: r.content_id for r in listed}
        assert sorted(by_key[int(k)] for k in segment.keys) == ["alpha", "charlie", "delta"]
        for key, start, end in zip(segment.keys, segment.starts, segment.ends, strict=True):
            original = references[by_key[int(key)]]
            assert np.array_equal(segment.codes[start:end], original.codes)
            assert np.array_equal(segment.frames[start:end], original.frames)

    for readonly in (True, False):
        with Index.open(index_dir, readonly=readonly) as reopened:
            assert reopened.list() == listed
            assert reopened.stats().codes == after.codes
            for name in ("alpha", "charlie", "delta"):
                assert _matched(reopened, queries, name) == name
            assert _matched(reopened, queries, "bravo") is None


def test_compact_everything_removed_then_add(
    writer: Index, references: dict[str, Fingerprints], queries: dict[str, Fingerprints]
) -> None:
    _add(writer, references, "alpha", "bravo")
    writer.remove("alpha")
    writer.remove("bravo")
    writer.compact()
    assert writer.stats().segments == 0
    assert writer.stats().codes == 0
    assert _segment_files(writer.directory) == set()
    _add(writer, references, "charlie")
    assert _matched(writer, queries, "charlie") == "charlie"
    assert _matched(writer, queries, "alpha") is None


# -- reopening, locking, readers ----------------------------------------------------------------


def test_reopen_yields_same_list(
    index_dir: Path, references: dict[str, Fingerprints], queries: dict[str, Fingerprints]
) -> None:
    with Index.open(index_dir, create=True) as writer:
        _add(writer, references, "alpha", "bravo", "charlie")
        writer.remove("bravo")
        listed = writer.list()
        stats = writer.stats()
    with Index.open(index_dir) as reopened:
        assert reopened.list() == listed
        assert reopened.stats().codes == stats.codes
        assert reopened.stats().segments == stats.segments
        assert _matched(reopened, queries, "charlie") == "charlie"
        assert _matched(reopened, queries, "bravo") is None


def test_open_without_index(tmp_path: Path) -> None:
    with pytest.raises(IndexStoreError, match="no index"):
        Index.open(tmp_path / "missing")
    with pytest.raises(IndexStoreError, match="no index"):
        Index.open(tmp_path / "missing", create=True, readonly=True)
    assert not (tmp_path / "missing" / CATALOGUE_FILE).exists()


def test_second_writer_is_locked_out_but_readers_are_not(
    index_dir: Path, references: dict[str, Fingerprints], queries: dict[str, Fingerprints]
) -> None:
    writer = Index.open(index_dir, create=True)
    _add(writer, references, "alpha")
    with pytest.raises(IndexStoreError, match="another process"):
        Index.open(index_dir)
    with Index.open(index_dir, readonly=True) as reader:
        assert reader.readonly
        assert [r.content_id for r in reader.list()] == ["alpha"]
        assert _matched(reader, queries, "alpha") == "alpha"
        with pytest.raises(IndexStoreError, match="read-only"):
            reader.add_batch([(ContentSpec(title="b"), references["bravo"])])
        with pytest.raises(IndexStoreError, match="read-only"):
            reader.remove("alpha")
        with pytest.raises(IndexStoreError, match="read-only"):
            reader.compact()
    writer.close()
    with Index.open(index_dir) as successor:  # the lock goes with the writer
        assert [r.content_id for r in successor.list()] == ["alpha"]


def test_second_writer_in_another_process_is_locked_out(
    index_dir: Path, references: dict[str, Fingerprints]
) -> None:
    code = (
        "import sys\n"
        "from acr import Index\n"
        "from acr.errors import IndexStoreError\n"
        "try:\n"
        "    Index.open(sys.argv[1])\n"
        "except IndexStoreError as e:\n"
        "    print('locked', e.code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with Index.open(index_dir, create=True) as writer:
        _add(writer, references, "alpha")
        out = subprocess.run(
            [sys.executable, "-c", code, str(index_dir)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
    assert out.stdout.strip() == "locked index_error"


def test_reader_sees_writer_changes_after_refresh(
    index_dir: Path, references: dict[str, Fingerprints], queries: dict[str, Fingerprints]
) -> None:
    with Index.open(index_dir, create=True) as writer:
        _add(writer, references, "alpha")
        reader = Index.open(index_dir, readonly=True)
        try:
            assert reader.refresh() is False  # nothing new
            _add(writer, references, "bravo", "charlie")
            assert [r.content_id for r in reader.list()] == ["alpha"]
            assert reader.refresh() is True
            assert reader.refresh() is False
            assert [r.content_id for r in reader.list()] == ["alpha", "bravo", "charlie"]
            assert reader.stats().codes == writer.stats().codes
            assert _matched(reader, queries, "charlie") == "charlie"

            writer.remove("alpha")
            assert reader.refresh() is True
            assert [r.content_id for r in reader.list()] == ["bravo", "charlie"]
            assert _matched(reader, queries, "alpha") is None

            # Compaction replaces the segments the reader has loaded.
            writer.compact()
            _add(writer, references, "delta")
            assert reader.refresh() is True
            assert reader.stats().segments == 2
            for name in ("bravo", "charlie", "delta"):
                assert _matched(reader, queries, name) == name
            assert _matched(reader, queries, "alpha") is None

            # Matching from a reader picks up new commits by itself.
            writer.remove("delta")
            assert _matched(reader, queries, "delta") is None
        finally:
            reader.close()


def test_reader_refresh_survives_a_concurrent_compaction(
    index_dir: Path,
    references: dict[str, Fingerprints],
    queries: dict[str, Fingerprints],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Index.open(index_dir, create=True) as writer:
        _add(writer, references, "alpha")
        with Index.open(index_dir, readonly=True) as reader:
            _add(writer, references, "bravo")
            compacted: list[int] = []
            armed = [True]

            def compact_first(path: Path) -> object:
                # The writer compacts just after the reader has read the manifest.
                if armed:
                    armed.clear()
                    compacted.append(writer.compact())
                return read_segment(path)

            monkeypatch.setattr("acr.index.store.read_segment", compact_first)
            reader.refresh()
            assert compacted == [2]
            assert [r.content_id for r in reader.list()] == ["alpha", "bravo"]
            assert _matched(reader, queries, "bravo") == "bravo"


# -- damaged directories ------------------------------------------------------------------------


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flipped body":
        for at in (100, len(data) // 2, len(data) - 3):
            data[at] ^= 0xFF
    elif how == "truncated":
        del data[-10:]
    elif how == "bad magic":
        data[0:8] = b"NOTASEG!"
    elif how == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flipped body", "truncated", "bad magic", "empty"])
def test_damaged_segment_is_reported_on_open(
    index_dir: Path, references: dict[str, Fingerprints], how: str
) -> None:
    with Index.open(index_dir, create=True) as writer:
        _add(writer, references, "alpha")
    segment = _only_segment(index_dir)
    _damage(segment, how)
    for readonly in (False, True):
        with pytest.raises(IndexStoreError) as caught:
            Index.open(index_dir, readonly=readonly)
        assert segment.name in caught.value.message
        assert caught.value.code == "index_error"
        del caught
    assert segment.exists()  # evidence is kept, not deleted as an orphan


def test_failed_open_releases_the_writer_lock(
    index_dir: Path, references: dict[str, Fingerprints]
) -> None:
    with Index.open(index_dir, create=True) as writer:
        _add(writer, references, "alpha")
    segment = _only_segment(index_dir)
    original = segment.read_bytes()
    _damage(segment, "flipped body")
    with pytest.raises(IndexStoreError, match="corrupt") as caught:
        Index.open(index_dir)
    segment.write_bytes(original)  # restored from a backup; the caller retries
    with Index.open(index_dir) as repaired:
        assert [r.content_id for r in repaired.list()] == ["alpha"]
    assert caught.value.code == "index_error"  # the failure is still being looked at


def test_missing_segment_file_is_reported_on_open(
    index_dir: Path, references: dict[str, Fingerprints]
) -> None:
    with Index.open(index_dir, create=True) as writer:
        _add(writer, references, "alpha")
    segment = _only_segment(index_dir)
    segment.unlink()
    with pytest.raises(IndexStoreError, match=segment.name):
        Index.open(index_dir, readonly=True)


def test_damaged_catalogue_is_reported_on_open(
    index_dir: Path, references: dict[str, Fingerprints]
) -> None:
    with Index.open(index_dir, create=True) as writer:
        _add(writer, references, "alpha")
    (index_dir / CATALOGUE_FILE).write_bytes(b"this is not a database " * 200)
    with pytest.raises(IndexStoreError):
        Index.open(index_dir)


def test_orphan_segment_files_are_deleted_by_a_writer(
    index_dir: Path, references: dict[str, Fingerprints], queries: dict[str, Fingerprints]
) -> None:
    with Index.open(index_dir, create=True) as writer:
        _add(writer, references, "alpha")
        listed = writer.list()
        codes = writer.stats().codes
    live = _only_segment(index_dir)
    # A batch that was written but never committed (a copy of a valid segment, so it
    # would be loaded if orphans were trusted), a half-written temporary and junk.
    orphans = [
        live.with_name("20000101T000000-0123456789ab.seg"),
        live.with_name(f".{live.name}.tmp-12345"),
        live.with_name("junk.seg"),
    ]
    shutil.copy(live, orphans[0])
    orphans[1].write_bytes(live.read_bytes()[:100])
    orphans[2].write_bytes(b"junk")

    with Index.open(index_dir, readonly=True) as reader:  # readers never delete
        assert reader.list() == listed
        assert reader.stats().codes == codes
        assert reader.stats().segments == 1
    assert all(orphan.exists() for orphan in orphans)

    with Index.open(index_dir) as writer:
        assert _segment_files(index_dir) == {live.name}
        assert writer.list() == listed
        assert _matched(writer, queries, "alpha") == "alpha"
        assert len(writer.match_fingerprints(queries["alpha"], top_k=5).matches) == 1


# -- crash safety -------------------------------------------------------------------------------


class _Victim:
    """A crash_writer.py subprocess whose output lines are collected by a thread."""

    def __init__(self, index_dir: Path, mode: str, first_seed: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(CRASH_WRITER),
                str(index_dir),
                "--mode",
                mode,
                "--first-seed",
                str(first_seed),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.strip())
        self._queue.put(None)

    def wait_for(self, word: str, times: int, timeout: float = 60.0) -> None:
        seen = 0
        while seen < times:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                pytest.fail(f"crash_writer printed no {word!r} in {timeout} s: {self.lines}")
            if line is None:
                stderr = self.process.stderr.read() if self.process.stderr else ""
                pytest.fail(f"crash_writer ended early: {stderr}")
            self.lines.append(line)
            seen += line.split()[0] == word

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)
        self._reader.join(timeout=60)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        if self.process.stderr is not None:
            self.process.stderr.close()

    def committed(self) -> int:
        """Live keepers at the last commit the victim reported."""
        counts = [int(line.split()[1]) for line in self.lines if line.startswith("committed ")]
        return max(counts, default=0)


def _check_recovered(index_dir: Path, reported: int) -> int:
    """Open the index after a kill, check everything, add one more batch; return keepers."""
    with Index.open(index_dir, readonly=True) as reader:
        assert sum(r.metadata["role"] == "keeper" for r in reader.list()) >= reported

    with Index.open(index_dir) as writer:
        records = writer.list()
        keepers = [r for r in records if r.metadata["role"] == "keeper"]
        assert len(keepers) >= reported
        assert len({r.content_id for r in records}) == len(records)

        # No orphan or temporary file survives a writer's open.
        live_segments = {r.segment for r in records}
        assert _segment_files(index_dir) == live_segments
        assert writer.stats().segments == len(live_segments)
        leftovers = [p.name for p in index_dir.rglob("*") if ".tmp" in p.name]
        assert leftovers == []

        # Every listed content has its codes on disk and is matched at offset 0.
        assert all(r.codes == CODES_PER_CONTENT for r in records)
        assert writer.stats().codes == CODES_PER_CONTENT * len(records)
        for record in records:
            assert (index_dir / SEGMENT_DIR / record.segment).is_file()
            best = writer.match_fingerprints(fake_fingerprints(record.metadata["seed"])).best
            assert best is not None, record.content_id
            assert best.content_id == record.content_id
            assert best.offset_s == pytest.approx(0.0, abs=0.02)

        # The index takes further writes.
        seed = 10_000_000 + len(records)
        writer.add_batch([(spec(seed, "keeper"), fake_fingerprints(seed))])
        best = writer.match_fingerprints(fake_fingerprints(seed)).best
        assert best is not None
        assert best.content_id == f"keeper-{seed}"
        return len(keepers) + 1


CRASH_ROUNDS = [
    # (mode, line that arms the kill, how many of them, longest random delay after it)
    ("add", "committed", 3, 0.25),
    ("add", "committed", 1, 0.0),
    ("compact", "compacting", 1, 0.0),
    ("compact", "compacting", 2, 0.05),
    ("compact", "committed", 2, 0.3),
    ("add", "committed", 2, 0.1),
]


def test_kill_9_never_loses_a_committed_batch(tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    rng = random.Random(20240607)
    reported = 0
    for number, (mode, word, times, max_delay) in enumerate(CRASH_ROUNDS):
        victim = _Victim(index_dir, mode, first_seed=1_000_000 * (number + 1))
        try:
            victim.wait_for(word, times)
            threading.Event().wait(rng.uniform(0.0, max_delay))
        finally:
            victim.kill()
        assert victim.process.returncode == -signal.SIGKILL
        reported = max(reported, victim.committed())
        assert reported > 0
        reported = _check_recovered(index_dir, reported)


def test_large_segments_are_searched_from_mapped_tables(
    index_dir: Path,
    references: dict[str, Fingerprints],
    queries: dict[str, Fingerprints],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "MAPPED_MIN_CODES", 1)
    tables = index_dir / TABLE_DIR
    with Index.open(index_dir, create=True) as writer:
        _add(writer, references, *NAMES)
        assert len(list(tables.glob("*.post"))) == 4
        assert writer.lookup.tables == 4
        table_bytes = sum(p.stat().st_size for p in tables.iterdir())
        assert writer.stats().bytes_on_disk >= _segment_bytes(index_dir) + table_bytes
        answers = {name: _matched(writer, queries, name) for name in NAMES}
        assert answers == {name: name for name in NAMES}

    # A damaged table is rebuilt from its segment; a missing one too.
    damaged, missing = sorted(tables.glob("*.post"))[:2]
    damaged.write_bytes(damaged.read_bytes()[:-4])
    missing.unlink()
    for readonly in (True, False):
        with Index.open(index_dir, readonly=readonly) as reopened:
            assert {name: _matched(reopened, queries, name) for name in NAMES} == answers
    assert len(list(tables.glob("*.post"))) == 4

    # Compaction replaces the segments, and their tables go with them.
    with Index.open(index_dir) as writer:
        writer.remove("bravo")
        writer.compact()
        assert len(list(tables.glob("*.post"))) == 1
        assert _matched(writer, queries, "alpha") == "alpha"
        assert _matched(writer, queries, "bravo") is None


def test_a_catalogue_being_created_is_never_seen_half_made(tmp_path: Path) -> None:
    """Worker processes starting together: one creates the catalogue while others read it."""
    from acr.index.catalogue import Catalogue

    failures: list[BaseException] = []
    for attempt in range(20):
        path = tmp_path / f"attempt-{attempt}" / CATALOGUE_FILE
        path.parent.mkdir()
        stop = threading.Event()

        def create(target: Path = path) -> None:
            Catalogue(target).close()

        def read(target: Path = path, done: threading.Event = stop) -> None:
            while not done.is_set():
                if target.exists():
                    try:
                        Catalogue(target, readonly=True).close()
                    except IndexStoreError as error:
                        failures.append(error)
                        return

        readers = [threading.Thread(target=read) for _ in range(3)]
        for reader in readers:
            reader.start()
        creators = [threading.Thread(target=create) for _ in range(2)]
        for creator in creators:
            creator.start()
        for creator in creators:
            creator.join()
        stop.set()
        for reader in readers:
            reader.join()
        assert not list(path.parent.glob("*.new")), "no temporary catalogue is left behind"
    assert failures == []
