"""What a match returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Match:
    """A sample (or a stretch of it) identified as a reference at an offset.

    Attributes
    ----------
    offset_s : float
        Where in the reference the explained stretch of the sample starts
        (``query_start_s``), in the reference's time base. For a whole-sample
        match the stretch is the whole sample, so this is where the sample starts.
    confidence : float
        Calibrated probability-like score in [0, 1]; below the matcher's
        ``min_confidence`` a candidate is not reported at all.
    score : int
        Number of the sample's fingerprint codes found on the alignment.
    speed : float
        Tempo of the sample relative to the reference (1.02 = 2 % fast):
        reference seconds per second of the sample.
    pitch : float
        Frequency factor of the sample relative to the reference (1.02 = 2 %
        higher; equal to ``speed`` for a sample played fast, 1.0 for one
        time-stretched with its pitch kept).
    query_start_s, query_end_s : float
        The stretch of the sample that this match explains: the whole sample
        for :attr:`MatchResult.matches`, the piece for :attr:`MatchResult.segments`.
    """

    content_id: str
    title: str
    source: str | None
    offset_s: float
    confidence: float
    score: int
    speed: float
    pitch: float
    query_start_s: float
    query_end_s: float
    duration_s: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "content_id": self.content_id,
            "title": self.title,
            "source": self.source,
            "offset_s": round(self.offset_s, 3),
            "confidence": round(self.confidence, 4),
            "score": self.score,
            "speed": round(self.speed, 4),
            "pitch": round(self.pitch, 4),
            "query_start_s": round(self.query_start_s, 3),
            "query_end_s": round(self.query_end_s, 3),
            "duration_s": round(self.duration_s, 3),
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class MatchResult:
    """The answer to one query: best match first, or no match."""

    matches: list[Match]
    """Alternatives by decreasing confidence (at most ``top_k``)."""
    segments: list[Match]
    """Disjoint stretches of the sample matched to references, in sample time order.
    Two entries when a sample straddles the end of one reference and the start of another."""
    query_duration_s: float
    query_codes: int
    elapsed_ms: float

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None
