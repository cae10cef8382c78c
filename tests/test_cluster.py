"""Sharded serving on a real local Ray cluster: a head and two worker nodes on loopback.

One cluster is started for the module. The index is split into 4 shards with 2
replicas each; every answer is compared with the single-node index's answer
on the same queries. The last test kills a worker node while queries run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from acr import ContentSpec, Index  # noqa: E402 - after the skip
from acr.cluster.local import LocalCluster  # noqa: E402
from acr.cluster.serving import ClusterMatch, ShardedIndex, ShardedLookup  # noqa: E402
from acr.demo import synth_song  # noqa: E402
from acr.index.directory import SEGMENT_DIR  # noqa: E402
from acr.index.lookup import CodeLookup  # noqa: E402
from acr.index.segment import read_segment  # noqa: E402
from acr.matching import Hits  # noqa: E402
from acr.results import MatchResult  # noqa: E402
from acr.search import Query, identify  # noqa: E402
from acr.signals.audio import AudioSignal  # noqa: E402
from acr.signals.base import Fingerprints  # noqa: E402
from indexer import BatchSummary, run_batch  # noqa: E402
from tests.conftest import SONG_RATE, write_audio  # noqa: E402

SIGNAL = AudioSignal()
SONGS = 8
SECONDS = 30.0
LATE_SEED = 950


def _reference(seed: int) -> Fingerprints:
    return SIGNAL.fingerprint_samples(synth_song(seed, SECONDS), SONG_RATE, query=False)


def _query(seed: int, start_s: float, noise: float, rng: np.random.Generator) -> Fingerprints:
    clip = synth_song(seed, SECONDS)[round(start_s * SONG_RATE) : round((start_s + 5) * SONG_RATE)]
    clip = clip + rng.normal(0.0, noise, clip.size).astype(np.float32)
    return SIGNAL.fingerprint_samples(clip, SONG_RATE, query=True)


def _same(cluster: ClusterMatch, single: MatchResult) -> bool:
    """Same answer, whatever the time it took."""
    return cluster.complete and replace(cluster.result, elapsed_ms=0.0) == replace(
        single, elapsed_ms=0.0
    )


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 songs in 3 segments."""
    directory = tmp_path_factory.mktemp("cluster") / "index"
    with Index.open(directory, create=True) as writer:
        for batch in np.array_split(np.arange(SONGS), 3):
            writer.add_batch(
                [(ContentSpec(title=f"song-{i}"), _reference(900 + int(i))) for i in batch]
            )
    return directory


