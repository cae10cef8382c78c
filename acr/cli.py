"""The ``acr`` command: index media, match samples, inspect and maintain an index.

Subcommands::

    acr index   --index-dir DIR [--signal audio|video] [--workers N] [--batch-size N]
                [--no-progress] [--json] PATH...
    acr match   --index-dir DIR [--json] [--top-k K] [--min-confidence C] [--max-seconds S] PATH...
    acr list    --index-dir DIR [--json]
    acr stats   --index-dir DIR [--json]
    acr remove  --index-dir DIR CONTENT_ID...
    acr compact --index-dir DIR
    acr demo    [--dir DIR]
    acr serve   [--host H] [--port P] [--workers N] [--demo]
    acr keys    create --role ROLE [--organisation SLUG | --app SLUG] | list | revoke KEY_ID

``acr match --json`` prints exactly one JSON object per query, one per line::

    {"query": PATH, "match": null or {"content_id", "title", "source", "offset_s",
     "confidence", "score", "speed", "query_start_s", "query_end_s", "duration_s",
     "metadata"}, "elapsed_ms": FLOAT, "query_duration_s": FLOAT}

with ``"alternatives"`` (the other candidates, best first) when ``--top-k`` is
above 1, ``"segments"`` (the stretches of the sample matched to different
references, in sample order) when the sample straddles references, and
``"error": {"code", "message"}`` (and a null match) when the query's media
cannot be used.

``acr index --signal video`` indexes the pictures of video files into
``DIR/video`` (a :class:`~acr.index.video.VideoIndex`); ``acr match`` matches
each sample on every signal it has and DIR has an index for (sound in DIR,
pictures in ``DIR/video``) and fuses the evidence into one answer.

Exit status: 0 on success (a query without a match is a success), 1 when a
file or query failed or the index is unusable, 2 for usage errors, 130 when
interrupted by Ctrl-C. Errors of the core (:class:`acr.errors.AcrError`) are
printed as ``acr: error: <message>``, never as a traceback.

Subcommands live in the :data:`COMMANDS` registry: a new one (``serve``,
``payouts``, ``keys`` ...) is a :class:`Command` passed to :func:`register`,
with a function that declares its arguments and one that runs it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from acr import __version__
from acr.errors import (
    AcrError,
    IndexStoreError,
    NoAudioStreamError,
    NoVideoStreamError,
    UnknownContentError,
)
from acr.index.directory import CATALOGUE_FILE, file_sha256
from acr.index.store import DEFAULT_MAX_QUERY_BYTES, DEFAULT_MAX_QUERY_SECONDS, Index
from acr.index.video import VIDEO_SUBDIRECTORY, VideoIndex
from acr.matching import DEFAULT_MIN_CONFIDENCE
from acr.results import Match, MatchResult
from acr.signals.base import MediaSource
from acr.video_matching import FUSION_FLOOR, fuse
from indexer.job import (
    BatchInterrupted,
    BatchSummary,
    Failure,
    describe_error,
    iter_inputs,
    run_batch,
)

__all__ = [
    "COMMANDS",
    "Command",
    "build_parser",
    "main",
    "probability_argument",
    "register",
    "run_command",
]

PROG = "acr"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """One ``acr`` subcommand.

    Attributes
    ----------
    name : str
        The word after ``acr``.
    help : str
        One line for ``acr --help``.
    description : str
        Longer text for ``acr NAME --help``.
    configure : callable
        Declares the subcommand's arguments on its parser.
    run : callable
        Runs the subcommand with the parsed arguments; returns the exit status.
    interrupted_note : str
        Printed after ``acr: interrupted`` when Ctrl-C stops the subcommand.
    """

    name: str
    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    interrupted_note: str = ""


COMMANDS: dict[str, Command] = {}
"""Registered subcommands, in the order ``acr --help`` lists them."""


def register(command: Command) -> Command:
    """Add a subcommand to :data:`COMMANDS`.

    Parameters
    ----------
    command : Command
        The subcommand; its name must not be taken.

    Returns
    -------
    Command
        The same command.

    Raises
    ------
    ValueError
        If a subcommand of that name is already registered.
    """
    if command.name in COMMANDS:
        raise ValueError(f"an acr subcommand named {command.name!r} is already registered")
    COMMANDS[command.name] = command
    return command


# -- argument types ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no worker processes) or more, got {value}")
    return value


def probability_argument(text: str) -> float:
    """An argparse type: a number between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


