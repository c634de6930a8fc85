"""Checkpoints that ship only what training changed: a LoRA adapter over a named base model.

An adapter folder holds ``config.json`` (the diffusion model's config, with a ``spiffy_adapter`` entry
naming the base and the adapter's shape), ``adapter.safetensors`` (for each adapted linear layer
``<name>.lora_A`` [r, in] and ``<name>.lora_B`` [out, r]; tensors trained in full, such as norm weights,
under their own names; ``mask_embedding_delta`` [hidden] added to the mask token's tied embedding row)
and a model card. Loading takes the base weights from the named model's cache (``spiffy models fetch``),
merges ``W + (alpha / r) * B @ A`` in float32 and returns an ordinary model, so every sampler, cache mode
and Spiffy itself run on it unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ModelLoadError

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_KEY = "spiffy_adapter"


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / ADAPTER_FILE).exists()


def resolve_base(name_or_path: str) -> Path:
    """The base checkpoint folder: a named model (prepared by `spiffy models fetch`) or a local folder."""
    from ..named_models import is_named, resolve_named

    if is_named(name_or_path):
        return resolve_named(name_or_path)
    p = Path(name_or_path).expanduser()
    if (p / "config.json").exists():
        return p
    raise ModelLoadError(f"adapter base {name_or_path!r} is neither a named model nor a checkpoint folder")


def load_base_weights(base: Path) -> dict:
    """The base checkpoint's tensors (every *.safetensors file), without the LM head tied to the embedding."""
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(Path(base).glob("*.safetensors")):
        sd.update(load_file(str(f)))
    sd.pop("lm_head.weight", None)
    return sd


def merge_lora(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """The merged float32 weight; the one formula both the loader and the training export use."""
    return weight.float() + scale * (b.float() @ a.float())


def merged_state_dict(base_sd: dict, adapter_sd: dict, meta: dict, mask_id: int) -> dict:
    """Base weights with the adapter applied (float32). Fails clearly on a mismatched adapter."""
    scale = float(meta["alpha"]) / int(meta["rank"])
    out = {k: v.float() for k, v in base_sd.items()}
    seen = set()
    for key, t in adapter_sd.items():
        if key.endswith(".lora_A"):
            name = key[: -len(".lora_A")]
            wkey = name + ".weight"
            bkey = name + ".lora_B"
            if wkey not in out or bkey not in adapter_sd:
                raise ModelLoadError(f"adapter layer {name!r} has no base weight or no lora_B: not an adapter "
                                     f"for this base model")
            w, b = out[wkey], adapter_sd[bkey]
            if t.shape[1] != w.shape[1] or b.shape[0] != w.shape[0]:
                raise ModelLoadError(f"adapter layer {name!r} has shape {tuple(b.shape)}x{tuple(t.shape)}, the "
                                     f"base weight {tuple(w.shape)}: the adapter was trained for another model")
            out[wkey] = merge_lora(w, t, b, scale)
            seen.update((key, bkey))
        elif key == "mask_embedding_delta":
            emb = out["model.embed_tokens.weight"]
            if t.shape[0] != emb.shape[1]:
                raise ModelLoadError(f"mask embedding of size {t.shape[0]} for a base of hidden size {emb.shape[1]}")
            emb = emb.clone()
            emb[mask_id] += t.float()
            out["model.embed_tokens.weight"] = emb
            seen.add(key)
    for key, t in adapter_sd.items():
        if key in seen:
            continue
        if key not in out:
            raise ModelLoadError(f"adapter tensor {key!r} is not a weight of the base model")
        if out[key].shape != t.shape:
            raise ModelLoadError(f"adapter tensor {key!r} has shape {tuple(t.shape)}, the base {tuple(out[key].shape)}")
        out[key] = t.float()
    return out


def load_adapter_model(path: Path, cfg_cls, model_cls, dtype: torch.dtype):
    """(model, base folder) for the adapter checkpoint at ``path``."""
    from safetensors.torch import load_file

    path = Path(path)
    raw = json.loads((path / "config.json").read_text())
    meta = raw.get(ADAPTER_KEY)
    if not meta or "base" not in meta:
        raise ModelLoadError(f"{path} holds {ADAPTER_FILE} but its config.json has no {ADAPTER_KEY!r} entry "
                             f"naming the base model")
    base = resolve_base(meta["base"])   # a clear error naming `spiffy models fetch` when absent
    try:
        adapter_sd = load_file(str(path / ADAPTER_FILE))
        base_sd = load_base_weights(base)
    except Exception as e:
        raise ModelLoadError(f"adapter {path} or its base {base} could not be read: {type(e).__name__}: {e}") from None
    config = cfg_cls.from_pretrained(str(path))
    sd = merged_state_dict(base_sd, adapter_sd, meta, int(config.mask_token_id))
    model = model_cls(config)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"adapter {path} over base {meta['base']}: weights missing {missing[:4]} or "
                             f"unexpected {unexpected[:4]}")
    return model.to(dtype), base
