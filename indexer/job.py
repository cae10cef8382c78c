"""The batch indexer: hash and fingerprint in worker processes, commit from one writer.

Work flows in two stages per file. A worker computes the file's SHA-256; the
parent looks the hash up in the index and drops files that are already indexed
(or that are byte-identical to another file of the same run). Only new files
go to the second stage, where a worker decodes and fingerprints them. The
parent is the index's only writer: it gathers fingerprints and commits them
``batch_size`` at a time with :meth:`acr.Index.add_batch`, one atomic segment
per batch.

That makes a run idempotent and resumable. A rerun with the same inputs hashes
every file again, which is cheap next to decoding, and fingerprints only what
is missing; a crash or Ctrl-C loses at most the batch that was not committed
yet (on Ctrl-C the finished part of it is committed first).

A file that cannot be indexed is a failure of that file, never of the run:
media errors (:class:`acr.errors.AcrError`), I/O errors and unexpected
exceptions in a worker are reported with a code and a message. A worker
process that dies (a crash in a decoder, the OOM killer) breaks the whole
pool; the files in flight at that moment are retried one at a time in a fresh
pool, so the file that kills its worker is pinpointed and reported as
``worker_crashed`` while the innocent ones are indexed.

Memory stays bounded on catalogues of any size: inputs are enumerated lazily,
at most two files per worker are in flight, and the pool is replaced after a
few hundred files per worker (a fence against slow leaks in native decoders;
``max_tasks_per_child`` is not used because it can deadlock the executor on
Python 3.11 to 3.13, CPython issue 115634).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import select
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, Generic, Literal, NamedTuple, ParamSpec, TypeVar

from tqdm import tqdm

from acr.errors import AcrError
from acr.index.catalogue import ContentSpec
from acr.index.directory import file_sha256
from acr.index.store import Index
from acr.signals.audio import AudioSignal
from acr.signals.base import Fingerprints
from acr.threads import one_compute_thread
from indexer.manifest import ManifestError, is_manifest, read_manifest

__all__ = [
    "MEDIA_EXTENSIONS",
    "BatchInterrupted",
    "BatchSummary",
    "Failure",
    "describe_error",
    "iter_inputs",
    "run_batch",
]

MEDIA_EXTENSIONS = frozenset(
    {
        ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4",
        ".mkv", ".webm", ".ts", ".mov", ".wma", ".aif", ".aiff",
    }
)  # fmt: skip
"""Extensions picked up when a directory is walked (explicitly named files are always taken)."""

IN_FLIGHT_PER_WORKER = 2
"""Files submitted to the pool per worker at most (keeps every worker busy, memory bounded)."""

TASKS_PER_WORKER = 250
"""Tasks a pool runs per worker before it is replaced by a fresh one."""

_PARENT_POLL_S = 2.0
"""How often a worker checks that its parent lives, where the kernel cannot tell it."""

WORKER_CRASHED = "worker_crashed"
"""Failure code of a file whose worker process died while handling it."""

_CRASHED_MESSAGE = (
    "the worker process died while handling this file (a crash in the decoder or out of memory)"
)

_REFUSED_BATCH = (AcrError, ValueError, sqlite3.IntegrityError)
"""What :meth:`acr.Index.add_batch` raises for a batch it refuses because of one of its files."""

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Failure(NamedTuple):
    """A file (or manifest row) that was not indexed, and why.

    Attributes
    ----------
    path : str
        The media file, or ``manifest:line`` for a malformed manifest row.
    code : str
        Stable machine-readable reason (an :class:`acr.errors.AcrError` code,
        ``file_not_found``, ``io_error``, ``worker_crashed``, ``unexpected_error`` ...).
    message : str
        Human-readable explanation.
    """

    path: str
    code: str
    message: str


@dataclass
class BatchSummary:
    """What a run of :func:`run_batch` did.

    Attributes
    ----------
    index_dir : str
        The index written to.
    files_seen : int
        Files and manifest rows found in the inputs. Every one of them ends up
        counted exactly once as indexed, skipped or failed (unless the run was
        interrupted).
    indexed : int
        Files fingerprinted and committed to the index by this run.
    skipped : int
        Files whose content (SHA-256) was already indexed, or repeated a file
        seen earlier in the same run.
    failed : list of Failure
        Files and rows that could not be indexed, as ``(path, code, message)``.
    hours_indexed : float
        Audio duration of the files indexed by this run, in hours.
    elapsed_s : float
        Wall-clock duration of the run.
    interrupted : bool
        True when the run was stopped by Ctrl-C before it finished.
    """

    index_dir: str
    files_seen: int = 0
    indexed: int = 0
    skipped: int = 0
    failed: list[Failure] = field(default_factory=list)
    hours_indexed: float = 0.0
    elapsed_s: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing failed and the run was not interrupted."""
        return not self.failed and not self.interrupted

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view of the summary.

        Returns
        -------
        dict
            The attributes, with ``failed`` as a list of
            ``{"path", "code", "message"}`` objects.
        """
        return {
            "index_dir": self.index_dir,
            "files_seen": self.files_seen,
            "indexed": self.indexed,
            "skipped": self.skipped,
            "failed": [failure._asdict() for failure in self.failed],
            "hours_indexed": round(self.hours_indexed, 6),
            "elapsed_s": round(self.elapsed_s, 3),
            "interrupted": self.interrupted,
        }


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`run_batch`; the work committed so far is kept.

    Attributes
    ----------
    summary : BatchSummary
        What was done before the interruption (``interrupted`` is True).
    """

    def __init__(self, summary: BatchSummary) -> None:
        super().__init__("indexing interrupted; rerun the same command to resume")
        self.summary = summary


