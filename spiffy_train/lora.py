"""LoRA for training an adapter: low-rank updates on chosen linear layers, a trainable delta on the mask
token's (tied) embedding row, and optionally full norm weights. The base weights stay frozen.

The exported tensors are what :mod:`spiffy.backends.adapter` merges when it loads the checkpoint.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from spiffy.errors import ArtifactError


class LoRALinear(nn.Module):
    """``base(x) + scale * (x A^T) B^T`` with A [r, in] (Kaiming-uniform init) and B [out, r] (zeros), so
    training starts from the base model exactly."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        bound = 1.0 / math.sqrt(base.in_features)
        a = (torch.rand(rank, base.in_features, generator=generator) * 2 - 1) * bound
        self.lora_A = nn.Parameter(a.to(base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale


def attach(model, rank: int, alpha: float, targets, train_norms: bool, seed: int) -> dict:
    """Freeze ``model`` and wrap every linear layer whose attribute name is in ``targets``. Returns
    {exported name: parameter} of everything trainable (``mask_embedding_delta`` included, registered on
    the model as ``model.mask_embedding_delta``)."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = {}
    for mod_name, mod in list(model.named_modules()):
        for attr, child in list(mod.named_children()):
            if attr in targets and isinstance(child, nn.Linear):
                wrapped = LoRALinear(child, rank, alpha, gen)
                setattr(mod, attr, wrapped)
                full = f"{mod_name}.{attr}" if mod_name else attr
                trainable[f"{full}.lora_A"] = wrapped.lora_A
                trainable[f"{full}.lora_B"] = wrapped.lora_B
    if train_norms:
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.requires_grad_(True)
                trainable[name] = p
    hidden = model.get_input_embeddings().weight.shape[1]
    model.mask_embedding_delta = nn.Parameter(torch.zeros(hidden))
    trainable["mask_embedding_delta"] = model.mask_embedding_delta
    return trainable


def embed(model, ids, mask_id: int):
    """Token embeddings with the mask row shifted by the trainable delta."""
    x = model.get_input_embeddings()(ids)
    return x + (ids == mask_id).unsqueeze(-1).to(x.dtype) * model.mask_embedding_delta.to(x.dtype)


def head(model, h, mask_id: int):
    """Tied LM head with the same mask-row delta (so the loss also learns never to predict the mask)."""
    w = model.get_input_embeddings().weight
    logits = F.linear(h, w.to(h.dtype))
    extra = h @ model.mask_embedding_delta.to(h.dtype)
    return logits.index_add(-1, torch.tensor([mask_id], device=h.device), extra.unsqueeze(-1))


def export_state(trainable: dict) -> dict:
    """The adapter tensors to save (detached copies, float32)."""
    return {k: v.detach().float().clone().contiguous() for k, v in trainable.items()}


def load_state(trainable: dict, state: dict):
    missing = set(trainable) - set(state)
    if missing:
        raise ArtifactError(f"saved adapter state lacks {sorted(missing)[:3]}")
    with torch.no_grad():
        for k, p in trainable.items():
            p.copy_(state[k].to(p.dtype))
