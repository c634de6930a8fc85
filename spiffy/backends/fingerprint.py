"""Model fingerprints: a calibrated graph is only valid for the model it was calibrated on.

The fingerprint hashes the model config, the tokenizer (its serialized vocabulary and merges) and a
digest of the weights (per parameter: float64 sum and sum of absolute values, rounded to 6
significant digits so the same weights loaded in another dtype or device give the same digest).
"""
from __future__ import annotations

import hashlib
import json

import torch


def _h(blob: str) -> str:
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def config_digest(backend) -> str:
    d = backend.model.config.to_dict()
    keep = {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, type(None), list))
            and not k.startswith("_") and k not in ("transformers_version", "dtype", "torch_dtype", "name_or_path")}
    return _h(json.dumps({"family": backend.family, "config": keep}, sort_keys=True, default=str))


def tokenizer_digest(backend) -> str:
    tok = backend.tokenizer
    if tok is None:
        return "none"
    inner = getattr(tok, "backend_tokenizer", None)
    blob = inner.to_str() if inner is not None else json.dumps(sorted(tok.get_vocab().items()))
    return _h(blob)


@torch.no_grad()
def weight_digest(backend) -> str:
    parts = []
    for name, p in sorted(backend.model.named_parameters()):
        x = p.detach().to(torch.float64)
        parts.append(f"{name}:{float(x.sum()):.6g}:{float(x.abs().sum()):.6g}")
    return _h("|".join(parts))


def model_fingerprint(backend) -> dict:
    """Computed once per backend object and cached on it (weights are not expected to change in place
    during decoding; call ``backend.__dict__.pop('_fingerprint')`` after editing weights)."""
    cached = backend.__dict__.get("_fingerprint")
    if cached is not None:
        return cached
    fp = {"config": config_digest(backend), "tokenizer": tokenizer_digest(backend), "weights": weight_digest(backend)}
    fp["digest"] = _h(json.dumps(fp, sort_keys=True))
    backend.__dict__["_fingerprint"] = fp
    return fp
