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


def measure(device: str = "cpu", gen_length: int = 128, budget: int = 5, static: bool = True) -> dict:
    """The bundled reference dLLM, one GSM8K-like prompt, dual cache: reads counted per step (baseline) and per
    round (Spiffy); on CUDA also the synchronisations torch itself reports (``set_sync_debug_mode``)."""
    import warnings

    from ..backends import load_backend
    from ..generation import generate
    from ..speculative import SpeculativeConfig

    be = load_backend("spiffy-dllm-ref", device=device, dtype="float32")
    text = "Tom has 3 apples and buys 5 more. How many apples does he have?"
    common = dict(gen_length=gen_length, block_length=32, cache="dual")
    generate(be, text, speculative=SpeculativeConfig(budget=budget), **common)   # one-time fingerprint reads
    out = {}
    for name, spec in (("baseline", None), ("spiffy", SpeculativeConfig(budget=budget, static=static))):
        cuda = torch.device(device).type == "cuda"
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                with count_host_syncs() as c:
                    r = generate(be, text, speculative=spec, **common)
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode(0)
        row = {"counted": dict(c), "counted_total": total(c), "steps": sum(r.block_steps), "nfe": r.nfe}
        if r.stats is not None:
            row["rounds"] = r.stats.rounds
            row["counted_per_round"] = round(total(c) / max(1, r.stats.rounds), 2)
        if cuda:
            row["torch_reported_syncs"] = sum("synchroniz" in str(w.message) for w in seen)
        out[name] = row
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure(sys.argv[1] if len(sys.argv) > 1 else "cpu")))
