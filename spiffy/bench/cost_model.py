"""Cost tables from a device probe (the tables themselves: :mod:`spiffy.costs`)."""
from __future__ import annotations

from ..costs import FORMAT
from ..errors import ConfigError


def table_from_probe(probe: dict, model: str, mode: str, name: str) -> dict:
    """A cost table (this module's format) from a device-probe JSON (:mod:`spiffy.bench.device_probe`): the probe's
    per-call curve of ``model`` ("llada-8b", "dream-7b") in ``mode`` ("eager" or "compiled"; rows = 32-token blocks
    over its cached context) and its full forward (measured eager only, so a compiled table prices a block start
    at the eager cost)."""
    c = probe["cost"][model]
    curve = c.get(mode) or {}
    if not curve:
        raise ConfigError(f"the probe has no {mode} curve for {model}")
    m = probe.get("machine", {})
    return {"format": FORMAT, "name": name,
            "device": f"{m.get('device', '?')} ({probe.get('gpu') or m.get('cpu', '?')}), torch {probe.get('torch')}, "
                      f"{mode}; measured by spiffy.bench.device_probe",
            "model_shape": model, "dtype": c.get("dtype"), "block_length": c["block"],
            "cached_step_s": {"context_tokens": c["context"], "by_blocks": dict(curve)},
            "full_forward_s": {"by_tokens": {str(c["context"]): c["prefill_s"]}},
            "notes": "Priced as in h100-llada8b-bf16.json. " + ("The full forward is the eager one." if mode != "eager" else "")}
