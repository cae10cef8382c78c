"""`acr demo` end to end: the README's first command must show right answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def _run_demo(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acr", "demo", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )


def test_demo_matches_its_samples_and_reruns_idempotently(tmp_path: Path) -> None:
    first = _run_demo(tmp_path / "demo")
    assert first.returncode == 0, first.stderr
    answers = {
        Path(record["query"]).name: record
        for record in (json.loads(line) for line in first.stdout.splitlines() if line[:1] == "{")
    }
    assert set(answers) == {"living-room.wav", "ad-break.mp3", "not-in-catalogue.m4a"}

    living = answers["living-room.wav"]["match"]
    assert living["title"] == "Wild Coasts, ep. 3"
    assert living["offset_s"] == pytest.approx(31.4, abs=0.05)
    assert living["source"].endswith("wild-coasts.ogg")

    pieces = answers["ad-break.mp3"]["segments"]
    assert [p["title"] for p in pieces] == ["Fizz Soda — summer spot", "Roadster — launch spot"]
    assert pieces[0]["offset_s"] == pytest.approx(12.0, abs=0.1)
    assert pieces[1]["offset_s"] == pytest.approx(0.0, abs=0.1)
    assert pieces[1]["query_start_s"] == pytest.approx(3.0, abs=0.15)

    assert answers["not-in-catalogue.m4a"]["match"] is None

    second = _run_demo(tmp_path / "demo")
    assert second.returncode == 0, second.stderr
    assert "0 indexed, 6 already there, 0 failed" in second.stdout
