"""Aggregate video query outcomes into the results tables and render ``video.md``.

The tables common to audio and video (accuracy by degradation and length,
content-only accuracy, wrong answers, offset error, false positives,
calibration) come from :func:`benchmarks.report.summarize` over the same
:class:`benchmarks.report.Outcome` records; this module adds the video
targets, the near-duplicate trap, the latency percentiles and the Markdown.
Everything here is pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.report import OFFSET_TOLERANCE_S, Outcome

SAMPLE_INTERVAL_S = 0.25
"""One sampled-frame interval at the core's default 4 frames/s."""


@dataclass(frozen=True)
class Target:
    """One goal from issue #6.

    Attributes
    ----------
    label : str
        What is measured.
    key : str
        ``acc:<degradation>:<length>``, ``latency_p50_5s`` or a key of the costs.
    target : float
        Threshold.
    higher_is_better : bool
        Whether the measurement must be at least (True) or at most (False) the target.
    unit : str
        Unit for display.
    """

    label: str
    key: str
    target: float
    higher_is_better: bool
    unit: str


def targets_for(degradations: Mapping[str, float]) -> list[Target]:
    """The issue's targets: each degradation's 5 s accuracy, then the speed goals.

    Parameters
    ----------
    degradations : Mapping of str to float
        Degradation name to the top-1 accuracy (%) asked of it.
    """
    rows = [
        Target(f"5 s {name}, top-1", f"acc:{name}:5", pct, True, "%")
        for name, pct in degradations.items()
    ]
    rows.append(Target("p50 match, 5 s sample's hashes", "latency_p50_5s", 20.0, False, "ms"))
    for views, key in (
        ("query", "extract_xrt_per_core"),
        ("reference", "extract_reference_xrt_per_core"),
    ):
        label = f"extraction at 1080p, 4 frames/s, decode included ({views} views)"
        rows.append(Target(label, key, 10.0, True, "x RT/core"))
    return rows


def _measured(summary: Mapping[str, Any], key: str) -> float | None:
    if key.startswith("acc:"):
        _, deg, length = key.split(":")
        cell = summary["top1"].get(deg, {}).get(length)
        return None if cell is None else cell["pct"]
    if key == "latency_p50_5s":
        cell = summary["match_latency"].get("5")
        return None if cell is None else cell["p50_ms"]
    value = summary["costs"].get(key)
    return None if value is None else float(value)


def evaluate_targets(summary: Mapping[str, Any], targets: Sequence[Target]) -> list[dict[str, Any]]:
    """Compare each target with its measurement (``passed`` is None when unmeasured)."""
    rows = []
    for t in targets:
        value = _measured(summary, t.key)
        if value is None:
            passed, miss = None, None
        elif t.higher_is_better:
            passed, miss = value >= t.target, max(0.0, t.target - value)
        else:
            passed, miss = value <= t.target, max(0.0, value - t.target)
        rows.append(
            {
                "label": t.label,
                "key": t.key,
                "target": t.target,
                "comparison": ">=" if t.higher_is_better else "<=",
                "unit": t.unit,
                "measured": value,
                "passed": passed,
                "miss": miss,
            }
        )
    return rows


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.quantile(np.asarray(values, dtype=np.float64), q))


def percentiles(values_by_length: Mapping[int, Sequence[float]]) -> dict[str, dict[str, Any]]:
    """``n``, p50, p90, p95 and max of timings grouped by query length."""
    return {
        str(length): {
            "n": len(values),
            "p50_ms": _quantile(values, 0.5),
            "p90_ms": _quantile(values, 0.9),
            "p95_ms": _quantile(values, 0.95),
            "max_ms": max(values) if values else None,
        }
        for length, values in sorted(values_by_length.items())
    }


def match_latency(outcomes: Sequence[Outcome]) -> dict[str, dict[str, Any]]:
    """Percentiles of the ``match_hashes`` wall time by query length."""
    grouped: dict[int, list[float]] = {}
    for o in outcomes:
        grouped.setdefault(o.length_s, []).append(o.latency_ms)
    return percentiles(grouped)


def offset_within(outcomes: Sequence[Outcome], tolerance_s: float) -> dict[str, Any]:
    """Share of correct answers whose offset error is at most ``tolerance_s``."""
    errors = [e for o in outcomes if o.correct and (e := o.offset_error_ms) is not None]
    hits = sum(e <= tolerance_s * 1000.0 for e in errors)
    return {"n": len(errors), "within": hits, "pct": 100.0 * hits / len(errors) if errors else None}


