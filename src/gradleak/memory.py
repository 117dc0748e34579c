"""Peak memory of a block of work, for the `peak_memory_bytes` of results.

The number is the process's peak resident set size while the block ran: what the
machine had to provide, including the interpreter, PyTorch and the model (an
attack's own growth hides in allocator caches once a process has run another
one, so a difference would under-report). On Linux a daemon thread samples
/proc/self/statm every few milliseconds (a spike shorter than that can be missed);
elsewhere it is the process's high-water mark from getrusage, which can include
an earlier, larger peak.
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
    """Context manager; `.bytes` holds the peak resident memory of the process inside the block."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.bytes = 0

    def __enter__(self) -> "PeakMemory":
        self._peak = _rss()
        self._done = threading.Event()
        if self._peak is not None:
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
        if self._peak is not None:
            self._thread.join()
            self.bytes = max(self._peak, _rss() or 0)
        else:
            self.bytes = _max_rss()


def physical_bytes() -> int | None:
    """The machine's physical memory, or None where the platform does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(what: str, nbytes: float, fix: str = "") -> None:
    """Refuse, before allocating, work whose tensors alone exceed the machine's memory."""
    from gradleak.errors import GradleakError

    total = physical_bytes()
    if total is not None and nbytes > total:
        raise GradleakError(f"{what} needs about {nbytes / 2**30:,.1f} GiB, more than this machine's "
                            f"{total / 2**30:,.1f} GiB{'; ' + fix if fix else ''}")
