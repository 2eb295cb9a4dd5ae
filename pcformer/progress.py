"""Progress on stderr for stages that take more than a moment.

A stage that ends within `delay` seconds prints nothing (a bad flag still gets exactly one line
of error). A longer one shows a live line on a terminal, and ends with a complete line
"name: stage  12.3 s" on any stream, so a result or an error never shares a progress line.
"""
from __future__ import annotations

import sys
import threading
import time


class Progress:
    """`with Progress("mpcformer") as p: p.stage("trace"); ...; p.done()`."""

    def __init__(self, name: str, stream=None, delay: float = 1.0):
        self.name, self.delay = name, delay
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._label, self._t0, self._live = None, 0.0, False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.tty:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def _tick(self):
        while not self._stop.wait(0.5):
            with self._lock:
                if self._label is not None and time.perf_counter() - self._t0 > self.delay:
                    s = f"\r{self.name}: {self._label} ... {time.perf_counter() - self._t0:.0f} s"
                    self.stream.write(s)
                    self.stream.flush()
                    self._live = True

    def _end(self):
        """Close the current stage: a full line if it took long, and the live line ended."""
        if self._label is None:
            return
        dt = time.perf_counter() - self._t0
        if dt > self.delay:
            line = f"{self.name}: {self._label}  {dt:.1f} s"
            if self.tty:
                line = ("\r" if self._live else "") + line + "\033[K"
            self.stream.write(line + "\n")
            self.stream.flush()
        self._live, self._label = False, None

    def stage(self, label: str) -> None:
        """Start a stage (ending the one before)."""
        with self._lock:
            self._end()
            self._label, self._t0 = label, time.perf_counter()

    def done(self) -> None:
        with self._lock:
            self._end()

    def __exit__(self, *exc):
        self._stop.set()
        with self._lock:
            if exc[0] is not None and self._live:
                self.stream.write("\n")  # an error starts on a line of its own
                self.stream.flush()
            self._live, self._label = False, None
        return False
