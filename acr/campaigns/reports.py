"""Campaign reports: engagements, unique viewers and spend by hour or day.

Choices:

* Periods are calendar hours or days in a time zone (UTC unless asked), so a
  report in ``Europe/Paris`` has days from local midnight to midnight (23 or 25
  hours long around DST changes). A period is named by its local start, with
  its UTC offset (``2026-03-29T00:00:00+01:00``).
* Bucketing happens in Python over the engagement rows in ``[from, to)``,
  fetched in one indexed range scan (``engagements_campaign_time``). That is the
  same code on SQLite and PostgreSQL and right in every time zone, where SQL
  date functions differ between the two and know no IANA zones on SQLite. It
  reads each row of the range once; a pre-aggregated table is the step up when
  reports span many millions of engagements.
* Rows may be split further by content or by trigger. Unique viewers are
  distinct viewer hashes within a row; the totals count distinct viewers over
  the whole range (not the sum of the rows, which would count a viewer once per
  period).
* Only periods with engagements appear (no zero rows); rows are sorted by
  period, then by the content or trigger id.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from acr.campaigns.lifecycle import zone
from acr.db.models import Engagement


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"


class GroupBy(StrEnum):
    NONE = "none"
    CONTENT = "content"
    TRIGGER = "trigger"


@dataclass(frozen=True)
class EngagementFact:
    """The part of an engagement that reports read."""

    created_at: datetime
    viewer_hash: str
    content_id: str
    trigger_id: str | None
    cost: int
    owner_share: int


@dataclass(frozen=True)
class ReportRow:
    period_start: datetime
    """Local start of the period (aware, in the report's time zone)."""
    key: str | None
    """The content or trigger id when grouped so, else None."""
    engagements: int
    unique_viewers: int
    spend: int
    owner_share: int


@dataclass(frozen=True)
class Totals:
    engagements: int = 0
    unique_viewers: int = 0
    spend: int = 0
    owner_share: int = 0


@dataclass
class _Bucket:
    engagements: int = 0
    viewers: set[str] = field(default_factory=set)
    spend: int = 0
    owner_share: int = 0

    def add(self, fact: EngagementFact) -> None:
        self.engagements += 1
        self.viewers.add(fact.viewer_hash)
        self.spend += fact.cost
        self.owner_share += fact.owner_share


def period_start(moment: datetime, granularity: Granularity, timezone: str) -> datetime:
    """The local start of the hour or day that holds ``moment``, in ``timezone``."""
    place = zone(timezone)
    local = moment.astimezone(place)
    if granularity is Granularity.HOUR:
        # Flooring the local time keeps the fold, so the two 01:00 hours of a DST
        # fall-back stay apart (they differ in UTC offset).
        return local.replace(minute=0, second=0, microsecond=0)
    return datetime.combine(local.date(), time(), tzinfo=place)


def aggregate(
    facts: Iterable[EngagementFact],
    *,
    granularity: Granularity,
    timezone: str = "UTC",
    group_by: GroupBy = GroupBy.NONE,
) -> tuple[list[ReportRow], Totals]:
    """Report rows (sorted by period then key) and totals of ``facts``."""
    buckets: dict[tuple[datetime, str | None], _Bucket] = {}
    total = _Bucket()
    for fact in facts:
        key: str | None = None
        if group_by is GroupBy.CONTENT:
            key = fact.content_id
        elif group_by is GroupBy.TRIGGER:
            key = fact.trigger_id or ""
        # Keyed by the UTC instant: local datetimes that differ only in fold (the
        # repeated hour of a DST fall-back) compare equal in Python.
        start = period_start(fact.created_at, granularity, timezone).astimezone(UTC)
        buckets.setdefault((start, key), _Bucket()).add(fact)
        total.add(fact)
    place = zone(timezone)
    rows = [
        ReportRow(
            start.astimezone(place), key, b.engagements, len(b.viewers), b.spend, b.owner_share
        )
        for (start, key), b in sorted(
            buckets.items(), key=lambda item: (item[0][0], item[0][1] or "")
        )
    ]
    return rows, Totals(total.engagements, len(total.viewers), total.spend, total.owner_share)


def campaign_facts(
    session: Session,
    campaign_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterable[EngagementFact]:
    """The campaign's engagements in ``[since, until)``, streamed."""
    query = select(
        Engagement.created_at,
        Engagement.viewer_hash,
        Engagement.content_id,
        Engagement.trigger_id,
        Engagement.cost,
        Engagement.owner_share,
    ).where(Engagement.campaign_id == campaign_id)
    if since is not None:
        query = query.where(Engagement.created_at >= since)
    if until is not None:
        query = query.where(Engagement.created_at < until)
    for row in session.execute(query.execution_options(yield_per=2000)):
        yield EngagementFact(*row)


def row_document(row: ReportRow, group_by: GroupBy) -> dict[str, Any]:
    document: dict[str, Any] = {"period_start": row.period_start.isoformat()}
    if group_by is GroupBy.CONTENT:
        document["content_id"] = row.key
    elif group_by is GroupBy.TRIGGER:
        document["trigger_id"] = row.key or None
    document.update(
        engagements=row.engagements,
        unique_viewers=row.unique_viewers,
        spend=row.spend,
        owner_share=row.owner_share,
    )
    return document


def to_csv(rows: Iterable[ReportRow], group_by: GroupBy, currency: str) -> str:
    """The rows as CSV with a header line (RFC 4180, CRLF line ends)."""
    out = io.StringIO()
    columns = ["period_start"]
    if group_by is not GroupBy.NONE:
        columns.append(f"{group_by.value}_id")
    columns += ["engagements", "unique_viewers", "spend", "owner_share", "currency"]
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        document = row_document(row, group_by)
        document["currency"] = currency
        writer.writerow(["" if document[c] is None else document[c] for c in columns])
    return out.getvalue()
