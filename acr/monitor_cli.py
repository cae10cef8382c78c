"""``acr monitor``: match long recordings into timelines of segments.

::

    acr monitor --index-dir DIR [--json] [--window S] [--hop S] [--min-confidence C] FILE...

With ``--json``, one JSON object per segment, one per line::

    {"recording", "start_s", "end_s", "content_id", "title", "offset_s", "confidence",
     "speed", "pitch", "score", "windows"}

``offset_s`` is the position in the reference heard at ``start_s``; ``speed``
is the tempo relative to the reference and ``pitch`` the frequency factor (a
broadcast sped up by 4 % has both at 1.04; speed, pitch and tempo changes up
to about 10 % are searched).

and, for a recording that cannot be used, one line
``{"recording", "error": {"code", "message"}}``. Without it, a table per
recording, gaps included. Exit status 1 when a recording failed (one with no
segment is a success).
"""

from __future__ import annotations

import argparse
import json

from acr.cli import EXIT_FAILED, EXIT_OK, Command, probability_argument, register
from acr.index.store import Index
from acr.monitor import (
    DEFAULT_MAX_SECONDS,
    DEFAULT_MIN_CONFIDENCE,
    WINDOW_HOP_S,
    WINDOW_S,
    Segment,
    Timeline,
)
from indexer.job import describe_error


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0.5 <= value <= 60.0:
        raise argparse.ArgumentTypeError(f"must be between 0.5 and 60 seconds, got {value:g}")
    return value


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index-dir", required=True, metavar="DIR", help="directory of the index")
    parser.add_argument("--json", action="store_true", help="print one JSON object per segment")
    parser.add_argument(
        "--window",
        type=_seconds,
        default=WINDOW_S,
        metavar="S",
        help="length of the matching windows (default: %(default)g s)",
    )
    parser.add_argument(
        "--hop",
        type=_seconds,
        default=WINDOW_HOP_S,
        metavar="S",
        help="spacing of the matching windows (default: %(default)g s)",
    )
    parser.add_argument(
        "--min-confidence",
        type=probability_argument,
        default=DEFAULT_MIN_CONFIDENCE,
        metavar="C",
        help="smallest confidence of a reported segment (default: %(default)g)",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="recordings to monitor")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:06.3f}"


def _table(recording: str, timeline: Timeline) -> list[str]:
    lines = [
        f"{recording}: {len(timeline.segments)} segment"
        f"{'s' if len(timeline.segments) != 1 else ''} in {_clock(timeline.duration_s)} "
        f"({timeline.speed_x_realtime:.0f}x real time)"
    ]
    rows: list[tuple[float, float, Segment | None]] = [
        (s.start_s, s.end_s, s) for s in timeline.segments
    ]
    rows += [(a, b, None) for a, b in timeline.gaps]
    for start, end, segment in sorted(rows, key=lambda row: row[0]):
        span = f"  {_clock(start)} - {_clock(end)}"
        if segment is None:
            lines.append(f"{span}  (no match)")
        else:
            lines.append(
                f"{span}  {segment.title} [{segment.content_id}] from {segment.offset_s:.2f} s "
                f"(confidence {segment.confidence:.2f}, speed {segment.speed:.3f}, "
                f"pitch {segment.pitch:.3f})"
            )
    return lines


def _run(args: argparse.Namespace) -> int:
    failures = 0
    with Index.open(args.index_dir, readonly=True) as index:
        for recording in args.files:
            try:
                timeline = index.monitor(
                    recording,
                    window_s=args.window,
                    hop_s=args.hop,
                    min_confidence=args.min_confidence,
                    max_seconds=DEFAULT_MAX_SECONDS,
                )
            except Exception as exc:  # one bad recording never stops the others
                failures += 1
                code, message = describe_error(exc)
                if args.json:
                    error = {"code": code, "message": message}
                    print(json.dumps({"recording": recording, "error": error}), flush=True)
                else:
                    print(f"{recording}: error [{code}]: {message}", flush=True)
                continue
            if args.json:
                for segment in timeline.segments:
                    record = {"recording": recording, **segment.to_dict()}
                    print(json.dumps(record), flush=True)
            else:
                print("\n".join(_table(recording, timeline)), flush=True)
    return EXIT_FAILED if failures else EXIT_OK


register(
    Command(
        name="monitor",
        help="match long recordings into timelines: what played when",
        description=(
            "Match each recording (e.g. an hour of broadcast) into segments [start, end) -> "
            "content, offset, confidence; stretches with no match are gaps. With --json, one "
            "JSON object per segment per line. Exit status 1 when a recording could not be "
            "processed (a recording without segments is not an error)."
        ),
        configure=_configure,
        run=_run,
    )
)
