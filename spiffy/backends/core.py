"""The forward pass shared by the bidirectional model families (LLaDA, Dream).

Each family defines its own modules with the parameter names of its published checkpoints and
calls :func:`block_forward` / :func:`stack_forward`, so the numerics are written once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from .layers import Rotary, attend


@dataclass
class ContextKV:
    """Frozen keys/values (after RoPE) of positions that are not part of the query.

    ``layers[i] = (K, V)`` with shape [B, Hkv, Lc, Dh]; ``valid`` [B, Lc] marks real (non-padding)
    keys. ``positions`` [Lc] are the absolute sequence positions the keys belong to.
    """

    layers: list
    valid: torch.Tensor
    positions: torch.Tensor
    all_valid: bool = False   # set when no key is padding, so no mask needs building


    @property
    def length(self) -> int:
        return self.valid.shape[1]

    def repeat(self, n: int) -> "ContextKV":
        """Batch copies (views when the batch is 1)."""
        if n == self.valid.shape[0]:
            return self
        return ContextKV(
            [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in self.layers],
            self.valid.expand(n, -1),
            self.positions,
            self.all_valid,
        )


@dataclass
class DiffusionLMOutput(ModelOutput):
    logits: Optional[torch.Tensor] = None
    kv: Optional[list] = None
    hidden_states: Optional[torch.Tensor] = None


def block_forward(x, cos, sin, mask, context_kv, *, attn_norm, q_proj, k_proj, v_proj, o_proj,
                  ff_norm, gate_proj, up_proj, down_proj, n_heads, n_kv_heads):
    """One pre-norm transformer block: attention (bidirectional unless masked) + SwiGLU MLP."""
    B, L, _ = x.shape
    h = attn_norm(x)
    q = q_proj(h).view(B, L, n_heads, -1).transpose(1, 2)
    k = k_proj(h).view(B, L, n_kv_heads, -1).transpose(1, 2)
    v = v_proj(h).view(B, L, n_kv_heads, -1).transpose(1, 2)
    q = Rotary.apply(q, cos, sin)
    k = Rotary.apply(k, cos, sin)
    a = attend(q, k, v, mask, context_kv)
    x = x + o_proj(a.transpose(1, 2).reshape(B, L, -1))
    h = ff_norm(x)
    x = x + down_proj(F.silu(gate_proj(h)) * up_proj(h))
    return x, (k, v)


def build_mask(query_valid, context: Optional[ContextKV], attention_mask, B, Lq, device):
    """Combine key padding (query and context; None = no padding) with an optional 4-D boolean or
    additive mask. Returns None for full attention (SDPA's fastest path) without a host sync."""
    ctx_full = context is None or context.all_valid
    if query_valid is None and ctx_full and attention_mask is None:
        return None
    if query_valid is None:
        query_valid = torch.ones(B, Lq, dtype=torch.bool, device=device)
    keys = query_valid if context is None else torch.cat([context.valid.expand(B, -1), query_valid], dim=1)
    mask = keys[:, None, None, :]
    if attention_mask is not None:
        if attention_mask.dtype != torch.bool:
            attention_mask = attention_mask > -1e4  # additive mask: 0 = keep, large negative = drop
        mask = mask & attention_mask
    return mask


def stack_forward(model, input_ids, position_ids=None, attention_mask=None, context=None,
                  return_kv=False, logits_index=None, key_valid=None):
    """Run embed -> blocks -> final norm -> head.

    ``attention_mask``: 2-D [B, L] padding mask (1 = real token) or a 4-D mask over
    (context + query) keys. ``logits_index``: query rows [B, n] whose logits are needed (the head
    is applied only there). Returns logits and, when ``return_kv``, the per-layer (K, V).
    """
    B, L = input_ids.shape
    device = input_ids.device
    four_d = None
    if attention_mask is not None:
        if attention_mask.dim() == 2:
            key_valid = attention_mask.bool() if key_valid is None else key_valid & attention_mask.bool()
        else:
            four_d = attention_mask
    if position_ids is None:
        if context is not None:
            raise ValueError("position_ids are required when a KV context is given")
        if key_valid is None:
            position_ids = torch.arange(L, device=device)
        else:
            position_ids = (key_valid.long().cumsum(-1) - 1).clamp(min=0)
    if position_ids.dim() == 1:
        position_ids = position_ids[None].expand(B, -1)
    x = model.embed(input_ids)
    cos, sin = model.rotary.cos_sin(position_ids, x.dtype)
    mask = build_mask(key_valid, context, four_d, B, L, device)
    kvs = [] if return_kv else None
    for i, blk in enumerate(model.blocks_list()):
        ctx = None if context is None else context.layers[i]
        x, kv = blk(x, cos, sin, mask, ctx)
        if return_kv:
            kvs.append(kv)
    if logits_index is not None:
        if logits_index.dim() == 1:
            logits_index = logits_index[None].expand(B, -1)
        x = torch.gather(x, 1, logits_index[..., None].expand(-1, -1, x.shape[-1]))
    logits = model.head(model.final_norm(x))
    return DiffusionLMOutput(logits=logits, kv=kvs)
