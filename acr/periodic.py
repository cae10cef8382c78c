"""A function run every few seconds in a daemon thread, stopped cleanly."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("acr.periodic")


class PeriodicTask:
    """Call ``tick`` every ``interval_s`` seconds until :meth:`stop`.

    ``tick`` returns True when it did work and should run again at once (a
    queue being drained), False to wait the interval. An exception is logged
    and the task goes on: one bad tick must not stop the service's schedule.
    """

    def __init__(self, name: str, tick: Callable[[], bool], interval_s: float) -> None:
        self.name = name
        self._tick = tick
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> PeriodicTask:
        self._thread.start()
        return self

    def wake(self) -> None:
        """Run the next tick now (new work arrived)."""
        self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self._tick()
            except Exception:
                log.exception("%s: tick failed", self.name)
                busy = False
            if not busy:
                self._wake.wait(self._interval_s)
                self._wake.clear()