def _limit_or_unlimited(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value or None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. \'{"label": "acme"}\'')
    return value


def _add_index_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index-dir", required=True, metavar="DIR", help="directory of the index")


def _add_json(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def _print(text: str = "") -> None:
    print(text, flush=True)


def _dump(value: Any) -> str:
    return json.dumps(value)


# -- acr index --------------------------------------------------------------------------------


def _configure_index(parser: argparse.ArgumentParser) -> None:
    _add_index_dir(parser)
    parser.add_argument(
        "--signal",
        choices=("audio", "video"),
        default="audio",
        help="index the sound of the files (default) or their pictures, into DIR/video "
        "(one file at a time: --workers and --batch-size apply to sound)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="worker processes (default: one per CPU; 0 runs everything in this process)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        metavar="N",
        help="files committed per batch; a crash loses at most one batch (default: 32)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.add_argument("--owner", help="owner recorded for files whose manifest names none")
    parser.add_argument(
        "--metadata",
        type=_json_object,
        default=None,
        metavar="JSON",
        help="JSON object recorded as metadata of every file (manifest metadata wins)",
    )
    _add_json(parser, "the summary")
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="media files, directories (searched recursively) and .csv/.jsonl manifests",
    )


def _run_index(args: argparse.Namespace) -> int:
    def report(summary: BatchSummary, stream: TextIO) -> None:
        if args.json:
            print(_dump(summary.to_dict()), file=stream, flush=True)
        else:
            print(_format_summary(summary, args.signal), file=stream, flush=True)

    if args.signal == "video":
        summary = _index_video(args)
        report(summary, sys.stdout)
        return EXIT_FAILED if summary.failed else EXIT_OK
    try:
        summary = run_batch(
            args.index_dir,
            args.paths,
            workers=args.workers,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            owner=args.owner,
            metadata=args.metadata,
        )
    except BatchInterrupted as exc:
        report(exc.summary, sys.stderr)
        raise
    report(summary, sys.stdout)
    return EXIT_FAILED if summary.failed else EXIT_OK


def _index_video(args: argparse.Namespace) -> BatchSummary:
    """Index the pictures of the inputs, one file at a time (hashing uses one core).

    A file whose sound is already in the audio index of DIR gets the same
    content id, so that its sound and its pictures are one content to ``acr match``.
    """
    started = time.perf_counter()
    root = Path(args.index_dir)
    summary = BatchSummary(index_dir=str(root / VIDEO_SUBDIRECTORY))
    audio = Index.open(root, readonly=True) if (root / CATALOGUE_FILE).exists() else None
    try:
        with VideoIndex.open(root / VIDEO_SUBDIRECTORY, create=True) as index:
            for item in iter_inputs(args.paths, owner=args.owner, metadata=args.metadata):
                summary.files_seen += 1
                if isinstance(item, Failure):
                    summary.failed.append(item)
                    continue
                before = time.time()
                try:
                    heard = audio.find_by_hash(file_sha256(item.path)) if audio else None
                    record = index.add_file(
                        item.path,
                        content_id=item.content_id or (heard.content_id if heard else None),
                        title=item.title or (heard.title if heard else None),
                        metadata=dict(item.metadata),
                        external_id=item.external_id,
                        owner=item.owner,
                    )
                except Exception as exc:  # one bad file never stops the others
                    summary.failed.append(Failure(item.path, *describe_error(exc)))
                    continue
                if record.added_at < before:
                    summary.skipped += 1
                else:
                    summary.indexed += 1
                    summary.hours_indexed += record.duration_s / 3600.0
    finally:
        if audio is not None:
            audio.close()
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _format_summary(summary: BatchSummary, signal: str = "audio") -> str:
    lines = [
        f"indexed {summary.indexed} file{'s' if summary.indexed != 1 else ''} "
        f"({summary.hours_indexed:.2f} h of {signal}) into {summary.index_dir} "
        f"in {_duration(summary.elapsed_s)}",
        f"  {summary.files_seen} seen, {summary.indexed} indexed, "
        f"{summary.skipped} already indexed, {len(summary.failed)} failed",
    ]
    if summary.failed:
        lines.append("failed:")
        lines.extend(f"  {path}: [{code}] {message}" for path, code, message in summary.failed)
    if summary.interrupted:
        lines.append("interrupted before the end: rerun the same command to resume")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# -- acr match --------------------------------------------------------------------------------


def _configure_match(parser: argparse.ArgumentParser) -> None:
    _add_index_dir(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per query, one per line",
    )
    parser.add_argument(
        "--top-k",
        type=_positive_int,
        default=1,
        metavar="K",
        help="report up to K candidate references per query (default: 1)",
    )
    parser.add_argument(
        "--min-confidence",
        type=probability_argument,
        default=DEFAULT_MIN_CONFIDENCE,
        metavar="C",
        help=f"smallest confidence reported as a match (default: {DEFAULT_MIN_CONFIDENCE:g})",
    )
    parser.add_argument(
        "--max-seconds",
        type=_limit_or_unlimited,
        default=DEFAULT_MAX_QUERY_SECONDS,
        metavar="S",
        help="reject longer samples (default: %(default)g; 0 for no limit)",
    )
    parser.add_argument(
        "--max-mb",
        type=_limit_or_unlimited,
        default=DEFAULT_MAX_QUERY_BYTES / 1e6,
        metavar="MB",
        help="reject larger sample files (default: %(default)g MB; 0 for no limit)",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="sample files to identify ('-' reads stdin)"
    )


class _Matcher:
    """The indexes of an index directory: sound in DIR, pictures in DIR/video."""

    def __init__(self, directory: str) -> None:
        root = Path(directory)
        self.audio = Index.open(root, readonly=True) if (root / CATALOGUE_FILE).exists() else None
        video = root / VIDEO_SUBDIRECTORY
        self.video = (
            VideoIndex.open(video, readonly=True) if (video / CATALOGUE_FILE).exists() else None
        )
        if self.audio is None and self.video is None:
            raise IndexStoreError(f"no index at {root} (create one with `acr index`)")

    def close(self) -> None:
        for index in (self.audio, self.video):
            if index is not None:
                index.close()

    def match(self, query: str, args: argparse.Namespace) -> MatchResult:
        """Match a sample on each signal it has, and fuse the answers."""
        max_bytes = None if args.max_mb is None else round(args.max_mb * 1e6)
        source: MediaSource = query
        if query == "-":
            source = sys.stdin.buffer if self.video is None else sys.stdin.buffer.read()
        options: dict[str, Any] = {
            "top_k": args.top_k,
            "max_seconds": args.max_seconds,
            "max_bytes": max_bytes,
        }
        if self.audio is None or self.video is None:
            single = self.video if self.audio is None else self.audio
            assert single is not None
            return single.match(source, min_confidence=args.min_confidence, **options)
        floor = min(args.min_confidence, FUSION_FLOOR)
        results: list[MatchResult | None] = []
        errors: list[Exception] = []
        for index in (self.audio, self.video):
            try:
                results.append(index.match(source, min_confidence=floor, **options))
            except (NoAudioStreamError, NoVideoStreamError) as exc:
                results.append(None)
                errors.append(exc)
        if results[0] is None and results[1] is None:
            raise errors[0]
        return fuse(*results, top_k=args.top_k, min_confidence=args.min_confidence)


def _run_match(args: argparse.Namespace) -> int:
    failures = 0
    matcher = _Matcher(args.index_dir)
    try:
        for query in args.paths:
            started = time.perf_counter()
            try:
                result = matcher.match(query, args)
            except Exception as exc:  # one bad query never stops the others
                failures += 1
                code, message = describe_error(exc)
                elapsed_ms = (time.perf_counter() - started) * 1000.0
                if args.json:
                    _print(
                        _dump(
                            {
                                "query": query,
                                "match": None,
                                "elapsed_ms": round(elapsed_ms, 3),
                                "error": {"code": code, "message": message},
                            }
                        )
                    )
                else:
                    _print(f"{query}: error [{code}]: {message}")
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            if args.json:
                _print(_dump(_match_record(query, result, elapsed_ms, args.top_k)))
            else:
                _print(_match_line(query, result))
    finally:
        matcher.close()
    return EXIT_FAILED if failures else EXIT_OK


def _match_record(query: str, result: MatchResult, elapsed_ms: float, top_k: int) -> dict[str, Any]:
    best = result.best
    record: dict[str, Any] = {
        "query": query,
        "match": best.to_dict() if best is not None else None,
        "elapsed_ms": round(elapsed_ms, 3),
        "query_duration_s": round(result.query_duration_s, 3),
    }
    if top_k > 1:
        record["alternatives"] = [match.to_dict() for match in result.matches[1:]]
    if len(result.segments) > 1:
        record["segments"] = [match.to_dict() for match in result.segments]
    return record


def _describe_match(match: Match) -> str:
    return (
        f"{match.title} [{match.content_id}] at {match.offset_s:.2f} s "
        f"(confidence {match.confidence:.2f})"
    )


def _match_line(query: str, result: MatchResult) -> str:
    best = result.best
    if best is None:
        return f"{query}: no match"
    line = f"{query}: {_describe_match(best)}"
    if len(result.segments) > 1:
        pieces = ", ".join(
            f"{m.query_start_s:.1f}-{m.query_end_s:.1f} s: {_describe_match(m)}"
            for m in result.segments
        )
        line += f"; segments: {pieces}"
    if len(result.matches) > 1:
        others = ", ".join(_describe_match(m) for m in result.matches[1:])
        line += f"; alternatives: {others}"
    return line


# -- acr list / stats -------------------------------------------------------------------------


def _configure_list(parser: argparse.ArgumentParser) -> None:
    _add_index_dir(parser)
    _add_json(parser, "the contents (a JSON array)")


def _open_indexes(directory: str, *, readonly: bool) -> list[Index | VideoIndex]:
    """The indexes of an index directory, whichever exist: sound in DIR, pictures in DIR/video.

    Raises
    ------
    IndexStoreError
        Neither exists.
    """
    root = Path(directory)
    opened: list[Index | VideoIndex] = []
    try:
        if (root / CATALOGUE_FILE).exists():
            opened.append(Index.open(root, readonly=readonly))
        if (root / VIDEO_SUBDIRECTORY / CATALOGUE_FILE).exists():
            opened.append(VideoIndex.open(root / VIDEO_SUBDIRECTORY, readonly=readonly))
    except BaseException:
        _close(opened)
        raise
    if not opened:
        raise IndexStoreError(f"no index at {root} (create one with `acr index`)")
    return opened


def _close(indexes: Sequence[Index | VideoIndex]) -> None:
    for index in indexes:
        index.close()


def _signal(index: Index | VideoIndex) -> str:
    return "video" if isinstance(index, VideoIndex) else "audio"


def _run_list(args: argparse.Namespace) -> int:
    indexes = _open_indexes(args.index_dir, readonly=True)
    try:
        records = [(_signal(index), record) for index in indexes for record in index.list()]
    finally:
        _close(indexes)
    if args.json:
        _print(_dump([record.to_dict() for _, record in records]))
        return EXIT_OK
    # With pictures indexed, each line names its signal: a content with sound and
    # pictures has a line for each.
    with_signal = any(isinstance(index, VideoIndex) for index in indexes)
    for signal, record in records:
        fields = (
            record.content_id,
            f"{record.duration_s:.1f}s",
            record.title,
            record.source or "-",
            *((signal,) if with_signal else ()),
        )
        _print("\t".join(fields))
    return EXIT_OK


def _configure_stats(parser: argparse.ArgumentParser) -> None:
    _add_index_dir(parser)
    _add_json(parser, "the statistics")


def _run_stats(args: argparse.Namespace) -> int:
    indexes = _open_indexes(args.index_dir, readonly=True)
    try:
        audio = next((i.stats() for i in indexes if isinstance(i, Index)), None)
        video = next((i.stats() for i in indexes if isinstance(i, VideoIndex)), None)
    finally:
        _close(indexes)
    if args.json:
        # The sound's figures stay at the top level, as before pictures were indexed.
        numbers: dict[str, Any] = {"index_dir": args.index_dir}
        if audio is not None:
            numbers.update(audio.to_dict())
        if video is not None:
            numbers["video"] = video.to_dict()
        _print(_dump(numbers))
        return EXIT_OK
    _print(f"index:     {args.index_dir}")
    if audio is not None:
        _print(f"contents:  {audio.contents}")
        _print(f"audio:     {audio.duration_s / 3600.0:.2f} h ({audio.duration_s:.1f} s)")
        _print(f"codes:     {audio.codes}")
        _print(f"segments:  {audio.segments}")
        _print(f"on disk:   {_size(audio.bytes_on_disk)}")
    if video is not None:
        _print(
            f"video:     {video.contents} contents, {video.hours:.2f} h "
            f"({video.duration_s:.1f} s), {video.hashes} hashes, {video.segments} segments, "
            f"{_size(video.bytes_on_disk)} on disk"
        )
    return EXIT_OK


def _size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# -- acr remove / compact ---------------------------------------------------------------------


def _configure_remove(parser: argparse.ArgumentParser) -> None:
    _add_index_dir(parser)
    parser.add_argument("content_ids", nargs="+", metavar="CONTENT_ID", help="contents to remove")


def _holds(index: Index | VideoIndex, content_id: str) -> bool:
    try:
        index.get(content_id)
    except UnknownContentError:
        return False
    return True


def _run_remove(args: argparse.Namespace) -> int:
    indexes = _open_indexes(args.index_dir, readonly=False)
    try:
        # Check every id first, so that a typo removes nothing. A content goes from each
        # signal's index that holds it: its sound and its pictures.
        holders = {
            content_id: [index for index in indexes if _holds(index, content_id)]
            for content_id in dict.fromkeys(args.content_ids)
        }
        for content_id, found in holders.items():
            if not found:
                indexes[0].get(content_id)  # raises the usual unknown-content error
        for content_id, found in holders.items():
            for index in found:
                record = index.remove(content_id)
                pictures = " (pictures)" if isinstance(index, VideoIndex) else ""
                _print(f"removed {record.content_id} ({record.title}){pictures}")
    finally:
        _close(indexes)
    _print("removed contents stop matching now; their codes stay on disk until `acr compact`")
    return EXIT_OK


def _configure_compact(parser: argparse.ArgumentParser) -> None:
    _add_index_dir(parser)


def _run_compact(args: argparse.Namespace) -> int:
    indexes = _open_indexes(args.index_dir, readonly=False)
    try:
        for index in indexes:
            before = index.stats().bytes_on_disk
            replaced = index.compact()
            after = index.stats()
            pictures = " (pictures)" if isinstance(index, VideoIndex) else ""
            _print(
                f"compacted {replaced} segment file{'s' if replaced != 1 else ''} into "
                f"{after.segments}{pictures}; "
                f"{_size(before)} -> {_size(after.bytes_on_disk)} on disk"
            )
    finally:
        _close(indexes)
    return EXIT_OK


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", default="demo", help="folder for the catalogue, its index and the samples"
    )


