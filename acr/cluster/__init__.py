"""Scale-out: the index split into shards by content, served by Ray actors.

* :mod:`acr.cluster.shards` — which content goes to which shard, snapshots of
  the index that every shard serves alike, and a shard's own lookup (no Ray).
* :mod:`acr.cluster.serving` — shard replicas as Ray actors and the fan-out
  lookup and matcher that merge their hits into the single-node answer.
* :mod:`acr.cluster.local` — a Ray cluster of separate processes on loopback,
  for tests and benchmarks.

Nothing here is imported by :mod:`acr` or :mod:`api` unless a cluster is
configured, so the embedded default needs no Ray. See ``docs/scale.md``.
"""
