"""Hashing and fingerprinting as Ray tasks: the batch indexer on a cluster.

The parent stays the index's only writer; only the per-file work moves to Ray
tasks, behind the same :class:`concurrent.futures.Executor` interface as the
process pool, so the job's loop (dedupe, batches, failures) is unchanged.
Segments are written by the parent into the index directory, which must be
on storage that the serving nodes can read.

A worker process or node that dies takes its tasks with it; Ray runs them
again elsewhere (up to :data:`TASK_RETRIES` times). A file that still kills
its worker after that is reported as ``worker_crashed``, like with the pool.
A parent that dies is resumed by running the job again (files already in the
index are skipped by hash).

Ray is imported only when this backend is chosen.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import ray

TASK_RETRIES = 3
"""Times a task is run again after its worker process or node died."""

_P = ParamSpec("_P")
_T = TypeVar("_T")


def connect(address: str) -> int:
    """Join the Ray cluster at ``address`` (``local`` starts one in this process).

    Returns
    -------
    int
        CPUs the cluster offers, the number of files worked on at once.
    """
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, log_to_driver=False)
    cpus = ray.cluster_resources().get("CPU", 1)  # type: ignore[no-untyped-call]
    return max(1, int(cpus))


def is_worker_death(exc: BaseException) -> bool:
    """Whether a task failed because its worker process or node died (after Ray's retries)."""
    return isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError))


class RayExecutor(cf.Executor):
    """Runs each submitted call as a Ray task (one CPU each)."""

    def __init__(self) -> None:
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> cf.Future[_T]:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = ray.remote(max_retries=TASK_RETRIES)(fn)
        future: cf.Future[_T] = remote.remote(*args, **kwargs).future()
        return future
