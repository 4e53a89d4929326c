"""Things the serving benchmarks watch while the load runs: a background thread that samples every `every_s`."""

from __future__ import annotations

import abc
import threading

import psutil


class PeriodicSampler(abc.ABC):
    """Calls `sample()` every `every_s` seconds in a background thread, between `with` entry and exit."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @abc.abstractmethod
    def sample(self) -> None:
        """Take one sample (runs in the background thread)."""

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeriodicSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class PeakMemory(PeriodicSampler):
    """Largest summed RSS of a process and its descendants."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        super().__init__(every_s)
        self.root, self.peak = psutil.Process(pid), 0

    def sample(self) -> None:
        rss = 0
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                rss += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        self.peak = max(self.peak, rss)