def near_duplicates(outcomes: Sequence[Outcome], siblings: Mapping[str, str]) -> dict[str, Any]:
    """How queries cut from the near-duplicate adverts fared.

    Parameters
    ----------
    outcomes : sequence of Outcome
        Positive outcomes.
    siblings : Mapping of str to str
        Advert name to the other advert of its pair.

    Returns
    -------
    dict
        ``n`` queries from twin adverts, ``correct`` (right advert, or the
        sibling where it holds the same shots at that offset), ``sibling_same``
        (answers that named the sibling on shared shots, counted correct) and
        ``sibling_wrong`` (answers that named the sibling where it differs).
    """
    twins = [o for o in outcomes if o.track in siblings]
    same = sum(
        o.correct and o.matched_track == siblings[o.track] and o.equivalence == "duplicate"
        for o in twins
    )
    wrong = sum(not o.content_ok and o.matched_track == siblings[o.track] for o in twins)
    correct = sum(o.correct for o in twins)
    return {
        "n": len(twins),
        "correct": correct,
        "pct": 100.0 * correct / len(twins) if twins else None,
        "sibling_same": same,
        "sibling_wrong": wrong,
    }


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _loads(values: Sequence[float] | None) -> str:
    return "—" if not values else "/".join(f"{v:.2f}" for v in values)


