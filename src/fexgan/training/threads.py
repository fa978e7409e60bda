"""The CPU thread count that makes training fastest on this machine, found while training.

On an idle machine every core helps. On a shared one (other jobs on the same cores) each extra
OpenMP thread can stall every parallel operator while it waits for a core, so one thread can be
several times faster than two (benchmarks/RESULTS.md, "Training speed"). `ThreadTuner` runs real
training steps with each candidate thread count in turn, keeps the fastest, and checks again every
`every_s` seconds, because the load of a shared machine changes.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def candidate_threads(max_threads: int) -> list[int]:
    """1, 2, 4, ... below `max_threads`, and `max_threads` itself."""
    return sorted({max_threads, *(2 ** k for k in range(max(1, max_threads).bit_length()) if 2 ** k < max_threads)})


class ThreadTuner:
    """Call it with the step function: `losses = tuner(train_step, ...)`. Disabled, it just calls.

    A probe round runs up to `probe` steps per candidate, interleaved (so a change in load hits all
    alike), after `warmup` plain steps (the first ones pick kernels and are slow); a candidate
    slower than twice the fastest step seen is dropped from the round at once, so a bad setting
    costs about one step. The median decides.
    """

    def __init__(self, max_threads: int, enabled: bool = True, probe: int = 3, every_s: float = 60.0,
                 warmup: int = 2):
        self.candidates = candidate_threads(max_threads) if enabled else [max_threads]
        self.probe, self.every_s, self.warmup = probe, every_s, warmup
        self.best = max_threads
        self.next_probe = 0.0                    # perf_counter time of the next probe round
        self.queue: list[int] = []               # thread counts still to try in this round
        self.times: dict[int, list[float]] = {}
        self.last_probe: dict[int, float] = {}   # median seconds per step of each candidate, last round

    @property
    def tuning(self) -> bool:
        """A probe round is under way or due at the next step."""
        return bool(self.queue) or (len(self.candidates) > 1 and self.warmup <= 0
                                    and time.perf_counter() >= self.next_probe)

    def __call__(self, fn: Callable[..., T], *args, **kwargs) -> T:
        if not self.queue and self.tuning:
            self.queue, self.times = self.candidates * self.probe, {}
        if not self.queue:
            self.warmup -= 1
            return fn(*args, **kwargs)
        threads = self.queue.pop(0)
        torch.set_num_threads(threads)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.times.setdefault(threads, []).append(time.perf_counter() - start)
            fastest = min(min(s) for s in self.times.values())
            self.queue = [t for t in self.queue if min(self.times.get(t, [fastest])) <= 2 * fastest]
            if not self.queue:
                self.last_probe = {t: statistics.median(s) for t, s in self.times.items()}
                self.best = min(self.last_probe, key=self.last_probe.__getitem__)
                self.next_probe = time.perf_counter() + self.every_s
            torch.set_num_threads(self.best)
