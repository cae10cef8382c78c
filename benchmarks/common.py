"""What the benchmark scripts share: the machine they ran on, their command line,
their result files and the pieces of Markdown their reports have in common.

Every script writes its report into :data:`RESULTS_DIR`; keeping the header,
the targets table and the file handling here keeps the reports alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import platform
import resource
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.corpus import DEFAULT_CACHE_DIR

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent


# -- environment ------------------------------------------------------------------------------


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """The checked-out commit, read from ``.git`` directly (no ``git`` process)."""
    git_dir = root / ".git"
    try:
        if git_dir.is_file():  # a worktree: "gitdir: <path>"
            git_dir = (root / git_dir.read_text().split(":", 1)[1].strip()).resolve()
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        for base in (git_dir, _common_dir(git_dir)):
            loose = base / ref
            if loose.is_file():
                return loose.read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == ref:
                        return parts[0]
    except OSError:
        return None
    return None


def _common_dir(git_dir: Path) -> Path:
    common = git_dir / "commondir"
    return (git_dir / common.read_text().strip()).resolve() if common.is_file() else git_dir


def cpu_model() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, memory, OS and library versions."""
    memory_gb = float("nan")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = int(line.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for name in ("numpy", "scipy", "av", "soxr", "faiss"):
        try:
            versions[name] = str(getattr(importlib.import_module(name), "__version__", "?"))
        except ImportError:
            versions[name] = "missing"
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": memory_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": list(os.getloadavg()),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def dir_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- command line and result files ------------------------------------------------------------


def run_parser(
    module: str, description: str | None, *, quick: str, cache: str
) -> argparse.ArgumentParser:
    """The options every benchmark run takes: ``--quick``, ``--out`` and ``--cache``.

    Parameters
    ----------
    module : str
        The module run with ``python -m``.
    description : str or None
        The script's description (its docstring).
    quick : str
        Help of ``--quick``: what the smoke run leaves out.
    cache : str
        Help of ``--cache``: what the script keeps there.

    Returns
    -------
    argparse.ArgumentParser
        A parser the script may add its own options to.
    """
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR, help=cache)
    return parser


def progress_log(started: float) -> Callable[[str], None]:
    """A log that prints each message to stderr after the seconds since ``started``
    (a ``time.perf_counter`` reading)."""

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    return log


def utc_now() -> str:
    """The current time as reports print it (``2026-11-27 09:00 UTC``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def describe_run(module: str, mode: str, quick: bool) -> dict[str, Any]:
    """The first fields of a run's description: ``mode``, ``command``, ``date``, ``commit``.

    Parameters
    ----------
    module : str
        The module run with ``python -m``.
    mode : str
        The plan's name (``"full"`` or ``"quick"``).
    quick : bool
        Whether ``--quick`` was given.
    """
    return {
        "mode": mode,
        "command": f"python -m {module}" + (" --quick" if quick else ""),
        "date": utc_now(),
        "commit": git_commit(),
    }


def strict_json(payload: Any) -> str:
    """``payload`` as indented JSON, refusing NaN and infinities (JSON has no literal for them)."""
    return json.dumps(payload, indent=1, allow_nan=False)


def write_results(
    out: Path,
    name: str,
    mode: str,
    markdown: str,
    payload: Any,
    encode: Callable[[Any], str] = strict_json,
) -> Path:
    """Write a run's report and raw numbers, and print the report.

    Parameters
    ----------
    out : Path
        Results folder (created if needed).
    name : str
        Name of the benchmark; the files are ``<name>.md`` and ``<name>.json``,
        ``<name>-<mode>.*`` for any mode but ``"full"`` so that smoke runs
        never overwrite the published results.
    mode : str
        The plan's name.
    markdown : str
        The report.
    payload : Any
        The raw numbers, encoded by ``encode`` after the report is written.
    encode : callable
        Turns ``payload`` into the JSON text.

    Returns
    -------
    Path
        The files' common stem (no suffix).
    """
    stem = name if mode == "full" else f"{name}-{mode}"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(markdown)
    (out / f"{stem}.json").write_text(encode(payload))
    print(markdown)
    return out / stem


def publish(lines: Sequence[str], path: Path) -> None:
    """Write a Markdown report, creating its folder, and print it."""
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text, end="")


# -- query sets -------------------------------------------------------------------------------


def stream_of(degradation: str) -> int:
    """Generator stream of a degradation, from its name: stable across runs and orders,
    so adding a degradation changes no other query."""
    return zlib.crc32(degradation.encode("utf-8"))


# -- numbers ----------------------------------------------------------------------------------


def pct(hits: int, total: int) -> float | None:
    """``hits`` as a percentage of ``total`` (None when there is nothing to count)."""
    return 100.0 * hits / total if total else None


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of ``values`` (None when there are none)."""
    if not values:
        return None
    return float(np.quantile(np.asarray(values, dtype=np.float64), q))


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for a table: ``digits`` decimals, a dash when unmeasured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