# -- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    """A media file to index, with what the catalogue should record about it."""

    path: str
    title: str | None = None
    external_id: str | None = None
    owner: str | None = None
    content_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def iter_inputs(
    inputs: Iterable[str | os.PathLike[str]],
    *,
    owner: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[_Item | Failure]:
    """Expand inputs into media files to index, lazily and in a stable order.

    Parameters
    ----------
    inputs : iterable of path-like
        Media files (taken whatever their extension), directories (walked
        recursively for :data:`MEDIA_EXTENSIONS`, skipping hidden files and
        folders, in sorted order) and manifests (``.csv`` or ``.jsonl``, see
        :mod:`indexer.manifest`).
    owner : str, optional
        Owner recorded for every file whose manifest row does not name one.
    metadata : mapping, optional
        Metadata recorded for every file; a manifest row's own metadata is
        merged over it.

    Yields
    ------
    _Item or Failure
        A file to index, or a failure for an input that does not exist, a
        directory that cannot be listed, or a malformed manifest row.
    """
    base_metadata = dict(metadata or {})
    for raw in inputs:
        path = os.fspath(raw)
        if os.path.isdir(path):
            yield from _walk(path, owner, base_metadata)
        elif not os.path.lexists(path):
            yield Failure(path, "file_not_found", f"{path}: no such file or directory")
        elif is_manifest(path):
            for row in read_manifest(path):
                if isinstance(row, ManifestError):
                    yield Failure(row.location, row.code, row.message)
                else:
                    yield _Item(
                        path=row.path,
                        title=row.title,
                        external_id=row.external_id,
                        owner=row.owner or owner,
                        content_id=row.content_id,
                        metadata={**base_metadata, **row.metadata},
                    )
        else:
            yield _Item(path=path, owner=owner, metadata=base_metadata)


def _walk(top: str, owner: str | None, metadata: dict[str, Any]) -> Iterator[_Item | Failure]:
    errors: list[OSError] = []
    for directory, subdirectories, files in os.walk(top, onerror=errors.append):
        while errors:
            error = errors.pop()
            where = error.filename or directory
            yield Failure(str(where), "io_error", f"cannot list {where}: {error.strerror}")
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in MEDIA_EXTENSIONS:
                yield _Item(path=os.path.join(directory, name), owner=owner, metadata=metadata)
    for error in errors:
        where = error.filename or top
        yield Failure(str(where), "io_error", f"cannot list {where}: {error.strerror}")


# -- worker side -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome(Generic[_T]):
    """What a worker sends back: a value, or an error code and message."""

    value: _T | None = None
    code: str = ""
    message: str = ""


def describe_error(exc: BaseException) -> tuple[str, str]:
    """A stable code and a readable message for an exception met while handling a file.

    Parameters
    ----------
    exc : BaseException
        The exception.

    Returns
    -------
    code : str
        The :class:`~acr.errors.AcrError` code; ``file_not_found``,
        ``is_a_directory``, ``permission_denied`` or ``io_error`` for I/O
        errors; ``unexpected_error`` for anything else.
    message : str
        The error's message; for anything but an ``AcrError`` it starts with
        the exception's type.
    """
    if isinstance(exc, AcrError):
        return exc.code, exc.message
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, FileNotFoundError):
        return "file_not_found", detail
    if isinstance(exc, IsADirectoryError):
        return "is_a_directory", detail
    if isinstance(exc, PermissionError):
        return "permission_denied", detail
    if isinstance(exc, OSError):
        return "io_error", detail
    return "unexpected_error", detail


