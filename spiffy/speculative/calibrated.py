"""Where calibrated draft graphs live, and how a decode finds the one for its model and setting.

Layout (written by the calibration tooling, read here)::

    calibration/<model>/<setting>/D<budget>.json     # one graph per budget (preferred)
    calibration/<model>/<setting>/graph.json         # a single graph for every budget

``<model>`` is the backend's name (the checkpoint directory's name, e.g. ``spiffy-dllm-ref``) or its
fingerprint (:func:`backend_fingerprint`, 16 hex digits of the model config). ``<setting>`` is
:func:`setting_key`, e.g. ``b32_k1`` (block 32, one token per step), ``b32_k2``, ``b32_s8`` (an
uneven 8-step schedule per block), ``b32_thr0.9`` (threshold decoding); a folder
``<setting>_<cache>`` (e.g. ``b32_k1_dual``) takes precedence for that cache mode. The calibration
root is ``$SPIFFY_CALIBRATION`` or the repository's ``calibration/``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence

from ..sampling.schedule import block_schedule


def calibration_root(root=None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("SPIFFY_CALIBRATION")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "calibration"


def backend_fingerprint(backend) -> str:
    cfg = backend.model.config
    try:
        d = cfg.to_dict()
    except Exception:  # pragma: no cover - every backend's config is a PretrainedConfig
        d = dict(vars(cfg))
    keep = {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, type(None), list))
            and not k.startswith("_") and k not in ("transformers_version", "dtype", "torch_dtype")}
    blob = json.dumps({"family": backend.family, "config": keep}, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def setting_key(cfg, sampler: str) -> str:
    """The part of a decoding configuration a draft graph depends on (block length and how many tokens
    each step commits)."""
    head = f"b{cfg.block_length}"
    if cfg.threshold is not None:
        return f"{head}_thr{cfg.threshold:g}"
    sched = block_schedule(sampler, cfg.block_length, cfg.steps_per_block)
    if len(set(sched)) == 1:
        return f"{head}_k{sched[0]}"
    return f"{head}_{sampler}{cfg.steps_per_block}"


def find_calibrated_graph(model_names: Sequence[str], setting: str, budget: int, cache: Optional[str] = None,
                          root=None) -> Optional[Path]:
    """The calibrated graph file for a model (any of ``model_names``), setting and budget, or None."""
    base = calibration_root(root)
    if not base.is_dir():
        return None
    folders = ([f"{setting}_{cache}"] if cache else []) + [setting]
    for name in model_names:
        for folder in folders:
            d = base / name / folder
            for fname in (f"D{budget}.json", "graph.json"):
                if (d / fname).is_file():
                    return d / fname
    return None


def calibrated_graph_for(backend, cfg, sampler: str, budget: int, root=None) -> Optional[Path]:
    """Lookup hook used by the decoder: the backend's name first, then its fingerprint."""
    return find_calibrated_graph([backend.name, backend_fingerprint(backend)], setting_key(cfg, sampler), budget,
                                 cfg.cache, root)