def _grid(
    table: Mapping[str, Mapping[str, Mapping[str, Any]]],
    rows: Sequence[str],
    lengths: Sequence[int],
) -> list[str]:
    lines = [
        "| degradation | " + " | ".join(f"{n} s" for n in lengths) + " |",
        "|---|" + "---:|" * len(lengths),
    ]
    for row in rows:
        cells = []
        for length in lengths:
            cell = table.get(row, {}).get(str(length))
            cells.append("—" if cell is None else _fmt(cell["pct"]))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def _latency_rows(table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["| length | n | p50 ms | p90 ms | p95 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for length, row in table.items():
        lines.append(
            f"| {length} s | {row['n']} | {_fmt(row['p50_ms'])} | {_fmt(row['p90_ms'])} | "
            f"{_fmt(row['p95_ms'])} | {_fmt(row['max_ms'])} |"
        )
    return lines


def render_markdown(summary: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    """Render ``video.md``.

    Parameters
    ----------
    summary : Mapping
        Output of :func:`benchmarks.report.summarize` extended by the run
        with ``targets``, ``match_latency``, ``hash_latency``,
        ``offset_within_interval`` and ``near_duplicates``.
    run : Mapping
        Run description: ``mode``, ``date``, ``commit``, ``machine``, ``seed``,
        ``corpus``, ``queries``, ``degradations`` (name -> description),
        ``lengths``, ``timings``, ``command``, ``method``.

    Returns
    -------
    str
        Markdown text.
    """
    lengths: list[int] = list(run["lengths"])
    degradations: list[str] = list(run["degradations"])
    costs = summary["costs"]
    machine = run["machine"]
    corpus = run["corpus"]
    queries = run["queries"]
    out: list[str] = []
    add = out.append
    add(f"# Video benchmark ({run['mode']} run)")
    add("")
    add(f"Produced by `{run['command']}` on {run['date']}.")
    add("")
    add(f"- Commit: `{run['commit'] or 'unknown'}` (plus the working tree of that moment)")
    add(
        f"- Machine: {machine['cpu_model']}, {machine['cores']} cores "
        f"({machine['usable_cores']} usable), {machine['memory_gb']:.1f} GB RAM, "
        f"{machine['platform']}, Python {machine['python']}; load average (1/5/15 min) "
        f"{_loads(machine.get('load_average_at_start'))} at start, "
        f"{_loads(machine.get('load_average_at_end'))} at end"
    )
    package = corpus["package"]
    sources = ", ".join(f"`{k}` {v}" for k, v in corpus["sources"].items())
    add(f"- Seed: {run['seed']}; material: `{package['package']}` {package['version']}, {sources}")
    add(
        f"- References (indexed): {corpus['references']} items, "
        f"{corpus['reference_hours']:.2f} h ({corpus['programmes']} programmes, "
        f"{corpus['adverts']} adverts of which {2 * corpus['near_duplicate_pairs']} in "
        f"{corpus['near_duplicate_pairs']} near-duplicate pairs), rendered at "
        f"{run['reference_format']}"
    )
    add(
        f"- Negatives (never indexed): {corpus['negatives']} programmes from held-out "
        f"material, {corpus['negative_hours'] * 60:.1f} min, plus black and static clips"
    )
    add(
        f"- Queries: {queries['positive_files']} positive files ({queries['positive_clips']} "
        f"clips x {len(degradations)} degradations), {queries['negative_files']} negative "
        f"files; each file is judged at {', '.join(f'{n} s' for n in lengths)} "
        f"({queries['positive_clips']} per cell)"
    )
    add(f"- Total wall time: {run['timings']['total_s']:.0f} s")
    add("")

    add("## Targets")
    add("")
    add("| target | goal | measured | pass | miss |")
    add("|---|---:|---:|:---:|---:|")
    for t in summary["targets"]:
        verdict = {True: "pass", False: "**FAIL**", None: "—"}[t["passed"]]
        miss = "" if not t["miss"] else f"{_fmt(t['miss'], 2)} {t['unit']}"
        add(
            f"| {t['label']} | {t['comparison']} {t['target']:g} {t['unit']} | "
            f"{_fmt(t['measured'], 2)} {t['unit']} | {verdict} | {miss} |"
        )
    add("")

    add(f"## Top-1 accuracy, % (right content and offset within {OFFSET_TOLERANCE_S} s)")
    add("")
    equivalent = summary.get("equivalent_answers") or {}
    if equivalent:
        add(
            f"Counted as correct: {equivalent.get('duplicate', 0)} answers naming another "
            f"reference that shows the same frames there (near-duplicate adverts) and "
            f"{equivalent.get('repeat', 0)} naming the same item where it shows the same "
            "frames elsewhere."
        )
        add("")
    out.extend(_grid(summary["top1"], degradations, lengths))
    add("")
    add("## Content-only accuracy, % (right content, any offset)")
    add("")
    out.extend(_grid(summary["content_only"], degradations, lengths))
    add("")
    add("## Wrong answers on indexed content, % (another item returned)")
    add("")
    out.extend(_grid(summary["wrong_answer"], degradations, lengths))
    add("")

    twins = summary["near_duplicates"]
    add("## Near-duplicate adverts (false-positive trap)")
    add("")
    add(
        f"{twins['n']} answers (all lengths and degradations) to queries cut from the "
        f"{2 * corpus['near_duplicate_pairs']} adverts that share shots with a sibling: "
        f"{twins['correct']} correct ({_fmt(twins['pct'])}%); {twins['sibling_same']} named "
        "the sibling where it shows the same frames (counted correct); "
        f"{twins['sibling_wrong']} named the sibling where it differs (wrong)."
    )
    add("")

    add("## Offset error on correct matches (all lengths)")
    add("")
    pooled = summary["offset_error"]["timing_preserved"]
    within = summary["offset_within_interval"]
    add(
        f"Median {_fmt(pooled['median_ms'])} ms, p95 {_fmt(pooled['p95_ms'])} ms over "
        f"{pooled['n']} matches; {_fmt(within['pct'])}% within one sampled-frame interval "
        f"({SAMPLE_INTERVAL_S * 1000:.0f} ms)."
    )
    add("")
    add("| degradation | n | median ms | p95 ms |")
    add("|---|---:|---:|---:|")
    for deg in degradations:
        row = summary["offset_error"]["by_degradation"].get(deg)
        if row is not None:
            add(f"| {deg} | {row['n']} | {_fmt(row['median_ms'])} | {_fmt(row['p95_ms'])} |")
    add("")

    fp = summary["false_positives"]
    add("## False positives on never-indexed material")
    add("")
    add(f"Any match returned (default threshold): {fp['fp']} of {fp['n']} = {_fmt(fp['pct'], 2)}%.")
    add("")
    add("| negative kind | n | false positives | % |")
    add("|---|---:|---:|---:|")
    for kind, row in summary["false_positives_by_kind"].items():
        add(f"| {kind} | {row['n']} | {row['fp']} | {_fmt(row['pct'], 2)} |")
    add("")
    add("| length | n | false positives | % |")
    add("|---|---:|---:|---:|")
    for length in lengths:
        row = fp["by_length"].get(str(length))
        if row:
            add(f"| {length} s | {row['n']} | {row['fp']} | {_fmt(row['pct'], 2)} |")
    add("")
    add("| degradation | n | false positives | % |")
    add("|---|---:|---:|---:|")
    for deg in degradations:
        row = fp["by_degradation"].get(deg)
        if row:
            add(f"| {deg} | {row['n']} | {row['fp']} | {_fmt(row['pct'], 2)} |")
    if fp["matched"]:
        add("")
        add("Matched negatives: " + "; ".join(f"`{m}`" for m in fp["matched"][:20]))
    add("")

    add("## Cost")
    add("")
    add(
        "Match latency: wall time of `VideoIndex.match_hashes` on a query's hashes, whole "
        "catalogue indexed, one query at a time (positives and negatives):"
    )
    add("")
    out.extend(_latency_rows(summary["match_latency"]))
    add("")
    add("Query extraction: wall time of `hash_video` on a 5 s query file (decode included):")
    add("")
    out.extend(_latency_rows(summary["hash_latency"]))
    add("")
    add("| measure | value |")
    add("|---|---:|")
    add(
        f"| extraction at 1080p, 25 frames/s source, sampled at 4 frames/s, decode included "
        f"({_fmt(costs['extract_seconds'], 0)} s clip) | "
        f"query views: {_fmt(costs['extract_xrt_per_core'])}x real time per core (CPU "
        f"time), {_fmt(costs['extract_xrt_wall'])}x wall, {costs['extract_hashes']:,} hashes; "
        f"reference views: {_fmt(costs['extract_reference_xrt_per_core'])}x per core, "
        f"{_fmt(costs['extract_reference_xrt_wall'])}x wall, "
        f"{costs['extract_reference_hashes']:,} hashes |"
    )
    add(
        f"| index build ({costs['index_method']}; {run['reference_format']}) | "
        f"{_fmt(costs['index_build_s'])} s wall ({_fmt(costs['index_build_xrt'], 0)}x real time) |"
    )
    add(
        f"| index size | {costs['index_bytes']:,} bytes = "
        f"{_fmt(costs['index_mb_per_hour'], 3)} MB per hour of video |"
    )
    add(f"| index stats | {costs['index_stats']} |")
    add(f"| peak memory (ru_maxrss) | {_fmt(costs['peak_rss_mb'], 0)} MB |")
    add(
        f"| query generation (decode, degrade, encode) | "
        f"{_fmt(run['timings']['query_generation_s'])} s |"
    )
    add("")

    cal = summary["calibration"]
    add("## Confidence calibration")
    add("")
    if cal["complete"]:
        add("Best candidate of every query with no threshold (raw values in the JSON).")
    else:
        add(
            "Quick run: only matches the default threshold returned (sub-threshold "
            "candidates are collected by the full run)."
        )
    add("")
    add("| confidence | correct | right item, offset off | wrong item | negatives |")
    add("|---|---:|---:|---:|---:|")
    bins = cal["bins"]
    hist = cal["histogram"]
    for i in range(len(bins) - 1):
        add(
            f"| {bins[i]:.2f}-{bins[i + 1]:.2f} | {hist['correct'][i]} | "
            f"{hist['wrong_offset'][i]} | {hist['wrong_track'][i]} | {hist['negative'][i]} |"
        )
    add("")
    add(
        "Top-1 accuracy (all degradations) and false positives if the threshold were "
        f"each value (default {cal['default_threshold']:g}):"
    )
    add("")
    add("| threshold | " + " | ".join(f"top-1 {n} s %" for n in lengths) + " | false positives % |")
    add("|---:|" + "---:|" * (len(lengths) + 1))
    for row in cal["sweep"]:
        cells = " | ".join(_fmt(row["top1_pct"].get(str(n))) for n in lengths)
        add(f"| {row['threshold']:.2f} | {cells} | {_fmt(row['fp_pct'], 2)} |")
    add("")

    if summary["confusions"]:
        add("## Most frequent wrong answers (true item -> returned item)")
        add("")
        add("| true | returned | count |")
        add("|---|---|---:|")
        for c in summary["confusions"]:
            add(f"| {c['true']} | {c['returned']} | {c['count']} |")
        add("")
    if summary["errors"]:
        add("Matcher errors: " + ", ".join(f"{k}: {v}" for k, v in summary["errors"].items()))
        add("")

    add("## Degradations")
    add("")
    for name, description in run["degradations"].items():
        add(f"- `{name}`: {description}")
    add("")
    add("## Method")
    add("")
    for line in run["method"]:
        add(f"- {line}")
    add("")
    return "\n".join(out)


def false_positives_by_kind(negatives: Sequence[Outcome]) -> dict[str, dict[str, Any]]:
    """False positives per negative kind (``unseen``, ``black``, ``static``: the second
    field of the query id)."""
    groups: dict[str, list[Outcome]] = {}
    for o in negatives:
        groups.setdefault(o.query_id.split("-")[1], []).append(o)
    table = {}
    for kind, group in groups.items():
        hits = sum(o.matched_track is not None for o in group)
        table[kind] = {"n": len(group), "fp": hits, "pct": 100.0 * hits / len(group)}
    return table