def _init_worker(parent_pid: int) -> None:
    """Set a worker up: Ctrl-C is left to the parent, one compute thread, dies with the parent.

    A pool worker waits for tasks on a queue whose write end it holds itself,
    so it would wait forever once its parent is gone (killed with SIGKILL, or
    by the OOM killer), and keep the forkserver alive with it. A daemon thread
    watches the parent and ends the worker when the parent ends.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_compute_thread()
    threading.Thread(
        target=_exit_with_parent, args=(parent_pid,), name="parent-watch", daemon=True
    ).start()


def _exit_with_parent(parent_pid: int) -> None:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            descriptor = pidfd_open(parent_pid)
        except ProcessLookupError:
            os._exit(1)  # the parent is already gone
        except OSError:
            pass  # no pidfd support in this kernel: poll instead
        else:
            select.select([descriptor], [], [])  # readable once the parent has ended
            os._exit(1)
    while True:
        time.sleep(_PARENT_POLL_S)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass  # the pid exists (whoever owns it now)


def hash_file(path: str) -> _Outcome[str]:
    """Worker task: the SHA-256 of a file (the indexer's idempotency key)."""
    try:
        return _Outcome(file_sha256(path))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a worker reports everything, even SystemExit
        code, message = describe_error(exc)
        return _Outcome(code=code, message=message)


def fingerprint_file(path: str) -> _Outcome[Fingerprints]:
    """Worker task: decode a file and compute its reference fingerprints."""
    try:
        return _Outcome(AudioSignal().fingerprint_media(path))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a worker reports everything, even SystemExit
        code, message = describe_error(exc)
        return _Outcome(code=code, message=message)


# -- parent side -------------------------------------------------------------------------------


class _InlineExecutor(cf.Executor):
    """Runs each task at submission, in this process (``workers=0``)."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> cf.Future[_T]:
        future: cf.Future[_T] = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


def _pool_context() -> BaseContext:
    """A start method that is safe in a parent running threads (FAISS, tqdm, the executor)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Workers fork from a server that has imported the decoder stack once.
        context.set_forkserver_preload(["indexer.job"])
        return context
    return multiprocessing.get_context("spawn")


def _stop_pool(pool: cf.Executor, *, kill: bool) -> None:
    """Shut a pool down; with ``kill``, stop its workers without waiting for their tasks."""
    if isinstance(pool, cf.ProcessPoolExecutor) and kill:
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)
    else:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Task:
    item: _Item
    stage: Literal["hash", "fingerprint"]
    solo: bool = False
    content_hash: str = ""


