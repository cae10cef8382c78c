"""The load benchmark's harness, end to end in a tiny configuration.

Two synthetic songs instead of the Debian corpus, one server process, one
second per cell: the index is built with the batch indexer, the real server is
started with ``acr serve``, keys come from ``acr keys create``, and both upload
modes are driven at two concurrencies. Checks that the server answers, that
the counts add up and that the report has every column.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import load
from benchmarks.corpus import Track
from tests.conftest import SongWriter


def _tracks(make_song: SongWriter) -> tuple[Track, ...]:
    return tuple(
        Track(make_song(f"songs/song-{seed}.wav", seed, 20.0), "synthetic", f"song-{seed}", 20.0)
        for seed in (11, 12)
    )


def test_load_harness_tiny_run(make_song: SongWriter, tmp_path: Path) -> None:
    out = tmp_path / "results"
    config = load.LoadConfig(
        tracks=_tracks(make_song),
        corpus="two synthetic songs",
        out_dir=out,
        stem="load",
        cache_dir=tmp_path / "cache",
        workers=1,
        duration_s=1.0,
        warmup_s=0.3,
        queries=4,
        concurrencies=(1, 4),
        command="pytest",
    )
    payload = load.run_load(config)

    cells = payload["cells"]
    assert [(c["mode"], c["concurrency"]) for c in cells] == [
        ("fingerprints", 1),
        ("fingerprints", 4),
        ("audio", 1),
        ("audio", 4),
    ]
    for cell in cells:
        assert cell["requests"] > 0, cell
        assert cell["errors"] == 0, cell["error_examples"]
        assert cell["ok"] + cell["errors"] == cell["requests"]
        assert sum(cell["statuses"].values()) == cell["requests"]
        assert cell["correct"] <= cell["matched"] <= cell["ok"]
        assert cell["correct_content_rate"] >= 0.9, cell
        assert cell["matches_per_s"] == cell["ok"] / cell["duration_s"]
        assert (
            0 < cell["latency_ms"]["p50"] <= cell["latency_ms"]["p99"] <= cell["latency_ms"]["max"]
        )
    run = payload["run"]
    assert run["server"]["registered_contents"] == 2
    assert run["queries"]["count"] == 4
    assert {t["target"] for t in run["targets"]} >= {
        "fingerprints uploads, matches/s (best concurrency)",
        "audio uploads, matches/s (best concurrency)",
    }

    markdown = (out / "load.md").read_text()
    header = "| " + " | ".join(load.TABLE_COLUMNS) + " |"
    assert header in markdown
    assert set(load.TABLE_COLUMNS) >= {
        "mode",
        "concurrency",
        "requests",
        "matches/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "correct content",
    }
    table_rows = [line for line in markdown.splitlines() if line.startswith("| fingerprints |")]
    table_rows += [line for line in markdown.splitlines() if line.startswith("| audio |")]
    main_rows = [row for row in table_rows if row.count("|") == len(load.TABLE_COLUMNS) + 1]
    assert len(main_rows) == 4
    assert "shares" in markdown or "same" in markdown  # the load generator's CPU is disclosed
    assert json.loads((out / "load.json").read_text())["cells"] == cells

    # A second run reuses the cached index and queries.
    again = load.ensure_index(config.tracks, config.cache_dir)
    assert again.cached
