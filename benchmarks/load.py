"""Load test of the HTTP service over loopback: matches per second and latency.

Run ``python -m benchmarks.load [--quick] [--workers N] [--duration S]``.

Indexes the benchmark reference corpus with the batch indexer (cached under
``benchmarks/.cache``), starts the real server (``acr serve --workers N``) on a
free loopback port in a temporary data directory, registers the indexed
contents in the service database, creates a viewer-app key (and, when the
campaigns API is there, a running campaign triggered by every content, so that
each match also records an engagement), and then drives ``POST /v1/match``
closed-loop at fixed concurrency, for fingerprint uploads and for audio
uploads, from this process (asyncio streams, one connection per concurrent
client). Writes ``load.md`` and ``load.json`` (``load-quick.*`` with
``--quick``) into ``benchmarks/results``.

The queries are 5 s excerpts of the references with white noise at 10 dB SNR,
cut at seeded positions, encoded once as AAC (M4A, 64 kbit/s, mono, 44.1 kHz:
what a phone's recorder produces) for audio uploads, and fingerprinted once on
the client side from those same bytes for fingerprint uploads.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream

from acr.signals.audio import AudioSignal
from benchmarks import queries as qs
from benchmarks.common import REPO_ROOT, RESULTS_DIR, git_commit, machine_info, utc_now
from benchmarks.corpus import DEFAULT_CACHE_DIR, Track, decode_mono, ensure_corpus
from benchmarks.degrade import FloatArray
from benchmarks.degrade import get as get_degradation

MODES: tuple[str, ...] = ("fingerprints", "audio")
"""Upload modes: client-side fingerprints (wire format) or the encoded audio itself."""
CONCURRENCIES: tuple[int, ...] = (1, 8, 32)
SEED = qs.SEED
"""Seed of the query choice (the benchmark's master seed)."""
QUERY_LENGTH_S = 5.0
DEGRADATION = "white10"
AUDIO_FORMAT = "AAC-LC in M4A, 64 kbit/s, mono, 44.1 kHz"
VIEWERS = 1000
"""Distinct viewer ids the requests cycle through."""

TARGET_FINGERPRINT_RPS = 300.0
TARGET_AUDIO_RPS = 40.0
TARGET_P99_MS = 150.0
TARGET_P99_CONCURRENCY = 8

TABLE_COLUMNS: tuple[str, ...] = (
    "mode",
    "concurrency",
    "requests",
    "matches/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "correct content",
)
"""Columns of the results table, in order."""

_INDEX_CODE = ("acr/signals", "acr/index", "indexer")
"""Source folders whose code decides what an index holds (part of the cache key)."""


def log(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


# -- index ------------------------------------------------------------------------------------


def _code_digest(folders: Sequence[str] = _INDEX_CODE) -> str:
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            digest.update(path.relative_to(REPO_ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def corpus_key(tracks: Sequence[Track], *extra: str) -> str:
    """A cache key for work derived from ``tracks`` by the current core code."""
    digest = hashlib.sha256(_code_digest().encode())
    for track in tracks:
        digest.update(f"{track.name}\0{track.path.stat().st_size}\0".encode())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:16]


def content_ids(tracks: Sequence[Track]) -> list[str]:
    """The content id each track is indexed under (as in :func:`benchmarks.run.build_index`)."""
    return [f"bench-{i:03d}" for i in range(len(tracks))]


@dataclass(frozen=True)
class BuiltIndex:
    """A cached index of the references."""

    path: Path
    content_ids: tuple[str, ...]
    build_s: float
    method: str
    cached: bool


def ensure_index(tracks: Sequence[Track], cache_dir: Path) -> BuiltIndex:
    """An index of ``tracks`` built with the batch indexer, reused from ``cache_dir`` if there.

    The cache key covers the tracks (names and sizes) and the source of the
    fingerprinting and index code, so a change to either rebuilds.
    """
    from benchmarks.run import build_index

    root = cache_dir / "load-index" / corpus_key(tracks)
    marker = root / "built.json"
    index_dir = root / "index"
    if marker.is_file() and index_dir.is_dir():
        info = json.loads(marker.read_text())
        return BuiltIndex(
            index_dir, tuple(info["content_ids"]), info["build_s"], info["method"], True
        )
    root.mkdir(parents=True, exist_ok=True)
    ids, build_s, method = build_index(index_dir, tracks)
    if ids != content_ids(tracks):
        raise RuntimeError("benchmarks.run.build_index changed its content ids")
    marker.write_text(json.dumps({"content_ids": ids, "build_s": build_s, "method": method}))
    return BuiltIndex(index_dir, tuple(ids), build_s, method, False)


# -- queries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadQuery:
    """One query, ready to send either way.

    Attributes
    ----------
    query_id : str
    expected_content_id : str
        Content the excerpt was cut from.
    true_offset_s : float
        Start of the excerpt in it.
    audio : bytes
        The degraded excerpt encoded as :data:`AUDIO_FORMAT`.
    fingerprints : bytes
        ``AudioSignal().fingerprint_query(audio).to_bytes()``.
    """

    query_id: str
    expected_content_id: str
    true_offset_s: float
    audio: bytes
    fingerprints: bytes


def encode_m4a(samples: FloatArray, sample_rate: int, bit_rate: int = 64_000) -> bytes:
    """Encode mono float samples as AAC-LC in an M4A (MP4) container at 44.1 kHz."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("aac", rate=44_100, layout="mono")
        if not isinstance(stream, AudioStream):
            raise TypeError("aac is not an audio encoder")
        stream.bit_rate = bit_rate
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=44_100)
        frame = AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1),
            format="flt",
            layout="mono",
        )
        frame.sample_rate = sample_rate
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(resampled):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def plan_queries(
    tracks: Sequence[Track], count: int, length_s: float, degradation: str, seed: int = SEED
) -> list[tuple[int, int]]:
    """``(query number, track index)`` pairs: tracks dealt from a seeded shuffle, round-robin."""
    needed = qs.source_seconds_needed(length_s, [degradation]) + 0.1
    eligible = [i for i, track in enumerate(tracks) if track.duration_s >= needed]
    if not eligible:
        raise ValueError(f"no track is long enough for {length_s} s queries")
    order = [eligible[i] for i in np.random.default_rng(seed).permutation(len(eligible))]
    return [(k, order[k % len(order)]) for k in range(count)]


def make_queries(
    tracks: Sequence[Track],
    ids: Sequence[str],
    count: int,
    *,
    length_s: float = QUERY_LENGTH_S,
    degradation: str = DEGRADATION,
    seed: int = SEED,
) -> list[LoadQuery]:
    """Cut, degrade, encode and fingerprint ``count`` seeded excerpts of ``tracks``."""
    signal_kind = AudioSignal()
    rate = qs.SAMPLE_RATE
    needed = qs.source_seconds_needed(length_s, [degradation])
    made: dict[int, LoadQuery] = {}
    by_track: dict[int, list[int]] = {}
    for number, track_index in plan_queries(tracks, count, length_s, degradation, seed):
        by_track.setdefault(track_index, []).append(number)
    for track_index, numbers in sorted(by_track.items()):
        audio = decode_mono(tracks[track_index].path, rate)
        for number in numbers:
            key = np.random.SeedSequence(seed, spawn_key=(0x10AD, number))
            rng = np.random.default_rng(key)
            start = qs.draw_start(audio, rate, length_s, needed, rng)
            clip = qs.degrade_clip(audio, rate, start, length_s, get_degradation(degradation), rng)
            encoded = encode_m4a(clip, rate)
            made[number] = LoadQuery(
                query_id=f"q{number:03d}-{degradation}",
                expected_content_id=ids[track_index],
                true_offset_s=start,
                audio=encoded,
                fingerprints=signal_kind.fingerprint_query(encoded).to_bytes(),
            )
    return [made[number] for number in sorted(made)]


def ensure_queries(
    tracks: Sequence[Track], ids: Sequence[str], count: int, cache_dir: Path
) -> list[LoadQuery]:
    """:func:`make_queries`, cached in ``cache_dir`` (the cache key covers every input)."""
    key = corpus_key(tracks, str(count), str(QUERY_LENGTH_S), DEGRADATION, str(SEED), *ids)
    root = cache_dir / "load-queries" / key
    meta = root / "queries.json"
    if meta.is_file():
        rows = json.loads(meta.read_text())
        return [
            LoadQuery(
                query_id=row["query_id"],
                expected_content_id=row["expected_content_id"],
                true_offset_s=row["true_offset_s"],
                audio=(root / f"{row['query_id']}.m4a").read_bytes(),
                fingerprints=(root / f"{row['query_id']}.acrf").read_bytes(),
            )
            for row in rows
        ]
    made = make_queries(tracks, ids, count)
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for query in made:
        (tmp / f"{query.query_id}.m4a").write_bytes(query.audio)
        (tmp / f"{query.query_id}.acrf").write_bytes(query.fingerprints)
    rows = [
        {
            "query_id": q.query_id,
            "expected_content_id": q.expected_content_id,
            "true_offset_s": q.true_offset_s,
        }
        for q in made
    ]
    (tmp / "queries.json").write_text(json.dumps(rows, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return made


# -- multipart bodies -------------------------------------------------------------------------

_BOUNDARY = "acr-load-" + "5f3c9e0b1d7a4e62"


def multipart_body(viewer_id: str, field_name: str, filename: str, mime: str, data: bytes) -> bytes:
    """A ``multipart/form-data`` body with ``viewer_id`` and one file (boundary :data:`_BOUNDARY`).

    Bodies are built once before the run, so the load generator spends its
    share of the CPU sending requests, not encoding forms.
    """
    head = (
        f"--{_BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="viewer_id"\r\n\r\n'
        f"{viewer_id}\r\n"
        f"--{_BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
        f"Content-Type: {mime}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{_BOUNDARY}--\r\n".encode()


MULTIPART_TYPE = f"multipart/form-data; boundary={_BOUNDARY}"


@dataclass(frozen=True)
class Request:
    body: bytes
    expected_content_id: str


def build_requests(queries: Sequence[LoadQuery], mode: str, per_query: int = 4) -> list[Request]:
    """``per_query`` request bodies per query (distinct viewer ids), in a seeded order."""
    requests: list[Request] = []
    for number, query in enumerate(queries):
        for copy in range(per_query):
            viewer = f"load-viewer-{(number * per_query + copy) % VIEWERS:04d}"
            if mode == "fingerprints":
                body = multipart_body(
                    viewer,
                    "fingerprints",
                    "sample.acrf",
                    "application/octet-stream",
                    query.fingerprints,
                )
            elif mode == "audio":
                body = multipart_body(viewer, "sample", "sample.m4a", "audio/mp4", query.audio)
            else:
                raise ValueError(f"unknown mode {mode!r}")
            requests.append(Request(body, query.expected_content_id))
    order = np.random.default_rng(SEED + 1).permutation(len(requests))
    return [requests[int(i)] for i in order]


# -- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def acr_command() -> list[str]:
    """How to run the ``acr`` command of this environment."""
    script = Path(sys.executable).with_name("acr")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from acr.cli import main; sys.exit(main())"]


@dataclass
class Server:
    """A running ``acr serve`` and what the benchmark set up for it."""

    base_url: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    viewer_key: str = ""
    admin_key: str = ""
    organisation_id: str = ""
    """Organisation of the benchmark's campaign (made with a campaign-manager key)."""
    registered_contents: int = 0
    registration: str = ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def server_env(data_dir: Path, index_dir: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACR_")}
    env.update(
        ACR_DATA_DIR=str(data_dir),
        ACR_INDEX_DIR=str(index_dir),
        ACR_MEDIA_DIR=str(data_dir / "media"),
        ACR_SECRET_KEY="load-benchmark-" + secrets.token_hex(8),
        # The benchmark is one viewer app sending hundreds of matches a second.
        ACR_RATE_LIMIT_PER_MINUTE=str(10**9),
        ACR_LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p),
    )
    if database_url:
        env["ACR_DATABASE_URL"] = database_url
    return env


def start_key(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """Start ``acr keys create ARGS --json`` in ``env``."""
    return subprocess.Popen(
        [*acr_command(), "keys", "create", *args, "--json"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_key(process: subprocess.Popen[str], field: str = "secret") -> str:
    """Wait for :func:`start_key`; ``field`` of its JSON answer (the secret by default)."""
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"acr keys create failed ({process.args!r}):\n{stderr}")
    value: str = json.loads(stdout.strip().splitlines()[-1])[field]
    return value


def create_key(env: dict[str, str], *args: str, field: str = "secret") -> str:
    """``acr keys create ARGS --json`` in ``env``; ``field`` of its answer (the secret)."""
    return finish_key(start_key(env, *args), field)


def register_index_contents(env: dict[str, str]) -> tuple[int, str]:
    """Make the service database know the indexed contents (ready), before the server starts.

    Uses :func:`acr.library.indexing.sync_from_index` (idempotent: if the server
    also runs it at start-up, it finds nothing left to do).
    """
    from acr.db.session import make_engine, session_factory
    from acr.library.indexing import sync_from_index
    from acr.settings import Settings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=Path(env["ACR_DATA_DIR"]),
        index_dir=Path(env["ACR_INDEX_DIR"]),
        database_url=env.get("ACR_DATABASE_URL", ""),
    )
    engine = make_engine(settings.database_url)
    try:
        count = sync_from_index(session_factory(engine), settings.index_path)
    finally:
        engine.dispose()
    return count, "acr.library.indexing.sync_from_index, before start-up"


def wait_ready(server: Server, probe: Callable[[httpx.Client], bool], timeout_s: float) -> str:
    """Wait until ``/readyz`` answers 200 (or, if there is no ``/readyz``, ``probe`` succeeds)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"acr serve exited with status {server.process.returncode}:\n"
                    + server.log_tail()
                )
            try:
                response = client.get("/readyz")
                if response.status_code == 200:
                    return "/readyz"
                if response.status_code == 404 and probe(client):
                    return "a successful match (no /readyz)"
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"the server was not ready within {timeout_s:.0f} s:\n{server.log_tail()}")


@contextmanager
def running_server(
    index_dir: Path,
    workers: int,
    *,
    database_url: str | None = None,
    ready_probe_body: bytes | None = None,
    timeout_s: float = 120.0,
) -> Iterator[Server]:
    """Copy the index into a fresh data dir, set the database up and run ``acr serve`` on it."""
    with tempfile.TemporaryDirectory(prefix="acr-load-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        served_index = data_dir / "index"
        shutil.copytree(index_dir, served_index, ignore=shutil.ignore_patterns("writer.lock"))
        env = server_env(data_dir, served_index, database_url)
        # The first key migrates the database; the others are made while the server starts.
        viewer_key = create_key(env, "--role", "viewer_app", "--app", "load-benchmark")
        registered, how = register_index_contents(env)
        port = free_port()
        log_path = data_dir / "server.log"
        with log_path.open("wb") as server_log:
            process = subprocess.Popen(
                [
                    *acr_command(),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                ],
                env=env,
                cwd=REPO_ROOT,
                stdout=server_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            admin = start_key(env, "--role", "admin", "--name", "load benchmark")
            manager = start_key(
                env, "--role", "campaign_manager", "--organisation", "load-benchmark"
            )
            admin_key = finish_key(admin)
            organisation_id = finish_key(manager, "organisation_id")
        except BaseException:
            stop_process(process)
            raise
        server = Server(
            base_url=f"http://127.0.0.1:{port}",
            data_dir=data_dir,
            env=env,
            process=process,
            log_path=log_path,
            viewer_key=viewer_key,
            admin_key=admin_key,
            organisation_id=organisation_id,
            registered_contents=registered,
            registration=how,
        )

        def probe(client: httpx.Client) -> bool:
            if ready_probe_body is None:
                return False
            response = client.post(
                "/v1/match",
                content=ready_probe_body,
                headers={"Content-Type": MULTIPART_TYPE, **bearer(viewer_key)},
            )
            return response.status_code == 200

        try:
            server.registration += f"; ready on {wait_ready(server, probe, timeout_s)}"
            yield server
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """Stop the server we started: SIGTERM to its process group, SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- a campaign on every content --------------------------------------------------------------


def create_campaign(server: Server, ids: Sequence[str]) -> str:
    """A running campaign with a whole-content trigger on each of ``ids``, via the API.

    The organisation was made by issuing it a campaign-manager key; the admin
    key creates the campaign in it and starts it. Returns a one-line description
    of what happened (the benchmark runs either way).
    """
    body: dict[str, Any] = {
        "organisation_id": server.organisation_id,
        "name": "Load benchmark",
        "advertiser": "Benchmarks Ltd",
        "triggers": [{"content_id": cid} for cid in ids],
        "payload": {
            "title": "You are listening to the benchmark",
            "url": "https://example.org/offer",
            "coupon_code": "LOAD",
        },
    }
    headers = bearer(server.admin_key)
    with httpx.Client(base_url=server.base_url, timeout=30.0, headers=headers) as client:
        try:
            created = client.post("/v1/campaigns", json=body)
            if created.status_code == 404:
                return "not created: the server has no /v1/campaigns yet"
            if created.status_code not in (200, 201):
                return (
                    f"not created: POST /v1/campaigns -> {created.status_code} {created.text[:300]}"
                )
            campaign_id = created.json().get("id")
            started = client.post(f"/v1/campaigns/{campaign_id}/start")
        except httpx.TransportError as error:
            return f"not created: {error}"
        if started.status_code not in (200, 201):
            return (
                f"created {campaign_id} (draft) but could not start it: POST /v1/campaigns/"
                f"{campaign_id}/start -> {started.status_code} {started.text[:200]}; "
                "measured without a running campaign"
            )
        status = started.json().get("status")
        return (
            f"{campaign_id}, {status}, created and started through /v1/campaigns: "
            f"whole-content triggers on all {len(ids)} contents, no caps"
        )


# -- CPU accounting ---------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuReading:
    """Cumulative CPU seconds: the whole machine (busy), the server's processes, this process."""

    busy_s: float
    server_s: float
    self_s: float


class CpuMeter:
    """Reads ``/proc`` to split the machine's CPU between the server, the load generator
    and everything else (other jobs on a shared machine). Readings are zero off Linux."""

    def __init__(self, server_group: int | None) -> None:
        self.server_group = server_group

    def read(self) -> CpuReading:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
            ticks = [int(x) for x in fields]
            busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
        except (OSError, ValueError, IndexError):
            return CpuReading(0.0, 0.0, 0.0)
        server = 0
        if self.server_group is not None:
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    rest = stat.read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                # after "pid (comm)": state ppid pgrp session ... utime(12) stime(13)
                if int(rest[2]) == self.server_group:
                    server += int(rest[11]) + int(rest[12])
        times = os.times()
        return CpuReading(busy / _CLOCK_TICKS, server / _CLOCK_TICKS, times.user + times.system)


# -- the core's own cost ----------------------------------------------------------------------


def core_costs(index_path: Path, queries: Sequence[LoadQuery], limit: int = 40) -> dict[str, float]:
    """CPU milliseconds per query of the core's two steps, in this process, without HTTP.

    ``match_fingerprints`` (both modes) and ``fingerprint_query`` of the encoded
    audio (audio mode only), over the first ``limit`` queries after one warm-up
    call of each. With ``cores`` cores, ``cores / cost`` bounds the matches per second
    any server could get out of the core.
    """
    from acr.index.store import Index
    from acr.signals.base import Fingerprints

    chosen = list(queries[:limit])
    signal_kind = AudioSignal()
    with Index.open(index_path, readonly=True) as index:
        parsed = [Fingerprints.from_bytes(q.fingerprints) for q in chosen]
        index.match_fingerprints(parsed[0], top_k=5)
        started = time.process_time()
        for fingerprints in parsed:
            index.match_fingerprints(fingerprints, top_k=5)
        match_ms = (time.process_time() - started) * 1e3 / len(parsed)
    signal_kind.fingerprint_query(chosen[0].audio)  # compiles (or loads) the peak picker
    started = time.process_time()
    for query in chosen:
        signal_kind.fingerprint_query(query.audio)
    extract_ms = (time.process_time() - started) * 1e3 / len(chosen)
    return {
        "queries": float(len(chosen)),
        "match_fingerprints_cpu_ms": match_ms,
        "fingerprint_query_m4a_cpu_ms": extract_ms,
    }


# -- the load generator -----------------------------------------------------------------------


@dataclass
class Sample:
    """One request of the measurement window."""

    latency_ms: float
    status: int
    correct: bool
    matched: bool
    campaigns: int
    server_ms: float | None


@dataclass
class CellResult:
    """One mode at one concurrency."""

    mode: str
    concurrency: int
    duration_s: float
    warmup_s: float
    requests: int = 0
    ok: int = 0
    errors: int = 0
    matched: int = 0
    correct: int = 0
    served: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    error_examples: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    server_elapsed_ms: dict[str, float] = field(default_factory=dict)
    generator_cpu_cores: float = 0.0
    """CPU the benchmark process used during the cell, in cores (taken from the server)."""
    server_cpu_cores: float = 0.0
    """CPU the server's processes used during the cell, in cores."""
    other_cpu_cores: float = 0.0
    """CPU used by everything else on the machine during the cell, in cores."""

    @property
    def matches_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def server_cpu_ms_per_answer(self) -> float:
        """Server CPU per 200 answer: its mean CPU use over the cell times the window's length,
        divided by the answers in the window (assumes the warm-up ran at the same rate)."""
        return 1e3 * self.server_cpu_cores * self.duration_s / self.ok if self.ok else 0.0

    @property
    def correct_rate(self) -> float:
        return self.correct / self.ok if self.ok else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "matches_per_s": self.matches_per_s,
            "correct_content_rate": self.correct_rate,
            "server_cpu_ms_per_answer": self.server_cpu_ms_per_answer,
        }


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    return {
        "p50": float(np.percentile(array, 50)),
        "p90": float(np.percentile(array, 90)),
        "p99": float(np.percentile(array, 99)),
        "max": float(array.max()),
        "mean": float(array.mean()),
    }


def _judge(status: int, body: bytes, expected: str, latency_ms: float) -> Sample:
    if status != 200:
        return Sample(latency_ms, status, False, False, 0, None)
    try:
        answer = json.loads(body)
        match = answer.get("match") or {}
        return Sample(
            latency_ms,
            200,
            match.get("content_id") == expected,
            bool(answer.get("matched")),
            len(answer.get("campaigns") or []),
            float(answer["elapsed_ms"]) if "elapsed_ms" in answer else None,
        )
    except (ValueError, AttributeError, TypeError):
        return Sample(latency_ms, -2, False, False, 0, None)  # 200 but not the contract's JSON


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests and reads the answers.

    The load generator shares the server's two cores, so it does the least a
    client can: each request's bytes are built before the run, and an answer is
    read by its status line, ``Content-Length`` (or chunks) and body, with no
    header objects. Measured against an httpx client on the same cell it takes
    a fraction of the CPU per request (``load generator CPU`` in the report).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request; its status and body. Reconnects when the server closed."""
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        if "content-length" in fields:
            body = await self._reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int((await self._reader.readuntil(b"\r\n")).strip(), 16):
                parts.append(await self._reader.readexactly(size + 2))
            await self._reader.readuntil(b"\r\n")
            body = b"".join(part[:-2] for part in parts)
        else:
            body = await self._reader.read()
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def prepared_request(host: str, port: int, key: str, body: bytes) -> bytes:
    """The bytes of a ``POST /v1/match`` with a multipart ``body``."""
    head = (
        f"POST /v1/match HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: {MULTIPART_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def run_cell(
    base_url: str,
    key: str,
    requests: Sequence[Request],
    mode: str,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    meter: CpuMeter | None = None,
) -> CellResult:
    """Closed loop: ``concurrency`` clients, each sending its next request when the last returns.

    Requests that complete inside ``[start + warmup_s, start + warmup_s + duration_s]``
    are counted; none starts after the window closes.
    """
    result = CellResult(mode, concurrency, duration_s, warmup_s)
    samples: list[Sample] = []
    problems: list[str] = []
    url = httpx.URL(base_url)
    host, port = url.host, url.port or 80
    prepared = [prepared_request(host, port, key, r.body) for r in requests]
    counter = iter(range(10**12))
    loop = asyncio.get_running_loop()
    meter = meter or CpuMeter(None)
    begin = loop.time()
    cpu_begin = meter.read()
    window_start = begin + warmup_s
    window_end = window_start + duration_s

    async def client_loop() -> None:
        connection = _Connection(host, port)
        try:
            while loop.time() < window_end:
                number = next(counter) % len(requests)
                sent = time.perf_counter()
                try:
                    async with asyncio.timeout(60.0):
                        status, body = await connection.exchange(prepared[number])
                except (
                    TimeoutError,
                    OSError,
                    ValueError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                ) as error:
                    connection.close()
                    sample = Sample((time.perf_counter() - sent) * 1e3, -1, False, False, 0, None)
                    if len(problems) < 5:
                        problems.append(f"{type(error).__name__}: {error}")
                else:
                    latency_ms = (time.perf_counter() - sent) * 1e3
                    sample = _judge(status, body, requests[number].expected_content_id, latency_ms)
                    if sample.status != 200 and len(problems) < 5:
                        problems.append(f"{status}: {body[:200]!r}")
                done = loop.time()
                if window_start <= done <= window_end:
                    samples.append(sample)
        finally:
            connection.close()

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    cpu_end = meter.read()
    wall = max(loop.time() - begin, 1e-9)
    result.generator_cpu_cores = (cpu_end.self_s - cpu_begin.self_s) / wall
    result.server_cpu_cores = (cpu_end.server_s - cpu_begin.server_s) / wall
    result.other_cpu_cores = max(
        0.0,
        (cpu_end.busy_s - cpu_begin.busy_s) / wall
        - result.generator_cpu_cores
        - result.server_cpu_cores,
    )

    result.requests = len(samples)
    result.ok = sum(1 for s in samples if s.status == 200)
    result.errors = result.requests - result.ok
    result.matched = sum(1 for s in samples if s.matched)
    result.correct = sum(1 for s in samples if s.correct)
    result.served = sum(1 for s in samples if s.campaigns > 0)
    result.statuses = {str(k): v for k, v in sorted(Counter(s.status for s in samples).items())}
    result.error_examples = problems
    result.latency_ms = percentiles([s.latency_ms for s in samples if s.status == 200])
    result.server_elapsed_ms = percentiles(
        [s.server_ms for s in samples if s.server_ms is not None]
    )
    return result


# -- report -----------------------------------------------------------------------------------


def _ms(stats: dict[str, float], key: str) -> str:
    value = stats.get(key)
    return "–" if value is None or not math.isfinite(value) else f"{value:.1f}"


def table_rows(cells: Sequence[CellResult]) -> list[list[str]]:
    return [
        [
            cell.mode,
            str(cell.concurrency),
            str(cell.requests),
            f"{cell.matches_per_s:.1f}",
            _ms(cell.latency_ms, "p50"),
            _ms(cell.latency_ms, "p99"),
            str(cell.errors),
            f"{100.0 * cell.correct_rate:.1f} %" if cell.ok else "–",
        ]
        for cell in cells
    ]


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]
) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def evaluate_targets(cells: Sequence[CellResult]) -> list[dict[str, Any]]:
    """The targets: best throughput per mode, p99 at concurrency 8 per mode."""

    def best(mode: str) -> float | None:
        rates = [c.matches_per_s for c in cells if c.mode == mode and c.ok]
        return max(rates) if rates else None

    targets: list[dict[str, Any]] = []
    for mode, goal in (("fingerprints", TARGET_FINGERPRINT_RPS), ("audio", TARGET_AUDIO_RPS)):
        value = best(mode)
        targets.append(
            {
                "target": f"{mode} uploads, matches/s (best concurrency)",
                "goal": f">= {goal:g}",
                "measured": value,
                "unit": "/s",
                "pass": value is not None and value >= goal,
            }
        )
    for mode in MODES:
        cell = next(
            (c for c in cells if c.mode == mode and c.concurrency == TARGET_P99_CONCURRENCY), None
        )
        value = cell.latency_ms.get("p99") if cell is not None else None
        targets.append(
            {
                "target": f"{mode} uploads, p99 at concurrency {TARGET_P99_CONCURRENCY}",
                "goal": f"<= {TARGET_P99_MS:g} ms",
                "measured": value,
                "unit": " ms",
                "pass": value is not None and value <= TARGET_P99_MS,
            }
        )
    return targets


def busy_note(cells: Sequence[CellResult]) -> list[str]:
    """A warning when other work took a noticeable share of the CPU during the cells."""
    busiest = max((cell.other_cpu_cores for cell in cells), default=0.0)
    if busiest < 0.2:
        return []
    mean = sum(cell.other_cpu_cores for cell in cells) / len(cells)
    return [
        f"**Other work was running on this shared machine**: processes that are neither the "
        f"server nor the load generator used {mean:.2f} cores on average during the cells "
        f"(up to {busiest:.2f}; see the last columns below), so the numbers are lower than on "
        "an idle machine.",
        "",
    ]


def render_markdown(run: dict[str, Any], cells: Sequence[CellResult]) -> str:
    machine = run["machine"]
    lines = [
        "# Load benchmark: `POST /v1/match` over loopback",
        "",
        f"`{run['command']}` — {run['date']}, commit `{(run['commit'] or 'unknown')[:10]}`.",
        "",
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
        f"{machine['memory_gb']:.1f} GB; Python {machine['python']}; load average "
        f"{', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])} at start, "
        f"{', '.join(f'{x:.2f}' for x in machine['load_average_at_end'])} at the end.",
        "",
        *busy_note(cells),
        f"**The load generator runs in the benchmark process on the same "
        f"{machine['usable_cores']} cores as the server** (asyncio streams, one keep-alive "
        "connection per client, each request's bytes built beforehand); what it spends is "
        "taken from the server, so the numbers are a lower bound of what the server alone "
        "would sustain.",
        "",
        "## Set-up",
        "",
        f"* Server: `acr serve --workers {run['server']['workers']}` on 127.0.0.1, "
        f"database {run['server']['database']}; index copied into a fresh data directory.",
        f"* Index: {run['index']['contents']} contents, {run['index']['hours']:.2f} h of audio "
        f"({run['corpus']}), built with {run['index']['method']}"
        + (
            " (reused from the cache)"
            if run["index"]["cached"]
            else f" in {run['index']['build_s']:.0f} s"
        )
        + ".",
        f"* Contents registered in the library: {run['server']['registered_contents']} "
        f"({run['server']['registration']}).",
        f"* Campaign: {run['campaign']}.",
        f"* Queries: {run['queries']['count']} distinct {run['queries']['length_s']:g} s excerpts "
        f"with {run['queries']['degradation']}, seed {run['queries']['seed']}; audio uploads "
        f"send {run['queries']['audio_format']} (mean {run['queries']['audio_bytes_mean']:.0f} "
        f"bytes), fingerprint uploads send the wire format computed on the client from the same "
        f"bytes (mean {run['queries']['fingerprint_bytes_mean']:.0f} bytes); "
        f"{VIEWERS} viewer ids in rotation.",
        f"* Each cell: closed loop at fixed concurrency, {run['warmup_s']:g} s warm-up, then "
        f"{run['duration_s']:g} s measured; requests completing in the window count. "
        "Latency is client-side wall time (send to last byte of the answer). "
        '"matches/s" counts 200 answers per second (matched or not); '
        '"correct content" is the share of 200 answers that name the content the excerpt '
        "was cut from; errors are non-200 answers and transport failures.",
        "",
        "## Results",
        "",
    ]
    costs = run["core_costs"]
    cores = max(1, int(machine["usable_cores"] or 1))
    match_ms = costs["match_fingerprints_cpu_ms"]
    audio_ms = match_ms + costs["fingerprint_query_m4a_cpu_ms"]
    lines += markdown_table(
        TABLE_COLUMNS,
        table_rows(cells),
        ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:"],
    )
    lines += [
        "",
        f"What the core alone costs (CPU per query in the benchmark process, no HTTP, no "
        f"database, {costs['queries']:.0f} of the queries): `match_fingerprints` "
        f"{match_ms:.1f} ms, `fingerprint_query` of the M4A bytes "
        f"{costs['fingerprint_query_m4a_cpu_ms']:.1f} ms. On {cores} cores that caps any server "
        f"at about {cores * 1000 / match_ms:.0f} matches/s with fingerprint uploads and "
        f"{cores * 1000 / audio_ms:.0f}/s with audio uploads.",
        "",
        "## Targets",
        "",
    ]
    target_rows = [
        [
            t["target"],
            t["goal"],
            "–" if t["measured"] is None else f"{t['measured']:.1f}{t['unit']}",
            "pass" if t["pass"] else "FAIL",
        ]
        for t in run["targets"]
    ]
    lines += markdown_table(
        ["target", "goal", "measured", "result"], target_rows, ["---", "---:", "---:", ":---:"]
    )
    if run.get("quick"):
        lines += ["", "Quick run: a subset of the corpus and short cells, not the target set-up."]
    server_rows = [
        [
            cell.mode,
            str(cell.concurrency),
            _ms(cell.server_elapsed_ms, "p50"),
            _ms(cell.server_elapsed_ms, "p99"),
            f"{100.0 * cell.matched / cell.ok:.1f} %" if cell.ok else "–",
            f"{100.0 * cell.served / cell.ok:.1f} %" if cell.ok else "–",
            f"{cell.server_cpu_cores:.2f}",
            f"{cell.server_cpu_ms_per_answer:.1f}" if cell.ok else "–",
            f"{cell.generator_cpu_cores:.2f}",
            f"{cell.other_cpu_cores:.2f}",
        ]
        for cell in cells
    ]
    lines += [
        "",
        "Server-side view: `elapsed_ms` of the answers, from the start of identification to "
        "the answer (fingerprinting for audio, index lookup, campaign serving and its "
        "engagement write, including waits for the per-process index lock and the database "
        "write lock; not HTTP, upload reading, authentication or the wait for a worker "
        "thread), what the answers held, and where the machine's CPU went during each cell "
        "(in cores: the server's processes, the load generator, everything else):",
        "",
    ]
    lines += markdown_table(
        [
            "mode",
            "concurrency",
            "server p50 ms",
            "server p99 ms",
            "matched",
            "campaigns served",
            "server CPU",
            "server CPU ms/answer",
            "load generator CPU",
            "other CPU",
        ],
        server_rows,
        ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"],
    )
    examples = [(c, e) for c in cells for e in c.error_examples]
    if examples:
        lines += ["", "Errors seen (first few per cell):", ""]
        lines += [f"* {c.mode} × {c.concurrency}: `{e}`" for c, e in examples]
    return "\n".join(lines) + "\n"


# -- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadConfig:
    """Everything one run needs; :func:`main` builds it from the command line."""

    tracks: tuple[Track, ...]
    corpus: str
    """What the tracks are, for the report."""
    out_dir: Path
    stem: str
    cache_dir: Path
    workers: int
    duration_s: float
    warmup_s: float
    queries: int
    concurrencies: tuple[int, ...] = CONCURRENCIES
    modes: tuple[str, ...] = MODES
    database_url: str | None = None
    command: str = "python -m benchmarks.load"
    quick: bool = False


def run_load(config: LoadConfig) -> dict[str, Any]:
    """Run the benchmark and write ``<stem>.md`` and ``<stem>.json``; the JSON payload."""
    machine = machine_info()
    log(f"index of {len(config.tracks)} tracks ({config.corpus})")
    built = ensure_index(config.tracks, config.cache_dir)
    log(
        f"index {'reused' if built.cached else 'built'}: {built.path} "
        f"({built.method}, {built.build_s:.1f} s)"
    )
    queries = ensure_queries(config.tracks, built.content_ids, config.queries, config.cache_dir)
    log(f"{len(queries)} queries ready")
    costs = core_costs(built.path, queries)
    log(
        f"core CPU per query: match_fingerprints {costs['match_fingerprints_cpu_ms']:.1f} ms, "
        f"fingerprint_query (M4A) {costs['fingerprint_query_m4a_cpu_ms']:.1f} ms"
    )
    bodies = {mode: build_requests(queries, mode) for mode in config.modes}
    cells: list[CellResult] = []
    with running_server(
        built.path,
        config.workers,
        database_url=config.database_url,
        ready_probe_body=bodies[config.modes[0]][0].body,
    ) as server:
        log(f"server up at {server.base_url} ({server.registration})")
        campaign = create_campaign(server, built.content_ids)
        log(f"campaign: {campaign}")
        for mode in config.modes:
            for concurrency in config.concurrencies:
                cell = asyncio.run(
                    run_cell(
                        server.base_url,
                        server.viewer_key,
                        bodies[mode],
                        mode,
                        concurrency,
                        config.warmup_s,
                        config.duration_s,
                        CpuMeter(server.process.pid),
                    )
                )
                cells.append(cell)
                log(
                    f"{mode:>12} x {concurrency:>2}: {cell.requests} requests, "
                    f"{cell.matches_per_s:.1f}/s, p50 {_ms(cell.latency_ms, 'p50')} ms, "
                    f"p99 {_ms(cell.latency_ms, 'p99')} ms, {cell.errors} errors, "
                    f"correct {100 * cell.correct_rate:.1f} %"
                )
        if server.process.poll() is not None:
            raise RuntimeError(f"the server died during the run:\n{server.log_tail()}")
        server_log = server.log_tail(20)
        registered = server.registered_contents
        registration = server.registration
        database = "PostgreSQL" if (config.database_url or "").startswith("postgres") else "SQLite"
    durations = [t.duration_s for t in config.tracks]
    run: dict[str, Any] = {
        "command": config.command,
        "date": utc_now(),
        "commit": git_commit(),
        "machine": {**machine, "load_average_at_end": list(os.getloadavg())},
        "quick": config.quick,
        "corpus": config.corpus,
        "index": {
            "contents": len(built.content_ids),
            "hours": sum(durations) / 3600.0,
            "method": built.method,
            "build_s": built.build_s,
            "cached": built.cached,
        },
        "server": {
            "workers": config.workers,
            "database": database,
            "registered_contents": registered,
            "registration": registration,
            "log_tail": server_log,
        },
        "campaign": campaign,
        "queries": {
            "count": len(queries),
            "length_s": QUERY_LENGTH_S,
            "degradation": f"{DEGRADATION} ({get_degradation(DEGRADATION).description})",
            "seed": SEED,
            "audio_format": AUDIO_FORMAT,
            "audio_bytes_mean": float(np.mean([len(q.audio) for q in queries])),
            "fingerprint_bytes_mean": float(np.mean([len(q.fingerprints) for q in queries])),
        },
        "warmup_s": config.warmup_s,
        "duration_s": config.duration_s,
        "load_generator": "same cores as the server: asyncio streams, prepared requests",
        "core_costs": costs,
        "targets": evaluate_targets(cells),
    }
    payload = {"run": run, "cells": [cell.to_dict() for cell in cells], "columns": TABLE_COLUMNS}
    config.out_dir.mkdir(parents=True, exist_ok=True)
    (config.out_dir / f"{config.stem}.md").write_text(render_markdown(run, cells))
    (config.out_dir / f"{config.stem}.json").write_text(
        json.dumps(payload, indent=1, allow_nan=False)
    )
    return payload


def summary_lines(payload: dict[str, Any]) -> list[str]:
    lines = []
    for cell in payload["cells"]:
        lat = cell["latency_ms"]
        p50, p99 = lat.get("p50", math.nan), lat.get("p99", math.nan)
        lines.append(
            f"{cell['mode']:>12} x {cell['concurrency']:>2}: {cell['matches_per_s']:7.1f} matches/s"
            f"  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  errors {cell['errors']}"
            f"  correct {100 * cell['correct_content_rate']:.1f} %"
        )
    for target in payload["run"]["targets"]:
        measured = target["measured"]
        shown = "–" if measured is None else f"{measured:.1f}{target['unit']}"
        verdict = "pass" if target["pass"] else "FAIL"
        lines.append(f"{verdict}: {target['target']} {target['goal']}: {shown}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a corpus subset, short cells")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="server processes (default: cores)"
    )
    parser.add_argument("--duration", type=float, help="measured seconds per cell (20; quick 3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (3; quick 1)")
    parser.add_argument(
        "--concurrency",
        default=",".join(map(str, CONCURRENCIES)),
        help="comma-separated concurrencies",
    )
    parser.add_argument("--database-url", help="service database (SQLite in the data dir if unset)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)
    np.seterr(all="ignore")

    corpus = ensure_corpus(args.cache)
    refs = list(corpus.references)
    if args.quick:
        refs = [refs[i] for i in qs.select_tracks(6, len(refs))]
    packages = ", ".join(f"{p.package} {p.version}" for p in corpus.packages[:2])
    command = "python -m benchmarks.load" + (" --quick" if args.quick else "")
    if args.workers != (os.cpu_count() or 1):
        command += f" --workers {args.workers}"
    if args.duration is not None:
        command += f" --duration {args.duration:g}"
    config = LoadConfig(
        tracks=tuple(refs),
        corpus=f"{'a subset of ' if args.quick else ''}the benchmark references: {packages}",
        out_dir=args.out,
        stem="load-quick" if args.quick else "load",
        cache_dir=args.cache,
        workers=args.workers,
        duration_s=args.duration if args.duration is not None else (3.0 if args.quick else 20.0),
        warmup_s=args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0),
        queries=12 if args.quick else 2 * len(refs),
        concurrencies=tuple(int(c) for c in args.concurrency.split(",") if c.strip()),
        database_url=args.database_url,
        command=command,
        quick=args.quick,
    )
    payload = run_load(config)
    print("\n".join(summary_lines(payload)))
    print(f"wrote {config.out_dir / config.stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
