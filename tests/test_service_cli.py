"""``acr keys`` and ``acr serve --demo`` as a user runs them: subprocesses, a real HTTP server."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT


def acr(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acr", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ACR_")}
    return {**clean, "ACR_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}


def test_keys_are_shown_once_and_stored_hashed(env: dict[str, str], tmp_path: Path) -> None:
    created = acr("keys", "create", "--role", "viewer_app", "--app", "tv", "--json", env=env)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["role"] == "viewer_app" and key["secret"].startswith("acr_")
    listed = acr("keys", "list", "--json", env=env)
    assert listed.returncode == 0 and key["id"] in listed.stdout
    assert key["secret"] not in listed.stdout
    secret_part = key["secret"].rsplit("_", 1)[1]
    assert secret_part.encode() not in (tmp_path / "data" / "acr.db").read_bytes()
    assert acr("keys", "revoke", key["id"], env=env).returncode == 0
    again = acr("keys", "revoke", key["id"], env=env)
    assert again.returncode == 1 and "no live key" in again.stderr


def test_keys_refuse_a_role_without_its_scope(env: dict[str, str]) -> None:
    result = acr("keys", "create", "--role", "campaign_manager", env=env)
    assert result.returncode == 1
    assert "scoped to one organisation" in result.stderr and "Traceback" not in result.stderr
    usage = acr("keys", "create", "--role", "owner", env=env)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def demo_server(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], list[str], int]]:
    """``acr serve --demo`` running; yields the process, what it printed first, and its port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "acr", "serve", "--demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Uvicorn running" in line:
            break
    try:
        yield process, lines, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_demo_prints_a_curl_that_returns_the_campaign(
    demo_server: tuple[subprocess.Popen[str], list[str], int],
) -> None:
    _, lines, port = demo_server
    printed = "".join(lines)
    assert "Uvicorn running" in printed, printed
    curl = next(line.strip() for line in lines if line.strip().startswith("curl "))
    words = shlex.split(curl)
    key = words[words.index("-H") + 1].split("Bearer ", 1)[1]
    sample = Path(next(w for w in words if w.startswith("sample=@"))[len("sample=@") :])
    url = words[-1]
    assert url == f"http://127.0.0.1:{port}/v1/match"
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    response = httpx.post(
        url,
        headers={"Authorization": f"Bearer {key}"},
        data={"viewer_id": "demo-viewer"},
        files={"sample": (sample.name, sample.read_bytes())},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["match"]["title"] == "Wild Coasts, ep. 3"
    assert body["match"]["offset_s"] == pytest.approx(31.4, abs=0.1)
    assert [c["payload"].get("coupon_code") for c in body["campaigns"]] == ["COAST20"]
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'acr_matches_total{outcome="match"} 1.0' in metrics
    admin = next(line.split()[1] for line in lines if line.startswith("  admin "))
    accounts = httpx.get(
        f"http://127.0.0.1:{port}/v1/accounts", headers={"Authorization": f"Bearer {admin}"}
    ).json()["data"]
    assert len(accounts) == 4
    owner = body["match"]["content_id"]
    content = httpx.get(
        f"http://127.0.0.1:{port}/v1/content/{owner}", headers={"Authorization": f"Bearer {admin}"}
    ).json()
    assert content["owner_account_id"] in {account["id"] for account in accounts}


def test_demo_restart_reuses_what_the_first_start_made(
    env: dict[str, str], demo_server: tuple[subprocess.Popen[str], list[str], int]
) -> None:
    first, lines, _ = demo_server
    keys_before = [line for line in lines if line.startswith("  viewer_app")]
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=20)
    port = free_port()
    second = subprocess.Popen(
        [sys.executable, "-m", "acr", "serve", "--demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert second.stdout is not None
        again = [second.stdout.readline() for _ in range(5)]
        assert [line for line in again if line.startswith("  viewer_app")] == keys_before
        assert again[0].startswith("Demo ready") and "6 contents" in again[0]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=20)
