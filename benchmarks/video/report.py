"""Aggregate video query outcomes into the results tables and render ``video.md``.

The tables common to audio and video (accuracy by degradation and length,
content-only accuracy, wrong answers, offset error, false positives,
calibration) come from :func:`benchmarks.report.summarize` over the same
:class:`benchmarks.report.Outcome` records, and are rendered by the section
functions there; this module adds the video targets, the near-duplicate trap,
the latency percentiles and the rest of the Markdown. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from benchmarks import common
from benchmarks.common import Target, fmt, pct, quantile
from benchmarks.report import (
    Outcome,
    accuracy_sections,
    closing_sections,
    false_positive_section,
)

SAMPLE_INTERVAL_S = 0.25
"""One sampled-frame interval at the core's default 4 frames/s."""

_COPIES = (
    "Counted as correct: {duplicate} answers naming another reference that shows the same "
    "frames there (near-duplicate adverts) and {repeat} naming the same item where it shows "
    "the same frames elsewhere."
)
"""What the top-1 section says when answers showing the same frames elsewhere counted as
correct (see :func:`benchmarks.report.accuracy_sections`)."""


def targets_for(degradations: Mapping[str, float]) -> list[Target]:
    """The issue's targets: each degradation's 5 s accuracy, then the speed goals.

    Parameters
    ----------
    degradations : Mapping of str to float
        Degradation name to the top-1 accuracy (%) asked of it.
    """
    rows = [
        Target(f"5 s {name}, top-1", f"acc:{name}:5", goal, True, "%")
        for name, goal in degradations.items()
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
    """Compare each target with its measurement (see :func:`benchmarks.common.evaluate_targets`)."""
    return common.evaluate_targets(targets, partial(_measured, summary))


def percentiles(values_by_length: Mapping[int, Sequence[float]]) -> dict[str, dict[str, Any]]:
    """``n``, p50, p90, p95 and max of timings grouped by query length."""
    return {
        str(length): {
            "n": len(values),
            "p50_ms": quantile(values, 0.5),
            "p90_ms": quantile(values, 0.9),
            "p95_ms": quantile(values, 0.95),
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
    return {"n": len(errors), "within": hits, "pct": pct(hits, len(errors))}


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
        "pct": pct(correct, len(twins)),
        "sibling_same": same,
        "sibling_wrong": wrong,
    }


def _latency_rows(table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["| length | n | p50 ms | p90 ms | p95 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for length, row in table.items():
        lines.append(
            f"| {length} s | {row['n']} | {fmt(row['p50_ms'])} | {fmt(row['p90_ms'])} | "
            f"{fmt(row['p95_ms'])} | {fmt(row['max_ms'])} |"
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
    corpus = run["corpus"]
    queries = run["queries"]
    package = corpus["package"]
    sources = ", ".join(f"`{k}` {v}" for k, v in corpus["sources"].items())
    out = common.report_header(
        "Video benchmark",
        run,
        [
            f"- Seed: {run['seed']}; material: `{package['package']}` {package['version']}, "
            f"{sources}",
            f"- References (indexed): {corpus['references']} items, "
            f"{corpus['reference_hours']:.2f} h ({corpus['programmes']} programmes, "
            f"{corpus['adverts']} adverts of which {2 * corpus['near_duplicate_pairs']} in "
            f"{corpus['near_duplicate_pairs']} near-duplicate pairs), rendered at "
            f"{run['reference_format']}",
            f"- Negatives (never indexed): {corpus['negatives']} programmes from held-out "
            f"material, {corpus['negative_hours'] * 60:.1f} min, plus black and static clips",
            f"- Queries: {queries['positive_files']} positive files "
            f"({queries['positive_clips']} clips x {len(degradations)} degradations), "
            f"{queries['negative_files']} negative files; each file is judged at "
            f"{', '.join(f'{n} s' for n in lengths)} ({queries['positive_clips']} per cell)",
        ],
        commit_note=" (plus the working tree of that moment)",
    )
    add = out.append
    out.extend(common.targets_section(summary["targets"]))
    wrong = "another item returned"
    out.extend(accuracy_sections(summary, degradations, lengths, equivalent=_COPIES, wrong=wrong))

    twins = summary["near_duplicates"]
    add("## Near-duplicate adverts (false-positive trap)")
    add("")
    add(
        f"{twins['n']} answers (all lengths and degradations) to queries cut from the "
        f"{2 * corpus['near_duplicate_pairs']} adverts that share shots with a sibling: "
        f"{twins['correct']} correct ({fmt(twins['pct'])}%); {twins['sibling_same']} named "
        "the sibling where it shows the same frames (counted correct); "
        f"{twins['sibling_wrong']} named the sibling where it differs (wrong)."
    )
    add("")

    add("## Offset error on correct matches (all lengths)")
    add("")
    pooled = summary["offset_error"]["timing_preserved"]
    within = summary["offset_within_interval"]
    add(
        f"Median {fmt(pooled['median_ms'])} ms, p95 {fmt(pooled['p95_ms'])} ms over "
        f"{pooled['n']} matches; {fmt(within['pct'])}% within one sampled-frame interval "
        f"({SAMPLE_INTERVAL_S * 1000:.0f} ms)."
    )
    add("")
    add("| degradation | n | median ms | p95 ms |")
    add("|---|---:|---:|---:|")
    for deg in degradations:
        row = summary["offset_error"]["by_degradation"].get(deg)
        if row is not None:
            add(f"| {deg} | {row['n']} | {fmt(row['median_ms'])} | {fmt(row['p95_ms'])} |")
    add("")

    by_kind = [
        "| negative kind | n | false positives | % |",
        "|---|---:|---:|---:|",
        *(
            f"| {kind} | {row['n']} | {row['fp']} | {fmt(row['pct'], 2)} |"
            for kind, row in summary["false_positives_by_kind"].items()
        ),
        "",
    ]
    out.extend(
        false_positive_section(
            "material", summary["false_positives"], degradations, lengths, by_kind
        )
    )

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
        f"({fmt(costs['extract_seconds'], 0)} s clip) | "
        f"query views: {fmt(costs['extract_xrt_per_core'])}x real time per core (CPU "
        f"time), {fmt(costs['extract_xrt_wall'])}x wall, {costs['extract_hashes']:,} hashes; "
        f"reference views: {fmt(costs['extract_reference_xrt_per_core'])}x per core, "
        f"{fmt(costs['extract_reference_xrt_wall'])}x wall, "
        f"{costs['extract_reference_hashes']:,} hashes |"
    )
    add(
        f"| index build ({costs['index_method']}; {run['reference_format']}) | "
        f"{fmt(costs['index_build_s'])} s wall ({fmt(costs['index_build_xrt'], 0)}x real time) |"
    )
    add(
        f"| index size | {costs['index_bytes']:,} bytes = "
        f"{fmt(costs['index_mb_per_hour'], 3)} MB per hour of video |"
    )
    add(f"| index stats | {costs['index_stats']} |")
    add(f"| peak memory (ru_maxrss) | {fmt(costs['peak_rss_mb'], 0)} MB |")
    add(
        f"| query generation (decode, degrade, encode) | "
        f"{fmt(run['timings']['query_generation_s'])} s |"
    )
    add("")

    out.extend(closing_sections(summary, run, lengths, "item"))
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
        table[kind] = {"n": len(group), "fp": hits, "pct": pct(hits, len(group))}
    return table