def _run_demo(args: argparse.Namespace) -> int:
    from acr.demo import build_demo
    from indexer import run_batch

    directory = Path(args.dir)
    _print(f"Writing the demo catalogue and samples to {directory}/ ...")
    manifest, index_dir, samples = build_demo(directory)
    _print(f"Indexing {manifest} into {index_dir}/ (already indexed files are skipped) ...")
    summary = run_batch(index_dir, [str(manifest)], progress=sys.stderr.isatty())
    _print(
        f"  {summary.indexed} indexed, {summary.skipped} already there, "
        f"{len(summary.failed)} failed"
    )
    _print("\nMatching the samples (acr match --json):")
    status = main(["match", "--index-dir", str(index_dir), "--json", *(str(p) for p, _ in samples)])
    _print("\nExpected:")
    for path, expected in samples:
        _print(f"  {path.name}: {expected}")
    _print(
        f"\nTry it yourself: acr match --index-dir {index_dir} {samples[0][0]}\n"
        f"or index your own files: acr index --index-dir {index_dir} PATH..."
    )
    return status if not summary.failed else EXIT_FAILED


register(
    Command(
        name="index",
        help="index media files, directories and manifests",
        description=(
            "Fingerprint media into an index (created if missing). Inputs are media files, "
            "directories (searched recursively) and .csv/.jsonl manifests with a 'path' column "
            "and optional title, external_id, owner, content_id and metadata. Files already "
            "indexed (same bytes) are skipped, so rerunning after a crash resumes. Exit status "
            "1 when some files failed."
        ),
        configure=_configure_index,
        run=_run_index,
        interrupted_note="rerun the same command to resume: files already indexed are skipped",
    )
)
register(
    Command(
        name="match",
        help="identify samples: which content, at which offset",
        description=(
            "Match each sample against the index. With --json, prints exactly one JSON object "
            "per query per line. Exit status 1 when some query could not be processed (a query "
            "without a match is not an error)."
        ),
        configure=_configure_match,
        run=_run_match,
    )
)
register(
    Command(
        name="list",
        help="list indexed contents",
        description="List the contents of the index, oldest first.",
        configure=_configure_list,
        run=_run_list,
    )
)
register(
    Command(
        name="stats",
        help="show the size of an index",
        description="Show how many contents, hours of audio and codes an index holds.",
        configure=_configure_stats,
        run=_run_stats,
    )
)
register(
    Command(
        name="remove",
        help="remove contents from an index",
        description=(
            "Remove contents by id; they stop matching at once and their codes are dropped "
            "by the next `acr compact`. Nothing is removed if any id is unknown."
        ),
        configure=_configure_remove,
        run=_run_remove,
    )
)
register(
    Command(
        name="compact",
        help="rewrite an index without removed contents",
        description="Merge segments and drop the codes of removed contents.",
        configure=_configure_compact,
        run=_run_compact,
    )
)


