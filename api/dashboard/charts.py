"""Bar charts as geometry for inline SVG: accessible, offline, no script.

Pure functions from numbers to rectangles in a fixed coordinate box (the
template draws them with a ``viewBox``, so they scale to any width). Every chart
is also shown as a table by the page, for screen readers and exact figures.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTH = 640
HEIGHT = 220
GUTTER = 28
"""Room below the bars for the period labels."""
MAX_BAR = 48.0
"""Widest bar, so that a few periods do not look like a wall."""


@dataclass(frozen=True)
class Column:
    """One vertical bar: its label, value and rectangle."""

    label: str
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Row:
    """One horizontal bar: its label, value and width as a share (0–100 %) of the largest."""

    label: str
    value: int
    percent: float
    note: str


def columns(points: list[tuple[str, int]]) -> list[Column]:
    """Vertical bars for ``(label, value)`` over time, scaled to the largest value."""
    if not points:
        return []
    top = max(value for _, value in points) or 1
    slot = WIDTH / len(points)
    bar = min(max(2.0, slot * 0.7), MAX_BAR)
    area = HEIGHT - GUTTER
    result = []
    for i, (label, value) in enumerate(points):
        height = area * value / top
        result.append(Column(label, value, i * slot + (slot - bar) / 2, area - height, bar, height))
    return result


def rows(items: list[tuple[str, int, str]]) -> list[Row]:
    """Horizontal bars for ``(label, value, note)``, largest first."""
    top = max((value for _, value, _ in items), default=0) or 1
    ordered = sorted(items, key=lambda item: -item[1])
    return [Row(label, value, 100 * value / top, note) for label, value, note in ordered]
