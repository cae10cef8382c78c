"""``/v1/campaigns`` over HTTP, on SQLite and PostgreSQL: shapes, rules and tenancy."""

from __future__ import annotations

import copy
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from acr.campaigns.serving import Moment, serve
from acr.db.models import Content, Event, Organisation, utcnow
from acr.db.session import write_session

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from api.services import Services
    from tests.conftest import Keys

ACTIONS = ("schedule", "start", "pause", "resume", "complete", "archive")


def add_content(services: Services, title: str = "Show", *, deleted: bool = False) -> str:
    with services.sessions() as session:
        content = Content(title=title, kind="audio", status="ready", owner_account_id="acct_o")
        if deleted:
            content.deleted_at = utcnow()
        session.add(content)
        session.commit()
        return content.id


def org_id(services: Services, slug: str) -> str:
    with services.sessions() as session:
        return session.scalars(select(Organisation.id).where(Organisation.slug == slug)).one()


def body(content_id: str | None = None, **fields: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": "Winter sale",
        "advertiser": "Acme Corp",
        "payload": {"title": "20% off", "url": "https://acme.example/sale", "coupon_code": "W20"},
        "cost_per_engagement": 150,
        "currency": "EUR",
    }
    if content_id:
        result["triggers"] = [{"content_id": content_id, "start_s": 10, "end_s": 20}]
    result.update(fields)
    return result


