"""Cost tables: seconds per model call on some machine, by the call's shape.

They price a run's actual sequence of calls (a projected wall-clock, :mod:`spiffy.bench.dllm`) and the
drafts a round is worth verifying (:mod:`spiffy.speculative.cost_pruning`).

Every counted forward of a decode is recorded as (query tokens, frozen-context tokens) in
``GenerationResult.calls``. A cost table (``models/device/costs/*.json``, or the same format written by the
device probe) gives seconds per call on some machine: calls over a frozen KV context by their query size in
blocks, calls without one by their query tokens. The projection is a model, not a measurement: it is labelled
``projected`` wherever it appears.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

FORMAT = "spiffy-cost-table/1"


def _curve(obj, where: str) -> list:
    try:
        pts = sorted((float(k), float(v)) for k, v in obj.items())
    except (AttributeError, TypeError, ValueError):
        raise ConfigError(f"{where}: a curve is an object of size -> seconds") from None
    if not pts or any(x <= 0 or y <= 0 for x, y in pts):
        raise ConfigError(f"{where}: a curve needs at least one point, with positive sizes and seconds")
    return pts


def _at(pts: list, x: float) -> float:
    """Linear between points; the first point's cost below it; proportional to ``x`` beyond the last."""
    if x <= pts[0][0]:
        return pts[0][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    xl, yl = pts[-1]
    return yl * x / xl


_LOADED: dict = {}     # (resolved path, mtime, size) -> CostTable: a decode's config check and its pruner read it once


@dataclass(frozen=True)
class CostTable:
    name: str
    device: str
    block_length: int
    step: list        # (blocks, seconds) of a call over a frozen context
    full: list        # (tokens, seconds) of a call without one

    @classmethod
    def load(cls, name_or_path: str) -> "CostTable":
        """A bundled table by name (``models/device/costs/<name>.json``) or a JSON file."""
        from .resources import resource_dir

        path = Path(name_or_path)
        if not path.is_file():
            bundled = resource_dir("models") / "device" / "costs" / f"{name_or_path}.json"
            if not bundled.is_file():
                have = sorted(p.stem for p in bundled.parent.glob("*.json"))
                raise ConfigError(f"cost model {name_or_path!r}: no such file, and no bundled table of that name "
                                  f"(bundled: {', '.join(have) or 'none'})")
            path = bundled
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        if key not in _LOADED:
            _LOADED[key] = cls._parse(path)
        return _LOADED[key]

    @classmethod
    def _parse(cls, path: Path) -> "CostTable":
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"cost model {path}: unreadable JSON ({e})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ConfigError(f"cost model {path}: not a cost table (format must be {FORMAT!r})")
        try:
            step, full = raw["cached_step_s"]["by_blocks"], raw["full_forward_s"]["by_tokens"]
            block = int(raw["block_length"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"cost model {path}: needs block_length, cached_step_s.by_blocks and "
                              "full_forward_s.by_tokens") from None
        if block <= 0:
            raise ConfigError(f"cost model {path}: block_length must be positive")
        return cls(raw.get("name", path.stem), raw.get("device", "?"), block, _curve(step, f"{path}: cached_step_s"),
                   _curve(full, f"{path}: full_forward_s"))

    def call_s(self, query_tokens: int, context_tokens: int) -> float:
        if context_tokens > 0:
            return _at(self.step, query_tokens / self.block_length)
        return _at(self.full, query_tokens)

    def price(self, calls) -> float:
        """Projected seconds of a sequence of (query tokens, context tokens) calls."""
        return sum(self.call_s(q, c) for q, c in calls)
