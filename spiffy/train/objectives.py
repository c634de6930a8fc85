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
    logits = model(noisy, attention_mask=valid).logits
    if prompt_mask is None:
        return masked_diffusion_loss(logits, ids, masked, p_mask)
    answer_lengths = (~prompt_mask).sum(-1)
    return masked_diffusion_loss(logits, ids, masked, p_mask, answer_lengths)


def causal_lm_loss(model, batch: dict) -> torch.Tensor:
    """Next-token CE. SFT batches train only the answer tokens (answer + its first EOS)."""
    ids = batch["input_ids"]
    valid = batch.get("valid")
    answer = batch.get("answer_tokens")
    if answer is not None:  # drop the EOS padding beyond the first EOS: it costs compute and teaches nothing
        last = int(answer.nonzero()[:, 1].max()) + 1
        ids, answer = ids[:, :last], answer[:, :last]
        valid = None if valid is None else valid[:, :last]
    logits = model(input_ids=ids, attention_mask=None if valid is None else valid.long()).logits
    logits, tgt = logits[:, :-1], ids[:, 1:]
    if answer is None:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1))
    sel = answer[:, 1:]
    return F.cross_entropy(logits[sel].float(), tgt[sel])
