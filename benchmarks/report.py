"""Aggregate per-query outcomes into the results tables and render them as Markdown.

Everything here is pure: :func:`summarize` turns the raw outcomes and the
measured costs into a JSON-ready summary, :func:`render_markdown` turns that
summary into ``audio.md``. The sections of its tables the video report prints
too (:func:`accuracy_sections`, :func:`false_positive_section`,
:func:`closing_sections`) are rendered here for both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import Target, fmt, pct, quantile

OFFSET_TOLERANCE_S = 0.5
"""A top-1 answer is correct when the content is right and the offset within this."""

_COPIES = (
    "Counted as correct: {repeat} answers that point at a verbatim repeat of the clip "
    "elsewhere in its track (looping game music) and {duplicate} that name another reference "
    "track holding the same passage verbatim."
)
"""What the top-1 section says when answers pointing at a copy of the clip counted as
correct (see :func:`accuracy_sections`)."""

CONFIDENCE_BINS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
"""Confidence thresholds of the calibration sweep (the matcher's default is 0.5)."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one query.

    Attributes
    ----------
    query_id : str
        Identifier from the query set.
    kind : str
        ``"positive"`` or ``"negative"``.
    track : str
        Name of the source track.
    length_s : int
        Query length.
    degradation : str
        Degradation applied.
    true_offset_s : float
        Start of the clip in its source track.
    latency_ms : float
        Wall time of the ``match_samples`` call.
    matched_track : str or None
        Track name of the top-1 match at the default threshold (None: no match).
    offset_s : float or None
        Offset reported by the top-1 match.
    confidence : float or None
        Confidence of the top-1 match.
    score : int or None
        Score of the top-1 match.
    speed : float or None
        Speed estimated by the top-1 match.
    content_ok : bool
        Top-1 match is the source track, or another reference holding the clip
        verbatim (positives only).
    correct : bool
        ``content_ok`` and offset within :data:`OFFSET_TOLERANCE_S` of the true
        start or of a verbatim copy of the clip.
    equivalent_offset_s : float or None
        Start of the verbatim copy the answer pointed at, when it was not the
        true start.
    equivalence : str or None
        ``"repeat"`` (copy in the same track) or ``"duplicate"`` (copy in
        another reference track).
    candidate_track : str or None
        Best candidate with no confidence threshold (for calibration).
    candidate_confidence : float or None
        Its confidence.
    candidate_correct : bool
        Whether that candidate is right in content and offset.
    candidate_content_ok : bool
        Whether that candidate is the right track.
    error : str or None
        Error code if the matcher raised.
    """

    query_id: str
    kind: str
    track: str
    length_s: int
    degradation: str
    true_offset_s: float
    latency_ms: float
    matched_track: str | None
    offset_s: float | None
    confidence: float | None
    score: int | None
    speed: float | None
    pitch: float | None
    content_ok: bool
    correct: bool
    equivalent_offset_s: float | None
    equivalence: str | None
    candidate_track: str | None
    candidate_confidence: float | None
    candidate_correct: bool
    candidate_content_ok: bool
    error: str | None

    @property
    def offset_error_ms(self) -> float | None:
        """Absolute offset error of the top-1 match, in ms, when the content is right."""
        if not self.content_ok or self.offset_s is None:
            return None
        truth = self.true_offset_s if self.equivalent_offset_s is None else self.equivalent_offset_s
        return abs(self.offset_s - truth) * 1000.0


TARGETS: tuple[Target, ...] = (
    Target("5 s clean, top-1", "acc:clean:5", 99.0, True, "%"),
    Target("5 s MP3 32 kbit/s, top-1", "acc:mp3_32k:5", 99.0, True, "%"),
    Target("5 s white noise 10 dB, top-1", "acc:white10:5", 97.0, True, "%"),
    Target("5 s pink noise 10 dB, top-1", "acc:pink10:5", 97.0, True, "%"),
    Target("5 s white noise 0 dB, top-1", "acc:white0:5", 90.0, True, "%"),
    Target("5 s pink noise 0 dB, top-1", "acc:pink0:5", 90.0, True, "%"),
    Target("5 s speed +2%, top-1", "acc:speed+2:5", 95.0, True, "%"),
    Target("5 s speed -2%, top-1", "acc:speed-2:5", 95.0, True, "%"),
    Target("5 s telephone, top-1", "acc:telephone:5", 95.0, True, "%"),
    Target("5 s phone microphone, top-1", "acc:phone_mic:5", 95.0, True, "%"),
    Target("5 s speed +5%, top-1", "acc:speed+5:5", 95.0, True, "%"),
    Target("5 s speed -5%, top-1", "acc:speed-5:5", 95.0, True, "%"),
    Target("5 s tempo +5%, top-1", "acc:tempo+5:5", 95.0, True, "%"),
    Target("5 s tempo -5%, top-1", "acc:tempo-5:5", 95.0, True, "%"),
    Target("5 s pitch +1 semitone, top-1", "acc:pitch+1:5", 95.0, True, "%"),
    Target("5 s pitch -1 semitone, top-1", "acc:pitch-1:5", 95.0, True, "%"),
    Target("5 s speed +10%, top-1", "acc:speed+10:5", 90.0, True, "%"),
    Target("5 s speed -10%, top-1", "acc:speed-10:5", 90.0, True, "%"),
    Target("5 s tempo +10%, top-1", "acc:tempo+10:5", 90.0, True, "%"),
    Target("5 s tempo -10%, top-1", "acc:tempo-10:5", 90.0, True, "%"),
    Target("1 s clean, top-1", "acc:clean:1", 95.0, True, "%"),
    Target("2 s white noise 5 dB, top-1", "acc:white5:2", 90.0, True, "%"),
    Target("2 s pink noise 5 dB, top-1", "acc:pink5:2", 90.0, True, "%"),
    Target("false positives on negatives", "fp_rate", 0.5, False, "%"),
    Target("p50 latency, 5 s decoded sample", "latency_p50_5s", 20.0, False, "ms"),
    Target("extraction speed, decoded PCM", "extract_xrt_per_core", 200.0, True, "x RT/core"),
    Target("index size", "index_mb_per_hour", 2.0, False, "MB/h"),
)
"""The issue's targets, in report order."""


def _cells(
    outcomes: Iterable[Outcome], predicate: str
) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Rate of ``predicate`` per degradation and length: ``{deg: {length: {n, pct}}}``."""
    counts: dict[tuple[str, int], list[int]] = {}
    for o in outcomes:
        cell = counts.setdefault((o.degradation, o.length_s), [0, 0])
        cell[0] += int(bool(getattr(o, predicate)))
        cell[1] += 1
    table: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for (deg, length), (hits, total) in counts.items():
        table.setdefault(deg, {})[str(length)] = {"n": total, "pct": pct(hits, total)}
    return table


def _wrong(o: Outcome) -> bool:
    return o.matched_track is not None and not o.content_ok


def summarize(
    positives: Sequence[Outcome],
    negatives: Sequence[Outcome],
    timing_preserved: Mapping[str, bool],
    costs: Mapping[str, Any],
    *,
    factors: Mapping[str, tuple[float, float]] | None = None,
    calibrated: bool = True,
    default_threshold: float = 0.5,
) -> dict[str, Any]:
    """Compute every table of the report.

    Parameters
    ----------
    positives : sequence of Outcome
        Outcomes of queries cut from indexed tracks.
    negatives : sequence of Outcome
        Outcomes of queries cut from never-indexed tracks.
    timing_preserved : Mapping of str to bool
        For each degradation, whether offsets are meaningful (no speed or
        tempo change).
    factors : Mapping of str to (float, float), optional
        For degradations that change speed, tempo or pitch: the true (tempo,
        pitch) factors, against which the reported ones are scored.
    costs : Mapping
        Measured costs: ``extract_xrt_per_core``, ``index_mb_per_hour``, ... are
        copied into the summary and used for the targets.
    calibrated : bool
        Whether queries without an answer were re-matched with no threshold
        (otherwise only confidences of returned matches are known).
    default_threshold : float
        The matcher's default ``min_confidence``.

    Returns
    -------
    dict
        JSON-ready summary (see the keys used by :func:`render_markdown`).
    """
    summary: dict[str, Any] = {"costs": dict(costs)}
    summary["top1"] = _cells(positives, "correct")
    summary["content_only"] = _cells(positives, "content_ok")
    wrong_cells: dict[tuple[str, int], list[int]] = {}
    for o in positives:
        cell = wrong_cells.setdefault((o.degradation, o.length_s), [0, 0])
        cell[0] += int(_wrong(o))
        cell[1] += 1
    wrong: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for (deg, length), (hits, total) in wrong_cells.items():
        wrong.setdefault(deg, {})[str(length)] = {"n": total, "pct": pct(hits, total)}
    summary["wrong_answer"] = wrong

    # Offset errors on correct matches.
    offsets: dict[str, Any] = {"by_degradation": {}}
    pooled: list[float] = []
    for deg in dict.fromkeys(o.degradation for o in positives):
        errs = [
            e
            for o in positives
            if o.degradation == deg and o.correct and (e := o.offset_error_ms) is not None
        ]
        offsets["by_degradation"][deg] = {
            "n": len(errs),
            "median_ms": quantile(errs, 0.5),
            "p95_ms": quantile(errs, 0.95),
            "timing_preserved": timing_preserved.get(deg, True),
        }
        if timing_preserved.get(deg, True):
            pooled.extend(errs)
    offsets["timing_preserved"] = {
        "n": len(pooled),
        "median_ms": quantile(pooled, 0.5),
        "p95_ms": quantile(pooled, 0.95),
    }
    summary["offset_error"] = offsets
    summary["factors"] = _factor_errors(positives, factors or {})

    # False positives.
    fp_by_length: dict[str, dict[str, float | int | None]] = {}
    fp_by_deg: dict[str, dict[str, float | int | None]] = {}
    for by_length, table in ((True, fp_by_length), (False, fp_by_deg)):
        groups: dict[str, list[Outcome]] = {}
        for o in negatives:
            groups.setdefault(str(o.length_s) if by_length else o.degradation, []).append(o)
        for key, group in groups.items():
            hits = sum(o.matched_track is not None for o in group)
            table[key] = {"n": len(group), "fp": hits, "pct": pct(hits, len(group))}
    n_fp = sum(o.matched_track is not None for o in negatives)
    summary["false_positives"] = {
        "n": len(negatives),
        "fp": n_fp,
        "pct": pct(n_fp, len(negatives)),
        "by_length": fp_by_length,
        "by_degradation": fp_by_deg,
        "matched": sorted(
            {
                f"{o.query_id} -> {o.matched_track} ({o.confidence:.3f})"
                for o in negatives
                if o.matched_track is not None and o.confidence is not None
            }
        ),
    }

    # Latency.
    latency: dict[str, dict[str, float | int | None]] = {}
    everything = [*positives, *negatives]
    for length in sorted({o.length_s for o in everything}):
        values = [o.latency_ms for o in everything if o.length_s == length]
        latency[str(length)] = {
            "n": len(values),
            "p50_ms": quantile(values, 0.5),
            "p95_ms": quantile(values, 0.95),
            "max_ms": max(values) if values else None,
        }
    clean5 = [o.latency_ms for o in positives if o.length_s == 5 and o.degradation == "clean"]
    latency["5_clean"] = {
        "n": len(clean5),
        "p50_ms": quantile(clean5, 0.5),
        "p95_ms": quantile(clean5, 0.95),
        "max_ms": max(clean5) if clean5 else None,
    }
    summary["latency"] = latency

    summary["calibration"] = calibration(
        positives, negatives, complete=calibrated, default_threshold=default_threshold
    )
    summary["confusions"] = [
        {"true": t, "returned": r, "count": c}
        for (t, r), c in Counter(
            (o.track, o.matched_track) for o in positives if _wrong(o)
        ).most_common(15)
    ]
    summary["errors"] = dict(Counter(o.error for o in everything if o.error))
    summary["equivalent_answers"] = dict(
        Counter(o.equivalence for o in positives if o.correct and o.equivalence)
    )
    summary["targets"] = evaluate_targets(summary)
    return summary


def _factor_errors(
    positives: Sequence[Outcome], factors: Mapping[str, tuple[float, float]]
) -> dict[str, dict[str, float | int | None]]:
    """Error of the reported tempo and pitch factors on correct matches, in %."""
    table: dict[str, dict[str, float | int | None]] = {}
    for deg, (true_tempo, true_pitch) in factors.items():
        found = [
            (o.speed, o.pitch)
            for o in positives
            if o.degradation == deg and o.correct and o.speed is not None and o.pitch is not None
        ]
        tempo_err = [100.0 * abs(t / true_tempo - 1.0) for t, _ in found]
        pitch_err = [100.0 * abs(p / true_pitch - 1.0) for _, p in found]
        both = sum(t <= 1.0 and p <= 1.0 for t, p in zip(tempo_err, pitch_err, strict=True))
        table[deg] = {
            "n": len(found),
            "tempo": true_tempo,
            "pitch": true_pitch,
            "tempo_err_median_pct": quantile(tempo_err, 0.5),
            "tempo_err_p95_pct": quantile(tempo_err, 0.95),
            "pitch_err_median_pct": quantile(pitch_err, 0.5),
            "pitch_err_p95_pct": quantile(pitch_err, 0.95),
            "within_1pct": pct(both, len(found)),
        }
    return table


def calibration(
    positives: Sequence[Outcome],
    negatives: Sequence[Outcome],
    *,
    complete: bool = True,
    default_threshold: float = 0.5,
) -> dict[str, Any]:
    """Confidence distributions and a threshold sweep.

    Uses the best candidate with no threshold, so sub-threshold confidences
    are visible too.

    Parameters
    ----------
    positives, negatives : sequence of Outcome
        Judged queries.
    complete : bool
        Whether sub-threshold candidates were collected; if not, sweep rows
        below ``default_threshold`` are left out.
    default_threshold : float
        The matcher's default ``min_confidence``.

    Returns
    -------
    dict
        ``histogram``: counts per confidence bin of the best candidate, split
        into ``correct``, ``wrong_offset`` (right track, offset off),
        ``wrong_track`` (positives) and ``negative``; ``sweep``: top-1 accuracy
        per length and false-positive rate if the threshold were each of
        :data:`THRESHOLDS`; and the raw confidence lists of each group.
    """
    groups: dict[str, list[float]] = {
        "correct": [],
        "wrong_offset": [],
        "wrong_track": [],
        "negative": [],
    }
    for o in positives:
        if o.candidate_confidence is None:
            continue
        if o.candidate_correct:
            groups["correct"].append(o.candidate_confidence)
        elif o.candidate_content_ok:
            groups["wrong_offset"].append(o.candidate_confidence)
        else:
            groups["wrong_track"].append(o.candidate_confidence)
    groups["negative"] = [
        o.candidate_confidence for o in negatives if o.candidate_confidence is not None
    ]
    edges = np.asarray(CONFIDENCE_BINS)

    def histogram(values: Sequence[float]) -> list[int]:
        counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=edges)
        return [int(c) for c in counts]

    lengths = sorted({o.length_s for o in positives})
    sweep = []
    for threshold in THRESHOLDS:
        if not complete and threshold < default_threshold:
            continue
        row: dict[str, Any] = {"threshold": threshold, "top1_pct": {}}
        for length in lengths:
            group = [o for o in positives if o.length_s == length]
            hits = sum(
                o.candidate_correct
                and o.candidate_confidence is not None
                and o.candidate_confidence >= threshold
                for o in group
            )
            row["top1_pct"][str(length)] = pct(hits, len(group))
        fps = sum(c >= threshold for c in groups["negative"])
        row["fp_pct"] = pct(fps, len(negatives))
        sweep.append(row)
    return {
        "complete": complete,
        "default_threshold": default_threshold,
        "bins": list(CONFIDENCE_BINS),
        "histogram": {name: histogram(values) for name, values in groups.items()},
        "sweep": sweep,
        "raw": {name: [round(v, 5) for v in values] for name, values in groups.items()},
    }


def _measured(summary: Mapping[str, Any], key: str) -> float | None:
    if key.startswith("acc:"):
        _, deg, length = key.split(":")
        cell = summary["top1"].get(deg, {}).get(length)
        return None if cell is None else cell["pct"]
    if key == "fp_rate":
        value = summary["false_positives"]["pct"]
        return None if value is None else float(value)
    if key == "latency_p50_5s":
        cell = summary["latency"].get("5")
        return None if cell is None else cell["p50_ms"]
    value = summary["costs"].get(key)
    return None if value is None else float(value)


def evaluate_targets(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Compare each of :data:`TARGETS` with its measurement (see
    :func:`benchmarks.common.evaluate_targets`)."""
    return common.evaluate_targets(TARGETS, partial(_measured, summary))


def _grid(
    table: Mapping[str, Mapping[str, Mapping[str, Any]]],
    degradations: Sequence[str],
    lengths: Sequence[int],
) -> list[str]:
    header = "| degradation | " + " | ".join(f"{n} s" for n in lengths) + " |"
    lines = [header, "|---|" + "---:|" * len(lengths)]
    for deg in degradations:
        cells = []
        for length in lengths:
            cell = table.get(deg, {}).get(str(length))
            cells.append("—" if cell is None else fmt(cell["pct"]))
        lines.append(f"| {deg} | " + " | ".join(cells) + " |")
    return lines


def _cell_counts(
    table: Mapping[str, Mapping[str, Mapping[str, Any]]], lengths: Sequence[int]
) -> str:
    parts = []
    for length in lengths:
        ns = {cell["n"] for deg in table.values() if (cell := deg.get(str(length)))}
        parts.append(f"{length} s: {'/'.join(str(n) for n in sorted(ns))}")
    return ", ".join(parts)


# The sections below render the tables of :func:`summarize`; the audio and the
# video report both print them, naming what is indexed a "track" or an "item".


def accuracy_sections(
    summary: Mapping[str, Any],
    degradations: Sequence[str],
    lengths: Sequence[int],
    *,
    equivalent: str,
    wrong: str,
) -> list[str]:
    """Top-1, content-only and wrong-answer rates by degradation and length.

    Parameters
    ----------
    summary : Mapping
        Output of :func:`summarize`.
    degradations : sequence of str
        Rows, in table order.
    lengths : sequence of int
        Columns: query lengths in seconds.
    equivalent : str
        Paragraph under the top-1 heading when answers pointing at a copy of
        the clip counted as correct: a format string of their counts,
        ``{repeat}`` (in the same track or item) and ``{duplicate}`` (in another).
    wrong : str
        What a wrong answer returned, for the last heading.

    Returns
    -------
    list of str
        Markdown lines.
    """
    lines = [
        f"## Top-1 accuracy, % (right content and offset within {OFFSET_TOLERANCE_S} s)",
        "",
    ]
    copies = summary.get("equivalent_answers") or {}
    if copies:
        counts = {"repeat": copies.get("repeat", 0), "duplicate": copies.get("duplicate", 0)}
        lines += [equivalent.format(**counts), ""]
    lines += [
        *_grid(summary["top1"], degradations, lengths),
        "",
        "## Content-only accuracy, % (right content, any offset)",
        "",
        *_grid(summary["content_only"], degradations, lengths),
        "",
        f"## Wrong answers on indexed content, % ({wrong})",
        "",
        *_grid(summary["wrong_answer"], degradations, lengths),
        "",
    ]
    return lines


def false_positive_section(
    material: str,
    fp: Mapping[str, Any],
    degradations: Sequence[str],
    lengths: Sequence[int],
    by_kind: Sequence[str] = (),
) -> list[str]:
    """False positives on the negatives, overall, by length and by degradation.

    Parameters
    ----------
    material : str
        What the negatives are, for the heading.
    fp : Mapping
        ``false_positives`` of :func:`summarize`.
    degradations : sequence of str
        Rows of the degradation table.
    lengths : sequence of int
        Rows of the length table.
    by_kind : sequence of str
        Markdown lines of a table of the benchmark's own, printed first.

    Returns
    -------
    list of str
        Markdown lines.
    """
    lines = [
        f"## False positives on never-indexed {material}",
        "",
        f"Any match returned (default threshold): {fp['fp']} of {fp['n']} = {fmt(fp['pct'], 2)}%.",
        "",
        *by_kind,
        "| length | n | false positives | % |",
        "|---|---:|---:|---:|",
    ]
    for length in lengths:
        row = fp["by_length"].get(str(length))
        if row:
            lines.append(f"| {length} s | {row['n']} | {row['fp']} | {fmt(row['pct'], 2)} |")
    lines += ["", "| degradation | n | false positives | % |", "|---|---:|---:|---:|"]
    for deg in degradations:
        row = fp["by_degradation"].get(deg)
        if row:
            lines.append(f"| {deg} | {row['n']} | {row['fp']} | {fmt(row['pct'], 2)} |")
    if fp["matched"]:
        lines += ["", "Matched negatives: " + "; ".join(f"`{m}`" for m in fp["matched"][:20])]
    lines.append("")
    return lines


def closing_sections(
    summary: Mapping[str, Any], run: Mapping[str, Any], lengths: Sequence[int], thing: str
) -> list[str]:
    """Calibration, frequent confusions, matcher errors, the degradations and the method.

    Parameters
    ----------
    summary : Mapping
        Output of :func:`summarize`.
    run : Mapping
        Run description with ``degradations`` (name -> description) and ``method``.
    lengths : sequence of int
        Query lengths, one column each of the threshold sweep.
    thing : str
        What is indexed (``"track"``, ``"item"``).

    Returns
    -------
    list of str
        Markdown lines.
    """
    cal = summary["calibration"]
    lines = ["## Confidence calibration", ""]
    if cal["complete"]:
        lines.append("Best candidate of every query with no threshold (raw values in the JSON).")
    else:
        lines.append(
            "Quick run: only matches the default threshold returned (sub-threshold "
            "candidates are collected by the full run)."
        )
    lines += [
        "",
        f"| confidence | correct | right {thing}, offset off | wrong {thing} | negatives |",
        "|---|---:|---:|---:|---:|",
    ]
    bins = cal["bins"]
    hist = cal["histogram"]
    for i in range(len(bins) - 1):
        lines.append(
            f"| {bins[i]:.2f}-{bins[i + 1]:.2f} | {hist['correct'][i]} | "
            f"{hist['wrong_offset'][i]} | {hist['wrong_track'][i]} | {hist['negative'][i]} |"
        )
    lines += [
        "",
        "Top-1 accuracy (all degradations) and false positives if the threshold were "
        f"each value (default {cal['default_threshold']:g}):",
        "",
        "| threshold | " + " | ".join(f"top-1 {n} s %" for n in lengths) + " | false positives % |",
        "|---:|" + "---:|" * (len(lengths) + 1),
    ]
    for row in cal["sweep"]:
        cells = " | ".join(fmt(row["top1_pct"].get(str(n))) for n in lengths)
        lines.append(f"| {row['threshold']:.2f} | {cells} | {fmt(row['fp_pct'], 2)} |")
    lines.append("")
    if summary["confusions"]:
        lines += [
            f"## Most frequent wrong answers (true {thing} -> returned {thing})",
            "",
            "| true | returned | count |",
            "|---|---|---:|",
            *(f"| {c['true']} | {c['returned']} | {c['count']} |" for c in summary["confusions"]),
            "",
        ]
    if summary["errors"]:
        errors = ", ".join(f"{k}: {v}" for k, v in summary["errors"].items())
        lines += [f"Matcher errors: {errors}", ""]
    lines += ["## Degradations", ""]
    lines += [f"- `{name}`: {description}" for name, description in run["degradations"].items()]
    lines += ["", "## Method", ""]
    lines += [f"- {line}" for line in run["method"]]
    lines.append("")
    return lines


def render_markdown(summary: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    """Render ``audio.md``.

    Parameters
    ----------
    summary : Mapping
        Output of :func:`summarize`.
    run : Mapping
        Run description: ``mode``, ``date``, ``commit``, ``machine``, ``seed``,
        ``packages``, ``corpus``, ``degradations`` (name -> description),
        ``lengths``, ``timings``, ``command``.

    Returns
    -------
    str
        Markdown text.
    """
    lengths: list[int] = list(run["lengths"])
    degradations: list[str] = list(run["degradations"])
    costs = summary["costs"]
    corpus = run["corpus"]
    packages = ", ".join(f"`{p['package']}` {p['version']}" for p in run["packages"])
    out = common.report_header(
        "Audio benchmark",
        run,
        [
            f"- Seed: {run['seed']}; queries cut and degraded at {run['query_sample_rate']} Hz",
            f"- Debian packages: {packages}",
            f"- References (indexed): {corpus['references']} tracks, "
            f"{corpus['reference_hours']:.2f} h; negatives (never indexed): "
            f"{corpus['negatives']} tracks, {corpus['negative_hours']:.2f} h",
            f"- Queries: {corpus['positive_queries']} positive "
            f"({_cell_counts(summary['top1'], lengths)} per cell), "
            f"{corpus['negative_queries']} negative",
        ],
    )
    add = out.append
    out.extend(common.targets_section(summary["targets"]))
    wrong = "a different track returned"
    out.extend(accuracy_sections(summary, degradations, lengths, equivalent=_COPIES, wrong=wrong))

    add("## Offset error on correct matches (all lengths)")
    add("")
    pooled = summary["offset_error"]["timing_preserved"]
    add(
        f"Degradations that keep timing (no speed/tempo change): median "
        f"{fmt(pooled['median_ms'])} ms, p95 {fmt(pooled['p95_ms'])} ms over {pooled['n']} "
        "matches."
    )
    add("")
    add("| degradation | n | median ms | p95 ms | timing kept |")
    add("|---|---:|---:|---:|:---:|")
    for deg in degradations:
        row = summary["offset_error"]["by_degradation"].get(deg)
        if row is None:
            continue
        kept = "yes" if row["timing_preserved"] else "no"
        add(f"| {deg} | {row['n']} | {fmt(row['median_ms'])} | {fmt(row['p95_ms'])} | {kept} |")
    add("")

    if summary.get("factors"):
        add("## Reported tempo and pitch factors on correct matches (all lengths)")
        add("")
        add(
            "| degradation | true tempo | true pitch | n | tempo error median/p95 % "
            "| pitch error median/p95 % | both within 1 %, % |"
        )
        add("|---|---:|---:|---:|---:|---:|---:|")
        for deg, row in summary["factors"].items():
            add(
                f"| {deg} | {row['tempo']:.4f} | {row['pitch']:.4f} | {row['n']} | "
                f"{fmt(row['tempo_err_median_pct'], 2)} / {fmt(row['tempo_err_p95_pct'], 2)} | "
                f"{fmt(row['pitch_err_median_pct'], 2)} / {fmt(row['pitch_err_p95_pct'], 2)} | "
                f"{fmt(row['within_1pct'])} |"
            )
        add("")

    out.extend(false_positive_section("music", summary["false_positives"], degradations, lengths))

    add("## Cost")
    add("")
    add("Query latency: wall time of `Index.match_samples` on a decoded sample (16 kHz float32),")
    add("whole corpus indexed, one query at a time.")
    add("")
    add("| length | n | p50 ms | p95 ms | max ms |")
    add("|---|---:|---:|---:|---:|")
    for key, row in summary["latency"].items():
        label = "5 s (clean only)" if key == "5_clean" else f"{key} s"
        add(
            f"| {label} | {row['n']} | {fmt(row['p50_ms'])} | {fmt(row['p95_ms'])} | "
            f"{fmt(row['max_ms'])} |"
        )
    add("")
    add("| measure | value |")
    add("|---|---:|")
    add(
        f"| extraction from decoded PCM ({costs['extract_audio_hours']:.2f} h) | "
        f"{fmt(costs['extract_xrt_per_core'], 0)}x real time per core (CPU time), "
        f"{fmt(costs['extract_xrt_wall'], 0)}x wall |"
    )
    add(
        f"| extraction including decode | {fmt(costs['decode_extract_xrt_per_core'], 0)}x "
        f"real time per core, {fmt(costs['decode_extract_xrt_wall'], 0)}x wall |"
    )
    add(
        f"| index build ({costs['index_method']}) | {fmt(costs['index_build_s'])} s wall "
        f"({fmt(costs['index_build_xrt'], 0)}x real time) |"
    )
    add(
        f"| index size | {costs['index_bytes']:,} bytes = "
        f"{fmt(costs['index_mb_per_hour'], 3)} MB per hour of audio |"
    )
    add(
        f"| codes indexed | {costs['index_codes']:,} "
        f"({fmt(costs['codes_per_second'])} per second of audio) |"
    )
    add(f"| peak memory (ru_maxrss) | {fmt(costs['peak_rss_mb'], 0)} MB |")
    add(f"| query generation (cut + degrade) | {fmt(run['timings']['query_generation_s'])} s |")
    add("")

    out.extend(closing_sections(summary, run, lengths, "track"))
    return "\n".join(out)
