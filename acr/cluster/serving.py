"""Sharded serving on Ray: shard replicas as actors, one fan-out lookup, one matcher.

Every shard is served by ``replicas`` actors, placed on different nodes. A
search goes to one replica of every shard at once (round robin); a replica
that dies or does not answer in time is asked again on the next replica of
its shard, and a shard none of whose replicas answered is reported, so the
answer can be flagged as partial. A replica that failed is then replaced in
the background by a new actor (on a node without that shard if there is one),
which rebuilds its shard from the segment files. Replicas are pinned to their
node rather than restarted by Ray, because a restarted actor may land anywhere,
including beside its own twin.

Matching runs in the caller: the hits of all shards are concatenated into one
:class:`~acr.matching.Hits` and given to :func:`acr.search.identify`, the
single-node procedure, so answers are the single-node answers by construction.

New segments are published without downtime: every replica first builds the
new snapshot beside the one it serves, then the matcher switches to it, then
the replicas drop the old one. Requests name their snapshot's generation, so
one query never mixes two states of the index.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from numpy.typing import NDArray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from acr.cluster.shards import ShardStore, Snapshot, read_snapshot, shard_of
from acr.index.lookup import BIT_FLIPS, probes_of
from acr.index.store import match_result
from acr.kernels import compile_kernels
from acr.matching import DEFAULT_MIN_CONFIDENCE, Hits
from acr.results import MatchResult
from acr.search import Query, identify
from acr.signals.audio.codes import CODE_BITS
from acr.signals.base import Fingerprints

DEFAULT_TIMEOUT_S = 10.0
"""How long a replica may take to answer one search before the next one is asked."""

HEAL_RETRY_S = 1.0
"""Pause before trying again to replace a replica whose replacement failed."""

_FAILURES = (RayActorError, GetTimeoutError)


@ray.remote(  # type: ignore[call-overload]
    max_restarts=0, max_task_retries=0, max_concurrency=4, num_cpus=0
)
class ShardReplica:
    """One replica of one shard: the shard's postings of every snapshot it serves.

    Threaded (``max_concurrency``), so searches of the current snapshot are
    answered while a new one is being built.
    """

    def __init__(
        self,
        index_dir: str,
        shard: int,
        n_shards: int,
        snapshot: Snapshot,
        table_dir: str | None = None,
    ) -> None:
        # Compiled (or loaded from Numba's cache) before the first query, which
        # would otherwise pay for it and, on a busy node, overrun its timeout.
        compile_kernels()
        # The snapshot comes by value: a replica must not depend on an object
        # that may have been lost with another node.
        tables = None if table_dir is None else Path(table_dir)
        self._store = ShardStore(Path(index_dir), shard, n_shards, tables)
        self._building = threading.Lock()
        self._store.lookup(snapshot).make_resident()

    def _lookup(self, snapshot: list[Any], generation: int | None = None) -> Any:
        """The lookup of a snapshot (a one-element list, so Ray hands over the reference)."""
        if generation is not None and (found := self._store.lookup_of(generation)) is not None:
            return found
        with self._building:
            return self._store.lookup(ray.get(snapshot[0]))

    def describe(self) -> dict[str, Any]:
        """Where this replica runs and what it holds."""
        return {
            "shard": self._store.shard,
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "postings": self._store.postings,
        }

    def prepare(self, snapshot: list[Any]) -> int:
        """Build the lookup of a new snapshot beside the served ones; return its generation."""
        self._lookup(snapshot)
        generation: int = ray.get(snapshot[0]).generation
        return generation

    def retire(self, snapshot: list[Any]) -> None:
        """Drop every snapshot older than ``snapshot``."""
        with self._building:
            self._store.keep_only(ray.get(snapshot[0]))

    def code_counts(
        self, snapshot: list[Any], generation: int
    ) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
        """The shard's postings per code in a snapshot, as (codes held, their counts)."""
        counts = self._lookup(snapshot, generation).code_counts()
        held = np.flatnonzero(counts)
        return held.astype(np.uint32), counts[held]

    def search(
        self,
        snapshot: list[Any],
        generation: int,
        codes: NDArray[np.uint32],
        frames: NDArray[np.uint32],
        max_flips: int,
        max_hits: int | None = None,
        lengths: NDArray[np.int64] | None = None,
    ) -> Hits:
        """The shard's hits for a query, in the snapshot named by ``generation``.

        ``lengths`` are the whole index's probe lengths, by which the probes
        to read under ``max_hits`` are chosen as a single node would.
        Sent in the narrowest integer types that hold them (12 bytes a hit, not
        24), which keeps a typical answer under Ray's 100 KB limit for objects
        returned inline rather than through the object store.
        """
        lookup = self._lookup(snapshot, generation)
        hits: Hits = lookup.search(
            codes, frames, max_flips=max_flips, max_hits=max_hits, lengths=lengths
        )
        return _narrow(hits)

    def search_contents(
        self,
        snapshot: list[Any],
        generation: int,
        codes: NDArray[np.uint32],
        frames: NDArray[np.uint32],
        keys: NDArray[np.int64],
        max_flips: int,
    ) -> Hits:
        """The shard's unbudgeted hits of the contents ``keys`` (those it holds), narrowed."""
        lookup = self._lookup(snapshot, generation)
        hits: Hits = lookup.search_contents(codes, frames, keys, max_flips=max_flips)
        return _narrow(hits)