def create(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/campaigns", json=body(**fields), headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_create_and_read_a_campaign(client: TestClient, keys: Keys, services: Services) -> None:
    content = add_content(services)
    created = create(
        client,
        keys.acme,
        content_id=content,
        schedule={
            "start_at": "2030-01-01T09:00:00+01:00",
            "end_at": "2030-02-01T00:00:00Z",
            "timezone": "Europe/Paris",
            "dayparts": [{"days": [4, 0], "start": "18:00", "end": "01:00"}],
        },
        targeting={"countries": ["fr", "BE"], "platforms": ["iOS"], "app_ids": []},
        budget_total=100_000,
        budget_daily=5_000,
        frequency_cap={"count": 3, "period_s": 86_400},
        revenue_share_bps=3_000,
        priority=7,
    )
    assert created["id"].startswith("cmp_")
    assert created["object"] == "campaign"
    assert created["status"] == "draft"
    assert created["organisation_id"] == org_id(services, "acme")
    assert created["currency"] == "eur"
    assert created["schedule"]["start_at"] == "2030-01-01T08:00:00Z"
    assert created["schedule"]["dayparts"] == [{"days": [0, 4], "start": "18:00", "end": "01:00"}]
    assert created["targeting"] == {"countries": ["BE", "FR"], "platforms": ["ios"], "app_ids": []}
    assert created["frequency_cap"] == {"count": 3, "period_s": 86_400}
    assert created["payload"] == {
        "title": "20% off",
        "url": "https://acme.example/sale",
        "coupon_code": "W20",
    }
    [trigger] = created["triggers"]
    assert trigger["id"].startswith("trg_")
    assert (trigger["content_id"], trigger["start_s"], trigger["end_s"]) == (content, 10, 20)

    fetched = client.get(f"/v1/campaigns/{created['id']}", headers=keys.acme)
    assert fetched.status_code == 200
    assert fetched.json() == created

    with services.sessions() as session:
        [event] = session.scalars(select(Event).where(Event.type == "campaign.created")).all()
    assert event.data["object"]["id"] == created["id"]
    assert event.organisation_id == created["organisation_id"]


def test_admins_name_the_organisation(client: TestClient, keys: Keys, services: Services) -> None:
    missing = client.post("/v1/campaigns", json=body(), headers=keys.admin)
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["loc"] == ["body", "organisation_id"]
    unknown = client.post(
        "/v1/campaigns", json=body(organisation_id="org_nope"), headers=keys.admin
    )
    assert unknown.status_code == 422
    acme = org_id(services, "acme")
    made = create(client, keys.admin, organisation_id=acme)
    assert made["organisation_id"] == acme
    # A manager sees it; another organisation's manager cannot create for acme.
    assert client.get(f"/v1/campaigns/{made['id']}", headers=keys.acme).status_code == 200
    refused = client.post("/v1/campaigns", json=body(organisation_id=acme), headers=keys.globex)
    assert refused.status_code == 422


INVALID: list[tuple[dict[str, Any], list[Any]]] = [
    ({"name": ""}, ["body", "name"]),
    ({"currency": "euro"}, ["body", "currency"]),
    ({"cost_per_engagement": -1}, ["body", "cost_per_engagement"]),
    ({"revenue_share_bps": 10_001}, ["body", "revenue_share_bps"]),
    ({"targeting": {"countries": ["XX"]}}, ["body", "targeting", "countries"]),
    ({"targeting": {"app_ids": ["app_nope"]}}, ["body", "targeting", "app_ids", 0]),
    ({"schedule": {"timezone": "Mars/Olympus"}}, ["body", "schedule", "timezone"]),
    ({"schedule": {"start_at": "2030-01-01T00:00:00"}}, ["body", "schedule", "start_at"]),
    (
        {"schedule": {"start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}},
        ["body", "schedule"],
    ),
    (
        {"schedule": {"dayparts": [{"days": [8], "start": "10:00", "end": "11:00"}]}},
        ["body", "schedule", "dayparts", 0, "days", 0],
    ),
    (
        {"schedule": {"dayparts": [{"days": [1], "start": "10:00", "end": "10:00"}]}},
        ["body", "schedule", "dayparts", 0],
    ),
    ({"triggers": [{"content_id": "cnt_nope"}]}, ["body", "triggers", 0, "content_id"]),
    ({"triggers": [{"content_id": "C", "start_s": 5, "end_s": 5}]}, ["body", "triggers", 0]),
    ({"triggers": [{"content_id": "C", "start_s": 5}]}, ["body", "triggers", 0]),
    (
        {"triggers": [{"content_id": "C", "start_s": -1, "end_s": 5}]},
        ["body", "triggers", 0, "start_s"],
    ),
    ({"payload": {"url": "javascript:alert(1)"}}, ["body", "payload", "url"]),
    ({"payload": {"data": {"blob": "x" * 20_000}}}, ["body", "payload"]),
    ({"surprise": 1}, ["body", "surprise"]),
]


def test_invalid_campaigns_are_422_problems(
    client: TestClient, keys: Keys, services: Services
) -> None:
    content = add_content(services)
    for case, loc in INVALID:
        fields = copy.deepcopy(case)
        for trigger in fields.get("triggers", []):
            if trigger["content_id"] == "C":
                trigger["content_id"] = content
        response = client.post("/v1/campaigns", json=body(**fields), headers=keys.acme)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] == "validation_error"
        assert problem["errors"][0]["loc"] == loc, fields


def test_triggers_on_deleted_content_are_refused(
    client: TestClient, keys: Keys, services: Services
) -> None:
    gone = add_content(services, deleted=True)
    response = client.post("/v1/campaigns", json=body(gone), headers=keys.acme)
    assert response.status_code == 422
    whole = create(client, keys.acme, triggers=[{"content_id": add_content(services, "B")}])
    assert whole["triggers"][0]["start_s"] is None


def test_lifecycle_actions(client: TestClient, keys: Keys, services: Services) -> None:
    cid = create(client, keys.acme)["id"]

    def act(action: str) -> Any:
        return client.post(f"/v1/campaigns/{cid}/{action}", headers=keys.acme)

    assert act("pause").status_code == 409
    assert act("pause").json()["code"] == "invalid_transition"
    # No start_at: scheduling runs it at once.
    assert act("schedule").json()["status"] == "running"
    assert act("pause").json()["status"] == "paused"
    assert act("pause").status_code == 409
    assert act("resume").json()["status"] == "running"
    assert act("complete").json()["status"] == "completed"
    assert act("resume").status_code == 409
    # Completed campaigns are read-only, but may be archived.
    edit = client.patch(f"/v1/campaigns/{cid}", json={"name": "x"}, headers=keys.acme)
    assert (edit.status_code, edit.json()["code"]) == (409, "campaign_read_only")
    assert act("archive").json()["status"] == "archived"
    assert act("archive").status_code == 409

    with services.sessions() as session:
        events = session.scalars(
            select(Event).where(Event.type == "campaign.updated").order_by(Event.created_at)
        ).all()
    assert [
        (e.data["previous_attributes"]["status"], e.data["object"]["status"]) for e in events
    ] == [
        ("draft", "scheduled"),
        ("scheduled", "running"),
        ("running", "paused"),
        ("paused", "running"),
        ("running", "completed"),
        ("completed", "archived"),
    ]


def test_schedule_waits_for_start_and_ends_by_itself(client: TestClient, keys: Keys) -> None:
    soon = utcnow() + timedelta(days=1)
    later = create(client, keys.acme, schedule={"start_at": soon.isoformat()})
    assert (
        client.post(f"/v1/campaigns/{later['id']}/schedule", headers=keys.acme).json()["status"]
        == "scheduled"
    )
    # start overrides the start time.
    assert (
        client.post(f"/v1/campaigns/{later['id']}/start", headers=keys.acme).json()["status"]
        == "running"
    )

    ending = create(client, keys.acme)
    client.post(f"/v1/campaigns/{ending['id']}/start", headers=keys.acme)
    past = (utcnow() - timedelta(seconds=1)).isoformat()
    patched = client.patch(
        f"/v1/campaigns/{ending['id']}", json={"schedule": {"end_at": past}}, headers=keys.acme
    )
    assert patched.json()["status"] == "completed"

    expired = create(client, keys.acme, schedule={"end_at": past})
    refused = client.post(f"/v1/campaigns/{expired['id']}/start", headers=keys.acme)
    assert refused.status_code == 409


def test_patch_and_trigger_routes(client: TestClient, keys: Keys, services: Services) -> None:
    first, second = add_content(services, "A"), add_content(services, "B")
    campaign = create(client, keys.acme, content_id=first, budget_total=1000)
    url = f"/v1/campaigns/{campaign['id']}"
    patched = client.patch(
        url, json={"name": "Spring sale", "budget_total": None, "priority": 3}, headers=keys.acme
    )
    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["budget_total"]) == ("Spring sale", None)
    assert patched.json()["advertiser"] == "Acme Corp"
    assert client.patch(url, json={"name": None}, headers=keys.acme).status_code == 422

    added = client.post(f"{url}/triggers", json={"content_id": second}, headers=keys.acme)
    assert added.status_code == 201
    assert [t["content_id"] for t in added.json()["triggers"]] == [first, second]
    dropped = added.json()["triggers"][0]["id"]
    removed = client.delete(f"{url}/triggers/{dropped}", headers=keys.acme)
    assert [t["content_id"] for t in removed.json()["triggers"]] == [second]
    assert client.delete(f"{url}/triggers/{dropped}", headers=keys.acme).status_code == 404
    bad = client.post(f"{url}/triggers", json={"content_id": "cnt_nope"}, headers=keys.acme)
    assert bad.status_code == 422

    with services.sessions() as session:
        events = session.scalars(select(Event).where(Event.type == "campaign.updated")).all()
    first_change = next(e for e in events if "name" in e.data["previous_attributes"])
    assert first_change.data["previous_attributes"] == {
        "name": "Winter sale",
        "budget_total": 1000,
        "priority": 0,
    }


def test_lists_views_filters_sorting_and_pages(
    client: TestClient, keys: Keys, services: Services
) -> None:
    content = add_content(services)
    made = {}
    for name, advertiser, triggered, priority in [
        ("alpha", "Acme Corp", True, 1),
        ("bravo", "Initech", False, 3),
        ("charlie", "Acme Corp", True, 2),
        ("delta", "Umbrella 100%", False, 0),
    ]:
        made[name] = create(
            client,
            keys.acme,
            name=name,
            advertiser=advertiser,
            priority=priority,
            content_id=content if triggered else None,
        )["id"]
    create(client, keys.globex, name="echo")
    client.post(f"/v1/campaigns/{made['charlie']}/start", headers=keys.acme)
    client.post(f"/v1/campaigns/{made['bravo']}/start", headers=keys.acme)

    def names(**params: Any) -> list[str]:
        response = client.get("/v1/campaigns", params=params, headers=keys.acme)
        assert response.status_code == 200, response.text
        return [c["name"] for c in response.json()["data"]]

    assert names() == ["delta", "charlie", "bravo", "alpha"]  # newest first
    assert names(view="running", sort="name") == ["bravo", "charlie"]
    assert names(view="acr", sort="name") == ["alpha", "charlie"]
    assert names(status=["draft"], sort="name") == ["alpha", "delta"]
    assert names(q="acme", sort="-priority") == ["charlie", "alpha"]
    assert names(q="100%") == ["delta"]  # LIKE wildcards are literal
    assert names(content_id=content, sort="name") == ["alpha", "charlie"]
    assert names(sort="priority") == ["delta", "alpha", "charlie", "bravo"]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, "sort": "name"}
        if cursor:
            params["starting_after"] = cursor
        page = client.get("/v1/campaigns", params=params, headers=keys.acme).json()
        assert page["object"] == "list"
        seen += [c["name"] for c in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == ["alpha", "bravo", "charlie", "delta"]

    everything = client.get("/v1/campaigns", params={"sort": "name"}, headers=keys.admin).json()
    assert [c["name"] for c in everything["data"]] == ["alpha", "bravo", "charlie", "delta", "echo"]
    globex = org_id(services, "globex")
    only = client.get("/v1/campaigns", params={"organisation_id": globex}, headers=keys.admin)
    assert [c["name"] for c in only.json()["data"]] == ["echo"]
    assert client.get("/v1/campaigns", params={"view": "x"}, headers=keys.acme).status_code == 422
    assert client.get("/v1/campaigns", params={"limit": 0}, headers=keys.acme).status_code == 422


def test_organisations_cannot_see_each_others_campaigns(
    client: TestClient, keys: Keys, services: Services
) -> None:
    content = add_content(services)
    theirs = create(client, keys.globex, content_id=content, name="secret")["id"]
    url = f"/v1/campaigns/{theirs}"
    attempts = [
        client.get(url, headers=keys.acme),
        client.patch(url, json={"name": "mine"}, headers=keys.acme),
        client.post(f"{url}/triggers", json={"content_id": content}, headers=keys.acme),
        client.delete(f"{url}/triggers/trg_x", headers=keys.acme),
        client.get(f"{url}/report", headers=keys.acme),
        *(client.post(f"{url}/{action}", headers=keys.acme) for action in ACTIONS),
    ]
    for response in attempts:
        assert response.status_code == 404, (response.request.url, response.text)
        assert response.json()["detail"] == client.get(
            "/v1/campaigns/cmp_missing", headers=keys.acme
        ).json()["detail"].replace("cmp_missing", theirs)
    listed = client.get("/v1/campaigns", params={"q": "secret"}, headers=keys.acme).json()
    assert listed["data"] == []
    assert (
        client.get(
            "/v1/campaigns", params={"starting_after": theirs}, headers=keys.acme
        ).status_code
        == 422
    )
    # Nothing changed, and the owner still sees it.
    mine = client.get(url, headers=keys.globex).json()
    assert (mine["name"], mine["status"]) == ("secret", "draft")


def test_viewer_apps_and_anonymous_callers_are_refused(client: TestClient, keys: Keys) -> None:
    url = "/v1/campaigns/cmp_any"
    calls = [
        ("POST", "/v1/campaigns", body()),
        ("GET", "/v1/campaigns", None),
        ("GET", url, None),
        ("PATCH", url, {"name": "x"}),
        ("POST", f"{url}/triggers", {"content_id": "cnt_x"}),
        ("DELETE", f"{url}/triggers/trg_x", None),
        ("GET", f"{url}/report", None),
        *(("POST", f"{url}/{action}", None) for action in ACTIONS),
    ]
    for method, path, payload in calls:
        forbidden = client.request(method, path, json=payload, headers=keys.tv_app)
        assert forbidden.status_code == 403, (method, path)
        assert forbidden.json()["code"] == "forbidden"
        assert client.request(method, path, json=payload).status_code == 401


def test_reports_in_json_and_csv(client: TestClient, keys: Keys, services: Services) -> None:
    first, second = add_content(services, "A"), add_content(services, "B")
    campaign = create(
        client,
        keys.acme,
        triggers=[{"content_id": first}, {"content_id": second}],
        cost_per_engagement=100,
        revenue_share_bps=2_500,
    )
    client.post(f"/v1/campaigns/{campaign['id']}/start", headers=keys.acme)
    # 23:30 and 00:30 UTC on two days; in New York (UTC-5) both are on 5 January.
    base = datetime(2026, 1, 5, 23, 30, tzinfo=UTC)
    plays = [
        (base, first, "v1"),
        (base + timedelta(minutes=10), first, "v2"),
        (base + timedelta(minutes=20), second, "v1"),
        (base + timedelta(hours=1), first, "v1"),
        (base + timedelta(days=3), first, "v3"),  # outside the range asked below
    ]
    for at, content, viewer in plays:
        with write_session(services.sessions) as session:
            moment = Moment(content, 1.0, 0.9, viewer, None, None, None)
            assert len(serve(session, moment, limit=1, now=at)) == 1
            session.commit()
    url = f"/v1/campaigns/{campaign['id']}/report"
    window = {"from": "2026-01-05T00:00:00Z", "to": "2026-01-07T00:00:00Z"}

    daily = client.get(url, params=window, headers=keys.acme)
    assert daily.status_code == 200, daily.text
    report = daily.json()
    assert report["object"] == "campaign_report"
    assert report["from"] == "2026-01-05T00:00:00Z"
    assert [(r["period_start"], r["engagements"], r["unique_viewers"]) for r in report["rows"]] == [
        ("2026-01-05T00:00:00+00:00", 3, 2),
        ("2026-01-06T00:00:00+00:00", 1, 1),
    ]
    assert report["totals"] == {
        "engagements": 4,
        "unique_viewers": 2,
        "spend": 400,
        "owner_share": 100,
    }

    local = client.get(url, params={**window, "tz": "America/New_York"}, headers=keys.acme)
    assert [(r["period_start"], r["engagements"]) for r in local.json()["rows"]] == [
        ("2026-01-05T00:00:00-05:00", 4),
    ]

    hourly = client.get(
        url, params={**window, "granularity": "hour", "group_by": "content"}, headers=keys.acme
    ).json()
    assert [(r["period_start"], r["content_id"], r["spend"]) for r in hourly["rows"]] == [
        *sorted(
            [("2026-01-05T23:00:00+00:00", first, 200), ("2026-01-05T23:00:00+00:00", second, 100)]
        ),
        ("2026-01-06T00:00:00+00:00", first, 100),
    ]
    by_trigger = client.get(url, params={"group_by": "trigger"}, headers=keys.acme).json()
    assert {r["trigger_id"] for r in by_trigger["rows"]} == {t["id"] for t in campaign["triggers"]}

    exported = client.get(url, params={**window, "format": "csv"}, headers=keys.acme)
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    assert list(csv.reader(io.StringIO(exported.text))) == [
        ["period_start", "engagements", "unique_viewers", "spend", "owner_share", "currency"],
        ["2026-01-05T00:00:00+00:00", "3", "2", "300", "75", "eur"],
        ["2026-01-06T00:00:00+00:00", "1", "1", "100", "25", "eur"],
    ]

    for bad in ({"tz": "Nowhere/City"}, {"from": "2026-01-05T00:00:00"}, {"format": "xml"},
                {"from": "2026-01-06T00:00:00Z", "to": "2026-01-05T00:00:00Z"}):  # fmt: skip
        assert client.get(url, params=bad, headers=keys.acme).status_code == 422, bad