register(
    Command(
        name="demo",
        help="build a demo catalogue, index it and match three viewer samples",
        description=(
            "Write synthetic programmes and adverts in several formats, index them with the "
            "batch indexer, then match a noisy living-room recording, an ad break that "
            "straddles two adverts and a sample that is in no catalogue. Rerunning reuses what "
            "is already there."
        ),
        configure=_configure_demo,
        run=_run_demo,
    )
)


# -- entry points -----------------------------------------------------------------------------

PLUGINS = ("api.cli", "api.payouts_cli", "acr.monitor_cli")
"""Modules that register more subcommands (``serve``, ``keys``, ``payouts``, ``monitor``)."""


def _load_plugins() -> None:
    for name in PLUGINS:
        importlib.import_module(name)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The ``acr`` argument parser, with one subparser per registered command.

    Parameters
    ----------
    prog : str
        Program name shown in usage messages.

    Returns
    -------
    argparse.ArgumentParser
        Parsing sets ``command`` to the subcommand's name.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Automatic content recognition: index audio, identify samples.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _load_plugins()
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.description
        )
        command.configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``acr`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        Exit status. Usage errors exit with status 2 through ``SystemExit``.
    """
    args = build_parser().parse_args(argv)
    return _dispatch(COMMANDS[args.command], args)


def run_command(name: str, argv: Sequence[str], *, prog: str) -> int:
    """Run one subcommand with its own parser (e.g. ``python -m indexer`` is ``acr index``).

    Parameters
    ----------
    name : str
        A registered subcommand.
    argv : sequence of str
        Its arguments.
    prog : str
        Program name shown in usage messages.

    Returns
    -------
    int
        Exit status, as for :func:`main`.
    """
    _load_plugins()
    command = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=prog, description=command.description)
    command.configure(parser)
    return _dispatch(command, parser.parse_args(argv))


def _dispatch(command: Command, args: argparse.Namespace) -> int:
    try:
        return command.run(args)
    except AcrError as exc:
        return _error(exc.message)
    except sqlite3.Error as exc:
        where = getattr(args, "index_dir", None)
        return _error(f"index catalogue{f' of {where}' if where else ''}: {exc}")
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            return _broken_pipe()
        return _error(str(exc))
    except KeyboardInterrupt:
        note = f"; {command.interrupted_note}" if command.interrupted_note else ""
        print(f"{PROG}: interrupted{note}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILED


def _broken_pipe() -> int:
    """The reader of stdout went away (``acr list | head``): stop quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_FAILED


if __name__ == "__main__":
    # Run as `python -m acr.cli`, this file is `__main__`, not `acr.cli` where plugins register.
    from acr.cli import main as registered_main

    raise SystemExit(registered_main())
