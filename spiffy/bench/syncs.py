"""Count the host-device synchronisations a decode would make on a GPU, on any device.

On a GPU, the host waits for the device whenever it reads a device value: ``.item()``, ``.tolist()``,
``bool()``/``int()``/``float()`` of a tensor, ``.cpu()``, ``torch.equal``, ``nonzero`` (its output
size is data-dependent), and a non-pinned upload of host data (``torch.tensor(..., device=...)``) waits for the
stream too. :func:`count_host_syncs` wraps those entry points for the duration of a block and counts the calls
made on tensors (CPU tensors included, so the count is the same on this machine as on a GPU), plus explicit
``torch.cuda.synchronize`` calls. Reads of tensors that already live on the host are not syncs on a GPU either;
reads of the host copies the decoder keeps (lists, numpy arrays) are not tensor reads and are not counted.
"""
from __future__ import annotations

import contextlib
from collections import Counter

import torch

READS = ("item", "tolist", "__bool__", "__int__", "__float__", "cpu", "nonzero")   # .numpy() only works on host tensors


@contextlib.contextmanager
def count_host_syncs():
    """Yields a Counter (kind -> calls) that fills while the block runs."""
    counts = Counter()
    saved = {}

    def wrap_method(name):
        orig = getattr(torch.Tensor, name)

        def f(self, *a, **k):
            counts[name] += 1
            return orig(self, *a, **k)

        saved[(torch.Tensor, name)] = orig
        setattr(torch.Tensor, name, f)

    def wrap_function(owner, name, kind, when=lambda a, k: True):
        orig = getattr(owner, name)

        def f(*a, **k):
            if when(a, k):
                counts[kind] += 1
            return orig(*a, **k)

        saved[(owner, name)] = orig
        setattr(owner, name, f)

    def upload(a, k):
        dev = k.get("device")
        return dev is not None and not (isinstance(a[0] if a else None, torch.Tensor))

    for name in READS:
        wrap_method(name)
    wrap_function(torch, "equal", "equal")
    wrap_function(torch, "nonzero", "nonzero")
    wrap_function(torch, "tensor", "upload", upload)
    wrap_function(torch.cuda, "synchronize", "synchronize")
    try:
        yield counts
    finally:
        for (owner, name), orig in saved.items():
            setattr(owner, name, orig)


def total(counts: Counter) -> int:
    return sum(counts.values())
