"""Serving campaigns for a matched moment: selection, order, budgets, caps, concurrency.

Runs on SQLite and PostgreSQL (via the ``services`` fixture). Times are given to
:func:`serve` explicitly, so that day boundaries and caps are tested exactly.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select

from acr.auth import ensure_organisation
from acr.campaigns.serving import Moment, ServedCampaign, day_bounds, owner_share, serve, targets
from acr.db.models import Campaign, Content, Engagement, Event, Trigger, utcnow
from acr.db.session import write_session

if TYPE_CHECKING:
    from api.services import Services

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday


def moment(content_id: str, offset_s: float = 15.0, **changes: Any) -> Moment:
    fields: dict[str, Any] = {
        "content_id": content_id,
        "offset_s": offset_s,
        "confidence": 0.9,
        "viewer_hash": "viewer-a",
        "app_id": None,
        "country": "FR",
        "platform": "ios",
    }
    fields.update(changes)
    return Moment(**fields)


class World:
    """An organisation, a content and helpers to add campaigns and serve."""

    def __init__(self, services: Services) -> None:
        self.sessions = services.sessions
        with self.sessions() as session:
            self.org = ensure_organisation(session, "acme").id
            content = Content(title="Show", kind="audio", status="ready", owner_account_id="acct_o")
            session.add(content)
            session.commit()
            self.content = content.id

    def campaign(
        self,
        name: str = "c",
        *,
        window: tuple[float, float] | None = None,
        content_id: str | None = None,
        **fields: Any,
    ) -> str:
        values: dict[str, Any] = {"status": "running", "cost_per_engagement": 100}
        values.update(fields)
        with self.sessions() as session:
            campaign = Campaign(organisation_id=self.org, name=name, advertiser="Acme", **values)
            start, end = window if window else (None, None)
            campaign.triggers = [
                Trigger(content_id=content_id or self.content, start_s=start, end_s=end)
            ]
            session.add(campaign)
            session.commit()
            return campaign.id

    def serve(
        self, at: datetime = NOW, limit: int = 5, m: Moment | None = None
    ) -> list[ServedCampaign]:
        with write_session(self.sessions) as session:
            served = serve(session, m or moment(self.content), limit=limit, now=at)
            session.commit()
        return served

    def ids(self, **kwargs: Any) -> list[str]:
        return [s.campaign_id for s in self.serve(**kwargs)]

    def status(self, campaign_id: str) -> str:
        with self.sessions() as session:
            return session.get_one(Campaign, campaign_id).status


@pytest.fixture
def world(services: Services) -> World:
    return World(services)


def test_serving_records_an_engagement_and_its_event(world: World) -> None:
    cid = world.campaign(payload={"title": "Hi"}, revenue_share_bps=2_550, cost_per_engagement=199)
    [served] = world.serve()
    assert (served.campaign_id, served.payload, served.cost, served.currency) == (
        cid,
        {"title": "Hi"},
        199,
        "usd",
    )
    with world.sessions() as session:
        engagement = session.get_one(Engagement, served.engagement_id)
        event = session.scalars(select(Event).where(Event.type == "engagement.created")).one()
    assert engagement.owner_share == 199 * 2_550 // 10_000 == 50
    assert engagement.owner_account_id == "acct_o"
    assert engagement.trigger_id == served.trigger_id
    assert engagement.created_at == NOW
    assert (event.organisation_id, event.account_id) == (world.org, "acct_o")
    assert event.data["engagement_id"] == served.engagement_id
    assert event.data["campaign_id"] == cid
    assert event.data["content_id"] == world.content
    assert (event.data["cost"], event.data["currency"], event.data["owner_share"]) == (
        199,
        "usd",
        50,
    )
    assert event.data["owner_account_id"] == "acct_o"


def test_trigger_windows_are_half_open(world: World) -> None:
    windowed = world.campaign("w", window=(10.0, 20.0))
    whole = world.campaign("whole", priority=-1)
    for offset, expected in [
        (9.99, [whole]),
        (10.0, [windowed, whole]),
        (19.999, [windowed, whole]),
        (20.0, [whole]),
        (5000.0, [whole]),
    ]:
        got = world.ids(m=moment(world.content, offset, viewer_hash=f"v{offset}"))
        assert got == expected, offset


def test_other_content_and_deleted_content_do_not_serve(world: World) -> None:
    with world.sessions() as session:
        other = Content(title="Other", kind="audio", status="ready")
        session.add(other)
        session.commit()
    world.campaign(content_id=other.id)
    assert world.serve() == []
    assert len(world.serve(m=moment(other.id))) == 1
    with world.sessions() as session:
        session.get_one(Content, other.id).deleted_at = utcnow()
        session.commit()
    assert world.serve(m=moment(other.id, viewer_hash="v2")) == []


def test_order_is_priority_then_cost_then_id_and_limit_applies(world: World) -> None:
    low = world.campaign("low", priority=0, cost_per_engagement=500)
    high_cheap = world.campaign("hc", priority=5, cost_per_engagement=10)
    high_dear = world.campaign("hd", priority=5, cost_per_engagement=20)
    tie_a = world.campaign("ta", priority=1, cost_per_engagement=7)
    tie_b = world.campaign("tb", priority=1, cost_per_engagement=7)
    ties = sorted([tie_a, tie_b])
    assert world.ids(limit=10) == [high_dear, high_cheap, *ties, low]
    assert world.ids(limit=2, m=moment(world.content, viewer_hash="other")) == [
        high_dear,
        high_cheap,
    ]
    assert world.serve(limit=0) == []


def test_one_engagement_per_campaign_with_the_most_specific_trigger(world: World) -> None:
    cid = world.campaign(window=(0.0, 100.0))
    with world.sessions() as session:
        session.add(Trigger(campaign_id=cid, content_id=world.content))  # whole content too
        session.commit()
    [served] = world.serve()
    with world.sessions() as session:
        trigger = session.get_one(Trigger, served.trigger_id)
    assert (trigger.start_s, trigger.end_s) == (0.0, 100.0)


def test_status_schedule_and_dayparts_gate_serving(world: World) -> None:
    paused = world.campaign("p", status="paused")
    draft = world.campaign("d", status="draft")
    late = world.campaign("late", status="scheduled", start_at=NOW + timedelta(minutes=1))
    due = world.campaign("due", status="scheduled", start_at=NOW - timedelta(minutes=1))
    over = world.campaign("over", status="running", end_at=NOW)
    # Monday 13:00 in Paris is inside 12:00-14:00; Tuesday's window is not today.
    lunch = world.campaign(
        "lunch",
        timezone="Europe/Paris",
        dayparts=[{"days": [0], "start": "12:00", "end": "14:00"}],
    )
    tuesday = world.campaign("tue", dayparts=[{"days": [1], "start": "00:00", "end": "24:00"}])
    assert sorted(world.ids()) == sorted([due, lunch])
    # Serving applies the schedule lazily, with its events.
    assert (world.status(due), world.status(over)) == ("running", "completed")
    assert world.status(late) == "scheduled"
    assert (world.status(paused), world.status(draft), world.status(tuesday)) == (
        "paused",
        "draft",
        "running",
    )
    with world.sessions() as session:
        updates = session.scalars(select(Event).where(Event.type == "campaign.updated")).all()
    assert {(e.data["object"]["id"], e.data["previous_attributes"]["status"]) for e in updates} == {
        (due, "scheduled"),
        (over, "running"),
    }
    # Outside the lunch window (12:00 UTC is 13:00 Paris; 13:00 UTC is 14:00, the end).
    assert lunch not in world.ids(
        at=NOW + timedelta(hours=1), m=moment(world.content, viewer_hash="x")
    )


def test_targeting(world: World) -> None:
    fr_ios = world.campaign("fr", targeting={"countries": ["FR"], "platforms": ["ios"]})
    app = world.campaign("app", targeting={"app_ids": ["app_1"]})
    anyone = world.campaign("any", targeting={"countries": [], "platforms": [], "app_ids": []})

    def reached(**viewer: Any) -> set[str]:
        m = moment(world.content, viewer_hash=str(sorted(viewer.items())), **viewer)
        return set(world.ids(m=m))

    assert reached(country="FR", platform="iOS", app_id="app_1") == {fr_ios, app, anyone}
    assert reached(country="DE", platform="ios", app_id="app_2") == {anyone}
    assert reached(country=None, platform=None, app_id=None) == {anyone}
    assert targets({"countries": ["FR"]}, moment("c", country="fr"))


def test_total_budget_is_never_overspent(world: World) -> None:
    cid = world.campaign(cost_per_engagement=300, budget_total=700)
    assert len(world.serve(m=moment(world.content, viewer_hash="1"))) == 1
    assert len(world.serve(m=moment(world.content, viewer_hash="2"))) == 1
    # 600 spent: another 300 would make 900 > 700.
    assert world.serve(m=moment(world.content, viewer_hash="3")) == []
    with world.sessions() as session:
        spent = session.scalar(
            select(func.sum(Engagement.cost)).where(Engagement.campaign_id == cid)
        )
    assert spent == 600


def test_daily_budget_follows_the_campaigns_calendar_day(world: World) -> None:
    # New York: 2026-03-10 03:00 UTC is still 9 March (23:00 EDT); 04:30 UTC is 10 March.
    world.campaign(cost_per_engagement=100, budget_daily=100, timezone="America/New_York")
    evening = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)
    assert len(world.serve(at=evening, m=moment(world.content, viewer_hash="1"))) == 1
    late = evening + timedelta(minutes=59)
    assert world.serve(at=late, m=moment(world.content, viewer_hash="2")) == []
    midnight = evening + timedelta(hours=1)  # 00:00 local: a new day
    assert len(world.serve(at=midnight, m=moment(world.content, viewer_hash="3"))) == 1
    start, end = day_bounds("America/New_York", evening)
    assert (start, end) == (
        datetime(2026, 3, 9, 4, 0, tzinfo=UTC),
        datetime(2026, 3, 10, 4, 0, tzinfo=UTC),
    )


def test_frequency_cap_per_viewer_per_period(world: World) -> None:
    world.campaign(frequency_cap=2, frequency_period_s=3600)
    a, b = moment(world.content, viewer_hash="a"), moment(world.content, viewer_hash="b")
    assert len(world.serve(at=NOW, m=a)) == 1
    assert len(world.serve(at=NOW + timedelta(minutes=1), m=a)) == 1
    assert world.serve(at=NOW + timedelta(minutes=2), m=a) == []
    assert len(world.serve(at=NOW + timedelta(minutes=2), m=b)) == 1
    # The first engagement leaves the period after an hour.
    assert len(world.serve(at=NOW + timedelta(seconds=3601), m=a)) == 1


def test_lifetime_frequency_cap_and_a_capped_campaign_lets_the_next_serve(world: World) -> None:
    capped = world.campaign("capped", priority=9, frequency_cap=1)
    second = world.campaign("second")
    assert world.ids(at=NOW, limit=1) == [capped]
    assert world.ids(at=NOW + timedelta(days=400), limit=1) == [second]
    world.campaign("broke", priority=99, budget_total=0)
    assert world.ids(at=NOW, limit=1, m=moment(world.content, viewer_hash="b")) == [capped]


def test_budget_holds_under_concurrent_serves(world: World) -> None:
    """8 threads serve at once against budgets that allow exactly 7 engagements."""
    cid = world.campaign(cost_per_engagement=100, budget_total=800, budget_daily=700)
    world.campaign("free", priority=-1)  # a campaign without limits, served alongside
    threads, per_thread = 8, 4
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                world.serve(m=moment(world.content, viewer_hash=f"{worker}-{i}"))
        except BaseException as error:  # reported below: a thread's failure must fail the test
            errors.append(error)

    pool = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert errors == []
    with world.sessions() as session:
        count, spent = session.execute(
            select(func.count(), func.sum(Engagement.cost)).where(Engagement.campaign_id == cid)
        ).one()
        free = session.scalar(select(func.count()).where(Engagement.campaign_id != cid))
    assert (count, spent) == (7, 700)
    assert free == threads * per_thread


def test_frequency_cap_holds_under_concurrent_serves(world: World) -> None:
    cid = world.campaign(frequency_cap=3, frequency_period_s=86_400)
    threads = 6
    barrier = threading.Barrier(threads)

    def run() -> None:
        barrier.wait()
        for _ in range(2):
            world.serve()  # all as viewer-a

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    with world.sessions() as session:
        count = session.scalar(select(func.count()).where(Engagement.campaign_id == cid))
    assert count == 3


def test_owner_share_rounds_down() -> None:
    assert owner_share(999, 3_333) == 332
    assert owner_share(0, 10_000) == 0
    assert owner_share(100, 10_000) == 100
