"""Building blocks shared by the model families: RMSNorm, rotary embeddings and attention
over an optional frozen key/value context.

Attention here is bidirectional by default; what a query may see is decided only by the boolean
mask the caller passes. Keys from a frozen context (Fast-dLLM prefix/dual cache) are concatenated
in front of the query's own keys: bidirectional attention does not care about key order, since
positions enter only through RoPE, which is applied before keys are cached.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norms and rotary tables run in at least float32 (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.to(_compute_dtype(dtype))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class Rotary(nn.Module):
    """Rotary position embedding with the half-split (rotate_half) convention of LLaMA/OLMo/Qwen2."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta

    def cos_sin(self, position_ids: torch.Tensor, dtype: torch.dtype):
        cdt = _compute_dtype(dtype)
        inv = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, device=position_ids.device, dtype=cdt) / self.head_dim))
        freqs = position_ids.to(cdt)[..., None] * inv  # [B, L, D/2]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos()[:, None], emb.sin()[:, None]  # [B, 1, L, D]

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.to(cos.dtype)
        x1, x2 = h.chunk(2, dim=-1)
        rot = torch.cat([-x2, x1], dim=-1)
        return (h * cos + rot * sin).to(dtype)


class KVBuffer:
    """One layer's keys/values of a frozen context followed by room for the query's, for a forward shape that
    repeats (a static-shape decode): the context is copied in once per block, the query's keys and values are
    written in place by every call, and attention reads the buffer, instead of concatenating the context again
    in every layer of every call. Same values, same layout as the concatenation, so the same results. The
    buffer is kept from block to block while its shape holds (the dual cache's context has one length), and on
    a GPU its address is marked static, so that CUDA graphs can replay a step that writes into it."""

    def __init__(self, kc: torch.Tensor, vc: torch.Tensor):
        self.k = self.v = None
        self.set_context(kc, vc)

    def set_context(self, kc: torch.Tensor, vc: torch.Tensor) -> None:
        """A new block's context [B, Hkv, Lc, D] (views are fine: copied into the buffer by :meth:`reserve`)."""
        self.kc, self.vc, self.stale = kc, vc, True

    def reserve(self, query_length: int) -> None:
        """Make room for ``query_length`` query positions and copy a new context in (outside any compiled
        region, before the forward, so that every compiled call runs the same graph on the same memory)."""
        B, H, Lc, D = self.kc.shape
        shape = (B, H, Lc + query_length, D)
        if self.k is None or tuple(self.k.shape) != shape or self.k.dtype != self.kc.dtype:
            self.k, self.v = self.kc.new_empty(shape), self.vc.new_empty(shape)
            if self.k.is_cuda:
                torch._dynamo.mark_static_address(self.k, guard=False)
                torch._dynamo.mark_static_address(self.v, guard=False)
            self.stale = True
        if self.stale:
            self.k[:, :, :Lc] = self.kc
            self.v[:, :, :Lc] = self.vc
            self.stale = False

    def write(self, k: torch.Tensor, v: torch.Tensor):
        Lc = self.kc.shape[2]
        if self.k is None or self.k.shape[2] != Lc + k.shape[2]:
            raise RuntimeError("KVBuffer: reserve() the query length before the forward")
        self.k[:, :, Lc:] = k
        self.v[:, :, Lc:] = v
        return self.k, self.v


def attend(q, k, v, mask, context_kv=None):
    """q: [B, H, Lq, D]; k, v: [B, Hkv, Lq, D]; context_kv: optional (K, V) [B, Hkv, Lc, D] or a
    :class:`KVBuffer`; mask: bool [B or 1, 1, Lq, Lc + Lq] (True = may attend) or None. Returns [B, H, Lq, D]."""
    if isinstance(context_kv, KVBuffer):
        k, v = context_kv.write(k, v)
    elif context_kv is not None:
        kc, vc = context_kv
        if kc.shape[0] != k.shape[0]:
            kc, vc = kc.expand(k.shape[0], -1, -1, -1), vc.expand(k.shape[0], -1, -1, -1)
        k = torch.cat([kc, k], dim=2)
        v = torch.cat([vc, v], dim=2)
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