# -- Markdown ---------------------------------------------------------------------------------


def title_lines(title: str, run: Mapping[str, Any]) -> list[str]:
    """A report's title and the line saying which command made it, and when."""
    return [
        f"# {title} ({run['mode']} run)",
        "",
        f"Produced by `{run['command']}` on {run['date']}.",
        "",
    ]


def _loads(values: Sequence[float] | None) -> str:
    return "—" if not values else "/".join(f"{v:.2f}" for v in values)


def report_header(
    title: str, run: Mapping[str, Any], items: Sequence[str], commit_note: str = ""
) -> list[str]:
    """The title and command of a report, then its list: commit, machine, the
    benchmark's own ``items`` and the wall time.

    Parameters
    ----------
    title : str
        The report's title.
    run : Mapping
        Run description: :func:`describe_run`'s fields, ``machine``
        (:func:`machine_info` plus ``load_average_at_end``) and ``timings``
        with ``total_s``.
    items : sequence of str
        The benchmark's own list items (material, corpus, queries).
    commit_note : str
        Said after the commit.

    Returns
    -------
    list of str
        Markdown lines.
    """
    machine = run["machine"]
    return [
        *title_lines(title, run),
        f"- Commit: `{run['commit'] or 'unknown'}`{commit_note}",
        f"- Machine: {machine['cpu_model']}, {machine['cores']} cores "
        f"({machine['usable_cores']} usable), {machine['memory_gb']:.1f} GB RAM, "
        f"{machine['platform']}, Python {machine['python']}; load average (1/5/15 min) "
        f"{_loads(machine.get('load_average_at_start'))} at start, "
        f"{_loads(machine.get('load_average_at_end'))} at end",
        *items,
        f"- Total wall time: {run['timings']['total_s']:.0f} s",
        "",
    ]


@dataclass(frozen=True)
class Target:
    """One goal a benchmark is held to.

    Attributes
    ----------
    label : str
        What is measured.
    key : str
        Where the benchmark finds the measured value (its own lookup reads it).
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


def evaluate_targets(
    targets: Sequence[Target], measured: Callable[[str], float | None]
) -> list[dict[str, Any]]:
    """Compare each target with its measurement.

    Parameters
    ----------
    targets : sequence of Target
        The goals, in report order.
    measured : callable
        The measured value of a target's ``key`` (None when not measured).

    Returns
    -------
    list of dict
        ``label``, ``key``, ``target``, ``comparison``, ``unit``, ``measured``,
        ``passed`` (None when unmeasured) and ``miss`` (how far the
        measurement falls short, 0 when passed).
    """
    rows = []
    for t in targets:
        value = measured(t.key)
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


def targets_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ``## Targets`` section: one row per output of :func:`evaluate_targets`."""
    lines = [
        "## Targets",
        "",
        "| target | goal | measured | pass | miss |",
        "|---|---:|---:|:---:|---:|",
    ]
    for t in rows:
        verdict = {True: "pass", False: "**FAIL**", None: "—"}[t["passed"]]
        miss = "" if not t["miss"] else f"{fmt(t['miss'], 2)} {t['unit']}"
        lines.append(
            f"| {t['label']} | {t['comparison']} {t['target']:g} {t['unit']} | "
            f"{fmt(t['measured'], 2)} {t['unit']} | {verdict} | {miss} |"
        )
    lines.append("")
    return lines
