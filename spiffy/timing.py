"""Time spent inside model forwards, without making the host wait for the device."""
from __future__ import annotations

import time

import torch


class ForwardClock:
    """Seconds spent inside model forwards without stalling the host: CUDA events on a GPU (read once, at
    the end of the decode), perf_counter on the CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.seconds, self.pending = 0.0, []

    def start(self):
        if not self.cuda:
            return time.perf_counter()
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def stop(self, t0) -> None:
        if not self.cuda:
            self.seconds += time.perf_counter() - t0
            return
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        self.pending.append((t0, ev))

    def total(self) -> float:
        """All forwards' seconds (on a GPU: waits for the last recorded forward to finish)."""
        if self.pending:
            self.pending[-1][1].synchronize()
            self.seconds += sum(a.elapsed_time(b) for a, b in self.pending) / 1000
            self.pending = []
        return self.seconds
