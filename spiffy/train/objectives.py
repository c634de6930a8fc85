"""Losses: LLaDA's masked-diffusion objective and the causal-LM objective.

Masked diffusion (LLaDA, Nie et al. 2025): per sequence t ~ U(eps, 1); each (noisable) token is
replaced by the mask token with probability p_mask = (1 - eps) * t + eps; cross-entropy on the masked
tokens, each weighted by 1 / p_mask. Pretraining normalises by batch * sequence length; SFT never masks
the prompt and normalises each token by its row's answer length (prompt excluded), then by batch size.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def forward_process(input_ids: torch.Tensor, mask_id: int, eps: float = 1e-3, generator=None,
                    noisable: Optional[torch.Tensor] = None, t: Optional[torch.Tensor] = None):
    """Mask tokens at a random per-row ratio. Returns (noisy ids, masked bool, p_mask [B, L])."""
    B, L = input_ids.shape
    if t is None:
        t = torch.rand(B, generator=generator, device=input_ids.device)
    p_mask = ((1 - eps) * t + eps)[:, None].expand(B, L)
    masked = torch.rand(B, L, generator=generator, device=input_ids.device) < p_mask
    if noisable is not None:
        masked = masked & noisable
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    return noisy, masked, p_mask


def masked_diffusion_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor,
                          p_mask: torch.Tensor, answer_lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """sum over masked tokens of CE / p_mask, divided by B*L (pretraining) or, when ``answer_lengths``
    [B] is given (SFT), each row's terms divided by its answer length and the sum by B."""
    B, L = targets.shape
    if not bool(masked.any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits[masked].float(), targets[masked], reduction="none")
    w = 1.0 / p_mask[masked]
    if answer_lengths is None:
        return (ce * w).sum() / (B * L)
    al = answer_lengths[:, None].expand(B, L)[masked].to(ce.dtype)
    return (ce * w / al).sum() / B


def diffusion_step_loss(model, batch: dict, mask_id: int, eps: float = 1e-3, generator=None) -> torch.Tensor:
    """One training loss for a pretraining batch (``input_ids``) or an SFT batch (+ ``prompt_mask``)."""
    ids = batch["input_ids"]
    prompt_mask = batch.get("prompt_mask")
    noisable = None if prompt_mask is None else ~prompt_mask
    noisy, masked, p_mask = forward_process(ids, mask_id, eps, generator, noisable)
    valid = batch.get("valid")
    answer_lengths = None if prompt_mask is None else (~prompt_mask).sum(-1)
    if hasattr(model, "blocks_list") and hasattr(model, "head"):
        # LLaDA-style model: apply the LM head only at masked positions (the loss needs nothing else)
        if not bool(masked.any()):
            return model.head(model.final_norm(model.embed(ids[:1, :1]))).sum() * 0.0
        h = _llada_hidden(model, noisy, valid)
        logits_m = model.head(h[masked])
        return masked_loss_from_selected(logits_m, ids, masked, p_mask, answer_lengths)
    logits = model(noisy, attention_mask=valid).logits
    return masked_diffusion_loss(logits, ids, masked, p_mask, answer_lengths)


def _llada_hidden(model, ids, valid=None):
    """Final-normed hidden states of a LLaDA-style model (same computation as ``stack_forward``)."""
    B, L = ids.shape
    key_valid = torch.ones(B, L, dtype=torch.bool, device=ids.device) if valid is None else valid.bool()
    pos = (key_valid.long().cumsum(-1) - 1).clamp(min=0)
    x = model.embed(ids)
    cos, sin = model.rotary.cos_sin(pos, x.dtype)
    mask = None if valid is None else key_valid[:, None, None, :]  # key padding (boolean, True = attend)
    for blk in model.blocks_list():
        x, _ = blk(x, cos, sin, mask, None)
    return model.final_norm(x)


def masked_loss_from_selected(logits_m, targets, masked, p_mask, answer_lengths=None) -> torch.Tensor:
    """``masked_diffusion_loss`` given logits only at the masked positions (row-major order)."""
    B, L = targets.shape
    ce = F.cross_entropy(logits_m.float(), targets[masked], reduction="none")
    w = 1.0 / p_mask[masked]
    if answer_lengths is None:
        return (ce * w).sum() / (B * L)
    al = answer_lengths[:, None].expand(B, L)[masked].to(ce.dtype)
    return (ce * w / al).sum() / B


def causal_lm_loss(model, batch: dict) -> torch.Tensor:
    """Next-token CE. SFT batches train only the answer tokens (answer + its first EOS)."""
    ids = batch["input_ids"]
    valid = batch.get("valid")
    answer = batch.get("answer_tokens")
    if answer is not None:  # drop the EOS padding beyond the first EOS: it costs compute and teaches nothing
        last = int(answer.nonzero()[:, 1].max()) + 1
        ids, answer = ids[:, :last], answer[:, :last]
        valid = None if valid is None else valid[:, :last]
    am = None if valid is None else valid.long()
    if answer is None:
        logits = model(input_ids=ids, attention_mask=am).logits[:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
    sel = answer[:, 1:]
    if hasattr(model, "model") and hasattr(model, "lm_head"):  # head only where the loss is taken
        h = model.model(input_ids=ids, attention_mask=am).last_hidden_state[:, :-1]
        return F.cross_entropy(model.lm_head(h[sel]).float(), ids[:, 1:][sel])
    logits = model(input_ids=ids, attention_mask=am).logits[:, :-1]
    return F.cross_entropy(logits[sel].float(), ids[:, 1:][sel])
