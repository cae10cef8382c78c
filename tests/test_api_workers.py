"""``acr serve --workers N``: each worker listens on a socket of its own, and connections spread."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import httpx
import pytest

from api.workers import WorkerSocket
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreading and /proc are Linux's"
)


def test_a_pickled_worker_socket_is_a_new_socket_on_the_same_address() -> None:
    # uvicorn hands sockets to its spawned workers through multiprocessing's pickler.
    with (
        WorkerSocket.bound("127.0.0.1", 0) as parent,
        pickle.loads(ForkingPickler.dumps(parent)) as child,
    ):
        assert isinstance(child, WorkerSocket)
        assert child.fileno() != parent.fileno()
        assert child.getsockname() == parent.getsockname()
        assert child.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1


def test_the_kernel_spreads_connections_over_the_workers_sockets() -> None:
    with WorkerSocket.bound("127.0.0.1", 0) as parent:
        listeners = [pickle.loads(pickle.dumps(parent)) for _ in range(2)]
        for listener in listeners:
            listener.listen(64)
            listener.setblocking(False)
        clients = [socket.create_connection(parent.getsockname()[:2]) for _ in range(32)]
        accepted = Counter[int]()
        for number, listener in enumerate(listeners):
            while True:
                try:
                    connection, _ = listener.accept()
                except BlockingIOError:
                    break
                accepted[number] += 1
                connection.close()
        for sock in [*clients, *listeners]:
            sock.close()
    # All 32 on one socket would happen about once in two thousand million runs.
    assert accepted[0] + accepted[1] == 32
    assert accepted[0] > 0 and accepted[1] > 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _sockets(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets on local ``port`` in ``state`` (01 established, 0A listening)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                found.add(fields[9])
    return found


def _connections_by_process(pids: list[int], port: int) -> Counter[int]:
    """Established TCP connections on local ``port`` held by each of ``pids``."""
    established = _sockets(port, "01")
    held = Counter[int]()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in established:
                held[pid] += 1
    return held


def test_acr_serve_spreads_keep_alive_connections_over_its_workers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACR_")}
    env.update(ACR_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "acr", "serve", "--workers", "2", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    clients: list[httpx.Client] = []
    try:
        deadline = time.monotonic() + 120
        while len(_sockets(port, "0A")) < 2:  # each worker's own listening socket
            assert server.poll() is None, "acr serve exited"
            assert time.monotonic() < deadline, "the workers did not start listening"
            time.sleep(0.2)
        # Sixteen clients, each on one keep-alive connection, opened at once.
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{port}") for _ in range(16)]
        assert all(client.get("/healthz").status_code == 200 for client in clients)
        held = _connections_by_process(_children(server.pid), port)
        assert sum(held.values()) == 16
        assert len(held) == 2, held
    finally:
        for client in clients:
            client.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
