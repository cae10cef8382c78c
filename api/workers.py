"""``acr serve --workers N``: uvicorn's worker processes, each with a listening socket of its own.

uvicorn binds one socket in the parent and every worker accepts from it. A
worker woken by a waiting connection accepts every connection waiting (asyncio
and uvloop accept in a loop), so a burst of clients opening keep-alive
connections at once lands in one process: in the load benchmark, all eight
connections at concurrency 8 went to one of the two workers, which worked
through them one match at a time while the other core idled.

Here each worker binds its own socket to the same address with
``SO_REUSEPORT``, and the kernel spreads new connections across the workers'
sockets by a hash of the connection's addresses. uvicorn still supervises the
workers (restarts, signals, health checks): it hands its socket list to each
worker it starts by pickling, and :class:`WorkerSocket` pickles as "bind a new
socket like me".
"""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("uvicorn.error")


class WorkerSocket(socket.socket):
    """A TCP socket bound with ``SO_REUSEPORT``; a pickled copy binds a new one, not a dup."""

    @classmethod
    def bound(cls, host: str, port: int) -> WorkerSocket:
        """A socket bound to ``(host, port)``; port 0 picks a free port once, for every worker."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = cls(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def __reduce__(self) -> tuple[object, tuple[str, int]]:
        host, port = self.getsockname()[:2]
        return (WorkerSocket.bound, (host, port))


def serve(config: uvicorn.Config) -> None:
    """Run ``config.workers`` worker processes under uvicorn's supervisor until a signal.

    The parent's socket is bound but never listens, so it takes no connections;
    it holds the address (and the port, when 0 was asked) for the workers' sockets.
    """
    try:
        parent = WorkerSocket.bound(config.host, config.port)
    except OSError as error:
        logger.error(error)
        sys.exit(STARTUP_FAILURE)
    host, port = parent.getsockname()[:2]
    shown = f"[{host}]" if parent.family == socket.AF_INET6 else host
    logger.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, port)
    try:
        Multiprocess(config, sockets=[parent]).run()
    finally:
        parent.close()
