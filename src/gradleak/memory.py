"""Peak memory of a block of work, for the `peak_memory_bytes` of results.

On Linux a daemon thread samples the resident set size (/proc/self/statm) every few
milliseconds and reports the peak above the level at entry: the memory the block
itself added, including what PyTorch's CPU allocator held. Elsewhere, the growth of
the process's high-water mark (getrusage), which is 0 when the block stayed below an
earlier peak. Sampling can miss a spike shorter than the interval.
"""

from __future__ import annotations

import os
import resource
import sys
import threading

_STATM = "/proc/self/statm"


def _rss() -> int | None:
    try:
        with open(_STATM) as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _max_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """Context manager; `.bytes` holds the peak resident memory added inside the block."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.bytes = 0

    def __enter__(self) -> "PeakMemory":
        self._start = _rss()
        self._peak = self._start or 0
        self._base_max = _max_rss()
        self._done = threading.Event()
        if self._start is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            now = _rss()
            if now is not None and now > self._peak:
                self._peak = now

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._start is not None:
            self._thread.join()
            now = _rss() or 0
            self.bytes = max(self._peak, now) - self._start
        else:
            self.bytes = max(0, _max_rss() - self._base_max)