class _Runner:
    """The parent's loop: submit lazily, collect, dedupe, commit in batches."""

    def __init__(
        self,
        index: Index,
        summary: BatchSummary,
        *,
        workers: int,
        batch_size: int,
        bar: tqdm[Any],
        ray_address: str | None = None,
    ) -> None:
        self.index = index
        self.summary = summary
        self.ray_address = ray_address
        self.workers = workers
        self.batch_size = batch_size
        self.bar = bar
        self.max_in_flight = max(1, workers * IN_FLIGHT_PER_WORKER)
        self.pool_task_limit = max(1, workers * TASKS_PER_WORKER)
        self.pool: cf.Executor | None = None
        self.pool_tasks = 0
        self.broken = False
        self.in_flight: dict[cf.Future[Any], _Task] = {}
        self.suspects: deque[_Task] = deque()
        self.pending: list[tuple[ContentSpec, Fingerprints, _Task]] = []
        self.claimed_hashes: set[str] = set()
        self.claimed_ids: set[str] = set()
        self.hours_done = 0.0

    # -- the loop ------------------------------------------------------------------------

    def run(self, items: Iterator[_Item | Failure]) -> None:
        try:
            exhausted = False
            while True:
                exhausted = self._fill(items, exhausted)
                if not self.in_flight:
                    if exhausted and not self.suspects:
                        break
                    continue
                done, _ = cf.wait(self.in_flight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    self._collect(future, self.in_flight.pop(future))
            self._commit()
        except BaseException:
            # Keep what is finished (a Ctrl-C lands here), then stop the workers.
            try:
                self._commit()
            finally:
                if self.pool is not None:
                    _stop_pool(self.pool, kill=True)
                    self.pool = None
            raise
        if self.pool is not None:
            _stop_pool(self.pool, kill=False)
            self.pool = None

    def _fill(self, items: Iterator[_Item | Failure], exhausted: bool) -> bool:
        """Submit work until the in-flight limit; return whether the inputs are exhausted."""
        while True:
            if self.broken or self.pool_tasks >= self.pool_task_limit:
                if self.in_flight:
                    return exhausted  # let the old pool drain first
                self._new_pool()
            if any(task.solo for task in self.in_flight.values()):
                return exhausted
            if self.suspects:
                if not self.in_flight:
                    task = self.suspects.popleft()
                    task.solo = True
                    self._submit(task)
                return exhausted
            if exhausted or len(self.in_flight) >= self.max_in_flight:
                return exhausted
            item = next(items, None)
            if item is None:
                return True
            self.summary.files_seen += 1
            if isinstance(item, Failure):
                self._fail(item.path, item.code, item.message)
            else:
                self._submit(_Task(item, "hash"))

    def _new_pool(self) -> None:
        if self.pool is not None:
            _stop_pool(self.pool, kill=False)
        if self.ray_address is not None:
            from indexer.ray_backend import RayExecutor

            self.pool = RayExecutor()
        elif self.workers == 0:
            self.pool = _InlineExecutor()
        else:
            self.pool = cf.ProcessPoolExecutor(
                self.workers,
                mp_context=_pool_context(),
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
        self.pool_tasks = 0
        self.broken = False

    def _submit(self, task: _Task) -> None:
        if self.pool is None or self.broken:
            self._new_pool()
        assert self.pool is not None
        work = hash_file if task.stage == "hash" else fingerprint_file
        try:
            future: cf.Future[Any] = self.pool.submit(work, task.item.path)
        except BrokenProcessPool:
            # The pool died between two submissions: retry this task in a new one.
            self.broken = True
            self.suspects.appendleft(task)
            return
        self.pool_tasks += 1
        self.in_flight[future] = task

    def _collect(self, future: cf.Future[Any], task: _Task) -> None:
        try:
            outcome: _Outcome[Any] = future.result()
        except (BrokenProcessPool, cf.CancelledError):
            self.broken = True
            if task.solo:
                self._release(task)
                self._fail(task.item.path, WORKER_CRASHED, _CRASHED_MESSAGE)
            else:
                self.suspects.append(task)  # retried alone to find the culprit
            return
        except Exception as exc:  # e.g. a result that could not be sent back
            self._release(task)
            if self.ray_address is not None and _ray_worker_died(exc):
                # Ray already ran it again elsewhere: this file kills its worker.
                self._fail(task.item.path, WORKER_CRASHED, _CRASHED_MESSAGE)
            else:
                self._fail(task.item.path, *describe_error(exc))
            return
        value = outcome.value
        if outcome.code or value is None:
            self._release(task)
            self._fail(task.item.path, outcome.code or "unexpected_error", outcome.message)
        elif task.stage == "hash":
            self._hashed(task, value)
        else:
            self._fingerprinted(task, value)

    def _hashed(self, task: _Task, content_hash: str) -> None:
        item = task.item
        if content_hash in self.claimed_hashes or self.index.find_by_hash(content_hash) is not None:
            self._skip()
            return
        if item.content_id is not None and (
            item.content_id in self.claimed_ids or self._id_taken(item.content_id)
        ):
            self._fail(
                item.path,
                "duplicate_content_id",
                f"content id {item.content_id!r} is already used by another file",
            )
            return
        self.claimed_hashes.add(content_hash)
        if item.content_id is not None:
            self.claimed_ids.add(item.content_id)
        self._submit(_Task(item, "fingerprint", solo=task.solo, content_hash=content_hash))

    def _fingerprinted(self, task: _Task, fingerprints: Fingerprints) -> None:
        item = task.item
        spec = ContentSpec(
            title=item.title or Path(item.path).stem,
            content_id=item.content_id,
            source=str(Path(item.path).resolve()),
            content_hash=task.content_hash,
            external_id=item.external_id,
            owner=item.owner,
            metadata=dict(item.metadata),
        )
        self.pending.append((spec, fingerprints, task))
        self.hours_done += fingerprints.duration_s / 3600.0
        self._tick()
        if len(self.pending) >= self.batch_size:
            self._commit()

    def _commit(self) -> None:
        """Add the pending fingerprints to the index as one segment."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            self.index.add_batch([(spec, fp) for spec, fp, _ in batch])
        except _REFUSED_BATCH as exc:
            if len(batch) == 1:
                self._not_committed(batch[0][2], exc)
            else:  # find the bad apple: commit the files one by one
                for spec, fp, task in batch:
                    try:
                        self.index.add_batch([(spec, fp)])
                    except _REFUSED_BATCH as one_exc:
                        self._not_committed(task, one_exc)
                    else:
                        self._indexed(fp, task)
            return
        for _, fp, task in batch:
            self._indexed(fp, task)

    def _not_committed(self, task: _Task, exc: BaseException) -> None:
        self._release(task)
        self.summary.failed.append(Failure(task.item.path, *describe_error(exc)))

    def _indexed(self, fingerprints: Fingerprints, task: _Task) -> None:
        self._release(task)
        self.summary.indexed += 1
        self.summary.hours_indexed += fingerprints.duration_s / 3600.0

    # -- bookkeeping ---------------------------------------------------------------------

    def _id_taken(self, content_id: str) -> bool:
        try:
            self.index.get(content_id)
        except AcrError:
            return False
        return True

    def _release(self, task: _Task) -> None:
        self.claimed_hashes.discard(task.content_hash)
        if task.stage == "fingerprint" and task.item.content_id is not None:
            self.claimed_ids.discard(task.item.content_id)

    def _skip(self) -> None:
        self.summary.skipped += 1
        self._tick()

    def _fail(self, path: str, code: str, message: str) -> None:
        self.summary.failed.append(Failure(path, code, message))
        if not self.bar.disable:
            self.bar.write(f"failed: {path}: [{code}] {message}", file=sys.stderr)
        self._tick()

    def _tick(self) -> None:
        self.bar.set_postfix_str(f"{self.hours_done:.2f} h audio", refresh=False)
        self.bar.update(1)


def _ray_worker_died(exc: BaseException) -> bool:
    from indexer.ray_backend import is_worker_death

    return is_worker_death(exc)


def run_batch(
    index_dir: str | os.PathLike[str],
    inputs: list[str],
    *,
    workers: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
    owner: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    ray_address: str | None = None,
) -> BatchSummary:
    """Index media files, directories and manifests into an index (created if missing).

    Parameters
    ----------
    index_dir : str or os.PathLike
        Index directory; created when it does not exist.
    inputs : list of str
        Media files, directories (walked recursively for
        :data:`MEDIA_EXTENSIONS`) and ``.csv``/``.jsonl`` manifests (see
        :mod:`indexer.manifest`).
    workers : int, optional
        Worker processes that hash and fingerprint files; ``os.cpu_count()``
        by default. ``0`` does everything in this process (no isolation from
        decoder crashes; meant for debugging and tests).
    batch_size : int
        Files committed to the index per segment. A crash loses at most one
        uncommitted batch.
    progress : bool
        Show a progress bar on stderr (only when stderr is a terminal).
    owner : str, optional
        Owner recorded for files whose manifest row does not set one.
    metadata : mapping, optional
        Metadata recorded for every file (a manifest row's metadata is merged
        over it).
    ray_address : str, optional
        Hash and fingerprint files as Ray tasks on the cluster at this address
        (``local`` starts a Ray instance in this process) instead of a process
        pool; ``workers`` is then the cluster's CPU count. Defaults to the
        environment's ``ACR_RAY_ADDRESS``; unset, the process pool is used and
        Ray is never imported. See :mod:`indexer.ray_backend`.

    Returns
    -------
    BatchSummary
        Counts, failures, audio hours and elapsed time.

    Raises
    ------
    BatchInterrupted
        On Ctrl-C, after committing the files already fingerprinted; its
        ``summary`` tells what was done. Rerunning resumes.
    acr.errors.IndexStoreError
        If the index cannot be opened (another process is writing it, or the
        directory is unusable).
    ValueError
        If ``workers`` is negative or ``batch_size`` is not positive.

    Notes
    -----
    Files are identified by the SHA-256 of their bytes: a file already in the
    index is skipped whatever its name, and a renamed copy is not indexed
    twice. Manifest rows whose file is already indexed are skipped too, so a
    rerun does not update their metadata.
    """
    ray_address = ray_address or os.environ.get("ACR_RAY_ADDRESS") or None
    if ray_address is not None:
        from indexer.ray_backend import connect

        workers = connect(ray_address)
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    started = time.perf_counter()
    summary = BatchSummary(index_dir=os.fspath(index_dir))
    show = progress and sys.stderr.isatty()
    with Index.open(index_dir, create=True) as index:
        # A first, cheap pass over the inputs gives the progress bar a total, hence an ETA.
        total = sum(1 for _ in iter_inputs(inputs)) if show else None
        with tqdm(
            total=total,
            unit="file",
            desc="indexing",
            disable=not show,
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.05,
        ) as bar:
            runner = _Runner(
                index,
                summary,
                workers=workers,
                batch_size=batch_size,
                bar=bar,
                ray_address=ray_address,
            )
            try:
                runner.run(iter_inputs(inputs, owner=owner, metadata=metadata))
            except KeyboardInterrupt:
                summary.interrupted = True
                summary.elapsed_s = time.perf_counter() - started
                raise BatchInterrupted(summary) from None
    summary.elapsed_s = time.perf_counter() - started
    return summary