@dataclass
class ShardedLookup:
    """A :class:`acr.search.Lookup` over every shard: fan out, retry, concatenate.

    One is made per query, so its counters describe that query.

    Attributes
    ----------
    replicas : list of list of actor handles
        ``replicas[s]`` serve shard ``s``.
    timeout_s : float
        Longest wait for one replica's answer.
    snapshot : list
        The served snapshot's object reference, in a list so that Ray hands
        the reference (not the value) to a replica, which fetches it only if
        it has not built that snapshot yet (a replacement replica).
    generation : int
        The served snapshot's generation.
    counts : ndarray of int64
        Postings per code in that snapshot, summed over the shards (what a
        budgeted lookup chooses its probes by).
    first : int
        Which replica of each shard is asked first (round robin between queries).
    missing : set of int
        Shards that could not answer (no replica did).
    failed : set of (int, int)
        ``(shard, replica)`` pairs that failed to answer.
    """

    replicas: list[list[Any]]
    timeout_s: float
    snapshot: list[Any]
    generation: int
    counts: NDArray[np.int64]
    first: int = 0
    missing: set[int] = field(default_factory=set)
    failed: set[tuple[int, int]] = field(default_factory=set)

    def search(
        self,
        codes: NDArray[np.uint32],
        frames: NDArray[np.uint32],
        *,
        max_flips: int = BIT_FLIPS,
        max_hits: int | None = None,
        sample_hits: int | None = None,
    ) -> Hits:
        """Every live posting of every shard within ``max_flips`` bits of a query code.

        With ``max_hits``, every shard is given the whole index's probe
        lengths (from :attr:`counts`), so that it reads the probes a single
        node would (up to ``sample_hits`` over budget, as a single node).
        """
        lengths = None
        if max_hits is not None:
            lengths = self.counts[probes_of(codes, max_flips)]
            if int(lengths.sum()) <= max_hits:
                # Every probe fits: the shards read them all, and need no lengths sent.
                lengths, max_hits = None, None
            elif sample_hits is not None:
                max_hits = sample_hits
        parts: list[Hits] = self.fan_out("search", codes, frames, max_flips, max_hits, lengths)
        return _concatenated(parts)

    def search_contents(
        self,
        codes: NDArray[np.uint32],
        frames: NDArray[np.uint32],
        keys: NDArray[np.int64],
        *,
        max_flips: int = BIT_FLIPS,
    ) -> Hits:
        """The unbudgeted hits of the contents ``keys``, from the shards that hold them.

        A content's postings all sit in one shard (``key mod shards``), so only
        those shards are asked.
        """
        keys = np.asarray(keys, dtype=np.int64)
        shards = np.unique(shard_of(keys, len(self.replicas))).tolist()
        parts: list[Hits] = self.fan_out(
            "search_contents", codes, frames, keys, max_flips, shards=shards
        )
        return _concatenated(parts)

    def fan_out(self, method: str, *args: Any, shards: list[int] | None = None) -> list[Any]:
        """Call ``method`` on one replica of every shard (or of ``shards``), the next on failure.

        Returns the answers of the shards that answered; the others are added
        to :attr:`missing`.
        """

        def ask(shard: int, attempt: int) -> tuple[int, Any]:
            group = self.replicas[shard]
            which = (self.first + attempt) % len(group)
            request = getattr(group[which], method).remote(self.snapshot, self.generation, *args)
            return which, request

        if shards is None:
            shards = list(range(len(self.replicas)))
        asked = {shard: ask(shard, 0) for shard in shards}
        answers: list[Any] = []
        for shard, (which, request) in asked.items():
            for attempt in range(len(self.replicas[shard])):
                if attempt:
                    which, request = ask(shard, attempt)
                try:
                    answers.append(ray.get(request, timeout=self.timeout_s))
                    break
                except _FAILURES:
                    self.failed.add((shard, which))
            else:
                self.missing.add(shard)
        return answers


