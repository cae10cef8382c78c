"""A Ray cluster of separate processes on this machine (loopback), for tests and benchmarks.

A head node that only coordinates (no CPUs, so no shard lands on it) and
``workers`` worker nodes, each its own raylet and worker processes, started
by Ray's own :class:`ray.cluster_utils.Cluster`. :meth:`LocalCluster.kill_worker`
kills a worker node's processes outright, as a crash would.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Self

import ray
from ray.cluster_utils import Cluster


class LocalCluster:
    """Head plus worker nodes on loopback; the calling process connects as the driver.

    Parameters
    ----------
    workers : int
        Worker nodes to start.
    cpus_per_worker : int
        CPUs each worker node offers to tasks.
    """

    def __init__(self, workers: int = 2, cpus_per_worker: int = 1) -> None:
        self._cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False},
        )
        self.workers: list[Any] = [
            self._cluster.add_node(num_cpus=cpus_per_worker) for _ in range(workers)
        ]
        self._cluster.wait_for_nodes()
        ray.init(address=self._cluster.address, include_dashboard=False, log_to_driver=False)

    @property
    def address(self) -> str:
        """The head's GCS address, as ``--ray-address`` takes it."""
        address: str = self._cluster.address
        return address

    def worker_node_id(self, index: int) -> str:
        """Ray node id of worker node ``index``."""
        node_id: str = self.workers[index].node_id
        return node_id

    def add_worker(self, cpus: int = 1) -> str:
        """Start one more worker node; return its node id."""
        node = self._cluster.add_node(num_cpus=cpus)
        self.workers.append(node)
        self._cluster.wait_for_nodes()
        node_id: str = node.node_id
        return node_id

    def kill_worker(self, index: int) -> None:
        """Kill worker node ``index`` (raylet and its workers) without a graceful exit."""
        self._cluster.remove_node(self.workers[index], allow_graceful=False)

    def wait_until_gone(self, index: int, timeout_s: float = 60.0) -> None:
        """Wait until Ray no longer lists worker node ``index`` as alive.

        A node killed without a graceful exit is declared dead only when its
        heartbeats have been missed for a while; until then Ray would still
        place new actors on it.
        """
        node_id = self.worker_node_id(index)
        deadline = time.monotonic() + timeout_s
        while any(n["NodeID"] == node_id and n.get("Alive") for n in ray.nodes()):  # type: ignore[no-untyped-call]
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker node {index} is still listed alive after {timeout_s} s")
            time.sleep(0.5)

    def shutdown(self) -> None:
        """Disconnect and stop every node this object started."""
        ray.shutdown()
        self._cluster.shutdown()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()