@pytest.fixture(scope="module")
def queries() -> list[Fingerprints]:
    """Benchmark-style: clean and noisy 5 s excerpts of every song, and unindexed songs."""
    rng = np.random.default_rng(11)
    found = [_query(900 + i, 2.0 + 2 * i, 0.0 if i % 2 else 0.1, rng) for i in range(SONGS)]
    return found + [_query(990 + i, 4.0, 0.05, rng) for i in range(2)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(workers=2) as started:
        yield started


@pytest.fixture(scope="module")
def sharded(
    cluster: LocalCluster, index_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ShardedIndex]:
    tables = tmp_path_factory.mktemp("tables")  # one machine: both "nodes" share it
    served = ShardedIndex(index_dir, shards=4, replicas=2, timeout_s=5.0, table_dir=tables)
    yield served
    served.close()


def test_each_shard_has_replicas_on_both_workers(
    cluster: LocalCluster, sharded: ShardedIndex, index_dir: Path
) -> None:
    replicas = sharded.describe()
    workers = {cluster.worker_node_id(0), cluster.worker_node_id(1)}
    postings = {}
    for shard in range(4):
        mine = [r for r in replicas if r["shard"] == shard]
        assert {r["node_id"] for r in mine} == workers
        assert len({r["postings"] for r in mine}) == 1
        postings[shard] = mine[0]["postings"]
    with Index.open(index_dir, readonly=True) as single:
        assert sum(postings.values()) == single.stats().codes
        segments = {r.segment for r in single.list()}
    assert all(count > 0 for count in postings.values())
    assert sharded.table_dir is not None
    mapped = {path.name for path in Path(sharded.table_dir).iterdir()}
    assert mapped == {f"{s}.{shard}-of-4.post" for s in segments for shard in range(4)}


def test_sharded_answers_are_the_single_node_answers(
    sharded: ShardedIndex, index_dir: Path, queries: list[Fingerprints]
) -> None:
    with Index.open(index_dir, readonly=True) as single:
        expected = [single.match_fingerprints(q) for q in queries]
    answers = [sharded.match_fingerprints(q) for q in queries]
    assert sum(e.best is not None for e in expected) == SONGS
    assert sum(e.best is None for e in expected) == 2
    for answer, single_answer in zip(answers, expected, strict=True):
        assert _same(answer, single_answer)


def test_a_lookup_over_budget_reads_what_a_single_node_reads(
    sharded: ShardedIndex, index_dir: Path, queries: list[Fingerprints]
) -> None:
    single = CodeLookup()
    with Index.open(index_dir, readonly=True) as index:
        names = sorted({record.segment for record in index.list()})
    for name in names:
        single.add_segment(read_segment(index_dir / SEGMENT_DIR / name))
    assert np.array_equal(sharded.counts, single.code_counts())
    for query in queries:
        budget = single.search(query.codes, query.frames).keys.size // 3
        expected = single.search(query.codes, query.frames, max_hits=budget)
        lookup = ShardedLookup(
            sharded.replicas,
            sharded.timeout_s,
            sharded.snapshot,
            sharded.generation,
            sharded.counts,
        )
        got = lookup.search(query.codes, query.frames, max_hits=budget)
        assert not lookup.missing
        assert 0 < got.keys.size <= budget
        assert not got.complete and not expected.complete
        # Shards answer in their own order; the hits are the same.
        assert _rows(got) == _rows(expected)


def test_nominate_and_verify_read_what_a_single_node_reads(
    sharded: ShardedIndex, index_dir: Path, queries: list[Fingerprints]
) -> None:
    single = CodeLookup()
    with Index.open(index_dir, readonly=True) as index:
        names = sorted({record.segment for record in index.list()})
        records = {record.key: record for record in index.list()}
    for name in names:
        single.add_segment(read_segment(index_dir / SEGMENT_DIR / name))

    def lookup() -> ShardedLookup:
        return ShardedLookup(
            sharded.replicas,
            sharded.timeout_s,
            sharded.snapshot,
            sharded.generation,
            sharded.counts,
        )

    def ref_frames(key: int) -> int:
        return round(records[key].duration_s / SIGNAL.hop_s)

    keys = np.array(sorted(records)[::3], dtype=np.int64)
    for query in queries:
        for flips in (0, 1):
            # The sample of a look over budget: the rarest probes, as a single node reads them.
            budget = single.search(query.codes, query.frames, max_flips=flips).keys.size // 3
            expected = single.search(
                query.codes, query.frames, max_flips=flips, max_hits=budget, sample_hits=budget // 2
            )
            got = lookup().search(
                query.codes, query.frames, max_flips=flips, max_hits=budget, sample_hits=budget // 2
            )
            assert not got.complete and _rows(got) == _rows(expected)
            # The nominees' hits, from the shards that hold them.
            asked = lookup()
            got = asked.search_contents(query.codes, query.frames, keys, max_flips=flips)
            assert not asked.missing
            assert _rows(got) == _rows(
                single.search_contents(query.codes, query.frames, keys, max_flips=flips)
            )
        # A search whose every look is over budget answers as on a single node.
        tiny = partial(Query, max_hits=64, nomination_hits=32, nominees=3)
        answer = identify(tiny(query, lookup(), ref_frames, len(records)))
        assert answer == identify(tiny(query, single, ref_frames, len(records)))


def _rows(hits: Hits) -> list[tuple[int, int, int]]:
    return sorted(
        zip(hits.query_frames.tolist(), hits.keys.tolist(), hits.ref_frames.tolist(), strict=True)
    )


def test_new_segments_are_swapped_in_while_serving(
    sharded: ShardedIndex, index_dir: Path, queries: list[Fingerprints]
) -> None:
    late = _query(LATE_SEED, 6.0, 0.05, np.random.default_rng(3))
    assert sharded.match_fingerprints(late).result.best is None
    served: list[ClusterMatch] = []
    stop = threading.Event()

    def keep_matching() -> None:
        while not stop.is_set():
            served.append(sharded.match_fingerprints(queries[len(served) % SONGS]))

    before = sharded.generation
    background = threading.Thread(target=keep_matching)
    background.start()
    try:
        with Index.open(index_dir) as writer:
            writer.add_batch([(ContentSpec(title="late"), _reference(LATE_SEED))])
            writer.remove(writer.list()[0].content_id)
        assert sharded.publish()
    finally:
        stop.set()
        background.join()
    assert sharded.generation > before
    assert not sharded.publish()  # nothing new
    assert served and all(answer.complete for answer in served)
    with Index.open(index_dir, readonly=True) as single:
        for query in [late, *queries]:
            assert _same(sharded.match_fingerprints(query), single.match_fingerprints(query))
    best = sharded.match_fingerprints(late).result.best
    assert best is not None and best.title == "late"
    assert sharded.match_fingerprints(queries[0]).result.best is None  # removed


def test_a_shard_without_replicas_is_flagged(cluster: LocalCluster, index_dir: Path) -> None:
    served = ShardedIndex(index_dir, shards=2, replicas=1, timeout_s=5.0, heal=False)
    try:
        ray.kill(served.replicas[0][0], no_restart=True)
        answers = [
            served.match_fingerprints(_query(900 + i, 4.0, 0.0, np.random.default_rng()))
            for i in (2, 3)
        ]
    finally:
        served.close()
    with Index.open(index_dir, readonly=True) as single:
        keys = {r.title: r.key for r in single.list()}
    for answer, title in zip(answers, ("song-2", "song-3"), strict=True):
        assert answer.missing_shards == (0,)
        assert (answer.result.best is not None) == (keys[title] % 2 == 1)


def test_batch_indexer_on_ray_survives_a_dead_worker(cluster: LocalCluster, tmp_path: Path) -> None:
    files = [write_audio(tmp_path / f"track-{i}.wav", synth_song(800 + i, 15.0)) for i in range(6)]
    cluster.add_worker()
    index_dir = tmp_path / "index"
    summaries: list[BatchSummary] = []
    indexing = threading.Thread(
        target=lambda: summaries.append(
            run_batch(
                index_dir,
                [str(f) for f in files],
                batch_size=2,
                progress=False,
                ray_address=cluster.address,
            )
        )
    )
    indexing.start()
    try:
        while not (index_dir / "segments").is_dir() or not any((index_dir / "segments").iterdir()):
            time.sleep(0.05)
        cluster.kill_worker(2)  # the one added above, while files are in flight
    finally:
        indexing.join()
    assert summaries[0].failed == [] and summaries[0].indexed == len(files)
    with Index.open(index_dir, readonly=True) as index:
        assert sorted(r.title for r in index.list()) == sorted(f.stem for f in files)
    again = run_batch(
        index_dir, [str(f) for f in files], progress=False, ray_address=cluster.address
    )
    assert (again.indexed, again.skipped) == (0, len(files))


def test_killing_a_worker_mid_run_loses_nothing(
    cluster: LocalCluster, sharded: ShardedIndex, index_dir: Path, queries: list[Fingerprints]
) -> None:
    with Index.open(index_dir, readonly=True) as single:
        expected = [single.match_fingerprints(q) for q in queries]
    answers: list[tuple[int, ClusterMatch]] = []
    stop = threading.Event()

    def keep_matching() -> None:
        while not stop.is_set():
            at = len(answers) % len(queries)
            answers.append((at, sharded.match_fingerprints(queries[at])))

    background = threading.Thread(target=keep_matching)
    background.start()
    try:
        while len(answers) < 3:
            time.sleep(0.05)
        killed_at = len(answers)
        cluster.kill_worker(0)
        while len(answers) < killed_at + len(queries):
            time.sleep(0.05)
    finally:
        stop.set()
        background.join()
    assert all(_same(answer, expected[at]) for at, answer in answers)
    assert sum(answer.failed_replicas for _, answer in answers) > 0
    # The dead node's replicas are replaced on the surviving worker.
    deadline = time.monotonic() + 60
    while True:
        try:
            replicas = sharded.describe()
            break
        except ray.exceptions.RayActorError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert {r["node_id"] for r in replicas} == {cluster.worker_node_id(1)}
    assert sorted(r["shard"] for r in replicas) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_the_service_matches_through_the_cluster(
    cluster: LocalCluster, index_dir: Path, queries: list[Fingerprints], tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from acr.auth import Role, create_key
    from acr.db.session import migrate, write_session
    from acr.library import sync_from_index
    from acr.settings import Settings
    from api.app import create_app
    from api.services import build_services

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        index_dir=index_dir,
        database_url=f"sqlite:///{tmp_path / 'acr.db'}",
        secret_key="test-secret",
        ray_address=cluster.address,
        shards=2,
        replicas=1,
    )
    migrate(settings.database_url)
    services = build_services(settings)
    sync_from_index(services.sessions, index_dir)  # the contents' rows, as the server's start does
    with write_session(services.sessions) as session:
        key = create_key(session, Role.VIEWER_APP, app="tv-app").secret
        session.commit()
    with Index.open(index_dir, readonly=True) as single:
        expected = single.match_fingerprints(queries[3]).best
    assert expected is not None
    try:
        with TestClient(create_app(services, background=False)) as client:
            assert client.get("/readyz").status_code == 200
            response = client.post(
                "/v1/match",
                headers={"Authorization": f"Bearer {key}"},
                data={"viewer_id": "v"},
                files={"fingerprints": ("q.fp", queries[3].to_bytes())},
            )
    finally:
        services.close()
    assert response.status_code == 200, response.text
    answer = response.json()["match"]
    assert answer["title"] == expected.title
    assert answer["offset_s"] == pytest.approx(expected.offset_s, abs=0.002)
