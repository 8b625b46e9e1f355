"""Progress on stderr: a bar redrawn in place on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(
        self, total_bytes: int, start_offset: int, stream: TextIO | None = None, every_s: float = 5.0
    ):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total, self.start_offset = max(total_bytes, 1), start_offset
        self.started = self.last = time.monotonic()
        self.every = 0.2 if self.tty else every_s
        self.shown = False

    def line(self, offset: int, rows: int, rejected: int) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done = offset - self.start_offset
        rate = rows / elapsed
        left = self.total - offset
        eta = _clock(left / (done / elapsed)) if done > 0 else "?"
        pct = 100.0 * offset / self.total
        text = f"{pct:5.1f}%  {rows:,} rows  {rate:,.0f} rows/s  ETA {eta}  rejected {rejected:,}"
        if self.tty:
            filled = int(30 * offset / self.total)
            text = f"[{'#' * filled}{'.' * (30 - filled)}] {text}"
        return text

    def update(self, offset: int, rows: int, rejected: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            self.stream.write("\r" + self.line(offset, rows, rejected) + "\x1b[K")
            self.shown = True
        else:
            self.stream.write("cml-import: " + self.line(offset, rows, rejected) + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