@dataclass(frozen=True)
class ClusterMatch:
    """A match through the cluster.

    Attributes
    ----------
    result : MatchResult
        What the single-node index would answer, if every shard answered.
    missing_shards : tuple of int
        Shards that could not answer; when not empty the result was computed
        without their contents and may be wrong.
    failed_replicas : int
        Replicas that failed to answer (their searches were asked of another
        replica; they are replaced in the background).
    generation : int
        The snapshot of the index that answered.
    """

    result: MatchResult
    missing_shards: tuple[int, ...]
    failed_replicas: int
    generation: int

    @property
    def complete(self) -> bool:
        """Whether every shard answered."""
        return not self.missing_shards


class ShardedIndex:
    """An index served by shard replicas on a Ray cluster; matching in the caller.

    Call :func:`ray.init` first (``ray.init(address=...)`` for a cluster).

    Parameters
    ----------
    index_dir : path
        The index directory, on storage every node can read.
    shards : int
        Number of shards; contents are assigned by ``key mod shards``.
    replicas : int
        Replicas per shard, spread over the cluster's nodes.
    timeout_s : float
        Longest wait for one replica's answer before another is asked.
    heal : bool
        When a replica fails, check them all and replace the dead ones, in the background.
    table_dir : path, optional
        A directory on each node's local disk where replicas keep their posting
        tables, memory-mapped and shared by the replicas on that node (see
        :class:`~acr.cluster.shards.ShardStore`); without it, tables are built in
        each replica's memory.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike[str],
        *,
        shards: int,
        replicas: int = 2,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        heal: bool = True,
        table_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if shards < 1 or replicas < 1:
            raise ValueError("shards and replicas must be positive")
        self.index_dir = Path(index_dir).resolve()
        self.shards = shards
        self.timeout_s = timeout_s
        self.heal = heal
        self.table_dir = None if table_dir is None else str(Path(table_dir).resolve())
        self._current, self._records = read_snapshot(self.index_dir)
        self.snapshot = [ray.put(self._current)]
        self._lock = threading.Lock()
        self._healer_state = threading.Lock()
        self._healer: threading.Thread | None = None
        self._heal_again = False
        self._turn = itertools.count()
        nodes = _serving_nodes()
        self._nodes = [
            [nodes[(s + r) % len(nodes)] for r in range(replicas)] for s in range(shards)
        ]
        self.replicas = [
            [self._spawn(shard, node) for node in self._nodes[shard]] for shard in range(shards)
        ]
        ray.get([r.describe.remote() for group in self.replicas for r in group])
        self.counts = self._code_counts(self.snapshot, self.generation)

    @property
    def generation(self) -> int:
        """Generation of the snapshot being served."""
        return self._current.generation

    def describe(self) -> list[dict[str, Any]]:
        """Every replica's shard, node, process and postings."""
        return list(ray.get([r.describe.remote() for group in self.replicas for r in group]))

    def publish(self) -> bool:
        """Serve the index's latest committed state, without a pause; return whether it changed.

        Every replica builds the new snapshot while still serving the old one;
        then matching switches to it and the replicas drop the old one.
        """
        snapshot, records = read_snapshot(self.index_dir)
        if snapshot.generation == self.generation:
            return False
        reference = [ray.put(snapshot)]
        ray.get([r.prepare.remote(reference) for group in self.replicas for r in group])
        counts = self._code_counts(reference, snapshot.generation)
        with self._lock:
            self._current, self._records, self.snapshot = snapshot, records, reference
            self.counts = counts
        for group in self.replicas:
            for replica in group:
                replica.retire.remote(reference)
        return True

    def _code_counts(self, snapshot: list[Any], generation: int) -> NDArray[np.int64]:
        """Postings per code in a snapshot, every shard's summed (64 MB, once per snapshot)."""
        asking = ShardedLookup(
            self.replicas, self.timeout_s, snapshot, generation, np.zeros(0, dtype=np.int64)
        )
        answers = asking.fan_out("code_counts")
        if asking.missing:
            raise RuntimeError(f"shards {sorted(asking.missing)} could not count their codes")
        counts = np.zeros(1 << CODE_BITS, dtype=np.int64)
        for held, held_counts in answers:
            counts[held] += held_counts
        return counts

    def _spawn(self, shard: int, node_id: str) -> Any:
        """A new replica of ``shard`` on ``node_id``, serving the current snapshot."""
        # Hard affinity: a soft one lets Ray put both replicas of a shard on one
        # node (or on the head) when a node is slow to start workers.
        placement = NodeAffinitySchedulingStrategy(node_id, soft=False)
        return ShardReplica.options(scheduling_strategy=placement).remote(  # type: ignore[attr-defined]
            str(self.index_dir), shard, self.shards, self._current, self.table_dir
        )

    def _heal(self) -> None:
        """Replace dead replicas in the background (one healer, run again if asked meanwhile)."""
        with self._healer_state:
            self._heal_again = True
            if self._healer is not None and self._healer.is_alive():
                return
            self._healer = threading.Thread(target=self._healing, name="acr-heal", daemon=True)
            self._healer.start()

    def _healing(self) -> None:
        while True:
            with self._healer_state:
                if not self._heal_again:
                    return
                self._heal_again = False
            self._replace_dead()

    def _replace_dead(self) -> None:
        """Replace every replica that does not answer, on a node without its shard if possible."""
        probes = {
            (shard, which): replica.describe.remote()
            for shard, group in enumerate(self.replicas)
            for which, replica in enumerate(group)
        }
        for (shard, which), probe in probes.items():
            try:
                ray.get(probe, timeout=self.timeout_s)
                continue
            except _FAILURES:
                pass
            nodes = _serving_nodes()
            others = {n for i, n in enumerate(self._nodes[shard]) if i != which}
            node = next((n for n in nodes if n not in others), None) or nodes[0]
            replica = self._spawn(shard, node)
            try:
                ray.get(replica.describe.remote(), timeout=self.timeout_s)
            except _FAILURES:
                # The node died too, and Ray had not noticed yet: try again later.
                with self._healer_state:
                    self._heal_again = True
                time.sleep(HEAL_RETRY_S)
                continue
            self._nodes[shard][which] = node
            self.replicas[shard][which] = replica

    def match_fingerprints(
        self,
        fingerprints: Fingerprints,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        warps: bool = True,
    ) -> ClusterMatch:
        """Identify a sample from its fingerprints, as :meth:`acr.Index.match_fingerprints` does."""
        started = time.perf_counter()
        with self._lock:
            records = self._records
            lookup = ShardedLookup(
                self.replicas,
                self.timeout_s,
                self.snapshot,
                self.generation,
                self.counts,
                first=next(self._turn),
            )

        def ref_frames(key: int) -> int:
            return round(records[key].duration_s / fingerprints.hop_s)

        found = identify(
            Query(fingerprints, lookup, ref_frames, max(1, len(records))),
            top_k=top_k,
            min_confidence=min_confidence,
            warps=warps,
        )
        result = match_result(found, records, fingerprints, started)
        if lookup.failed and self.heal:
            self._heal()
        return ClusterMatch(
            result, tuple(sorted(lookup.missing)), len(lookup.failed), lookup.generation
        )

    def close(self) -> None:
        """Stop every replica."""
        for group in self.replicas:
            for replica in group:
                ray.kill(replica, no_restart=True)


def _concatenated(parts: list[Hits]) -> Hits:
    """The shards' hits as one (every content's hits come from one shard)."""
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Hits(empty, empty, empty)
    return Hits(
        query_frames=np.concatenate([p.query_frames for p in parts]).astype(np.int64),
        keys=np.concatenate([p.keys for p in parts]).astype(np.int64),
        ref_frames=np.concatenate([p.ref_frames for p in parts]).astype(np.int64),
        complete=all(p.complete for p in parts),
    )


def _narrow(hits: Hits) -> Hits:
    """The same hits in unsigned 32-bit integers where the values fit."""

    def narrow(values: NDArray[np.int64]) -> NDArray[Any]:
        fits = values.size == 0 or (values.min() >= 0 and values.max() <= np.iinfo(np.uint32).max)
        return values.astype(np.uint32) if fits else values

    return Hits(
        narrow(hits.query_frames), narrow(hits.keys), narrow(hits.ref_frames), hits.complete
    )


def _serving_nodes() -> list[str]:
    """Alive nodes that offer CPUs (a head started with none only coordinates), by id."""
    alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    working = [n for n in alive if n.get("Resources", {}).get("CPU", 0) > 0] or alive
    return sorted(n["NodeID"] for n in working)
