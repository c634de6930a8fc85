"""Check a ``--device`` before anything loads: one clear line naming the devices this machine has."""
from __future__ import annotations

from .errors import ConfigError


def available_devices() -> list:
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(device) -> str:
    """Return ``device`` as given when this machine has it; otherwise raise :class:`ConfigError`."""
    import torch

    have = available_devices()
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"--device {device!r} is not a device name; this machine has: {', '.join(have)}") from None
    if d.type == "cpu":
        return str(device)
    if d.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (d.index is not None and d.index >= n):
            raise ConfigError(f"--device {device!r} is not available here; this machine has: {', '.join(have)}")
        return str(device)
    if d.type == "mps" and "mps" in have:
        return str(device)
    raise ConfigError(f"--device {device!r} is not available here; this machine has: {', '.join(have)}")


def to_device(t, device):
    """A host tensor onto ``device`` without making the host wait for the device: on CUDA through pinned memory
    with a non-blocking copy (a plain upload from pageable memory waits for the stream); elsewhere ``t.to``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


STATIC_GRAPHS = 64   # graphs one compiled function may hold: one per shape (prompt lengths, budgets, layouts)


def compile_static(fn, mode=None, fullgraph: bool = True):
    """``torch.compile(fn, fullgraph=True, dynamic=False)``: one graph per input shape, a graph break an error.
    Every new shape is a recompile, and torch refuses more than 8 per function by default (with fullgraph: a hard
    failure), which a decode of prompts of a dozen lengths would reach; the limit is raised to
    :data:`STATIC_GRAPHS` (a process-wide torch setting, never lowered)."""
    import torch
    import torch._dynamo

    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, STATIC_GRAPHS)
    return torch.compile(fn, mode=mode, fullgraph=fullgraph, dynamic=False)
