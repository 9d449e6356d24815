"""Measuring, not counting: the time of calls compared in one run, and the peak memory of a call.

`cost.py` says what a step should cost by formula; this module measures what a call does on this
machine. Speed is compared as ratios of calls timed in turn in the same run, never as absolute
seconds: the machine's load moves absolute times, and moves interleaved calls alike.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def time_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int = 5, sync: Callable[[], None] = lambda: None, settle: bool = False
) -> dict[str, list[float]]:
    """Seconds of each call, running the functions in turn `repeats` times after one warm-up each.

    Interleaving makes whatever else the machine does hit all of them alike, so their ratios are
    fairer than their absolute times; compare medians of the per-round ratios.
    settle: before each timed call, call the same function once untimed. A call's time depends a
    little on what ran just before it (the memory it freed, which the allocator may have handed
    back to the operating system, the caches it filled); after a call of itself, each function is
    timed in its own steady state, as when it runs over a data set.
    """
    for fn in fns.values():
        fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if settle:
                fn()
                sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over rounds of times[name] / times[reference] (from `time_interleaved`)."""
    return statistics.median(a / b for a, b in zip(times[name], times[reference]))


class _PeakMemory(TorchDispatchMode):
    """Counts the bytes of every tensor storage created under it, and frees them as they die."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # a view or an in-place result shares an input's storage: nothing new was allocated
        inputs = {
            t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if storage.nbytes() and key not in self.live and key not in inputs:
                    self.live[key] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(storage, self._free, key)
        return out


def peak_memory(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Peak bytes of tensors allocated while `fn(*args, **kwargs)` runs (inputs and weights excluded).

    Counted by watching every tensor PyTorch creates and frees, so it is exact and deterministic,
    unlike the process's resident memory; it works on any device.
    """
    with _PeakMemory() as mode:
        result = fn(*args, **kwargs)
    del result
    return mode.peak
