"""Losses: LLaDA's masked-diffusion objective and the causal-LM objective.

Masked diffusion (LLaDA, Nie et al. 2025): per sequence t ~ U(eps, 1); each (noisable) token is
replaced by the mask token with probability p_mask = (1 - eps) * t + eps; cross-entropy on the masked
tokens, each weighted by 1 / p_mask. Pretraining normalises by batch * sequence length; SFT never masks
the prompt and normalises each token by its row's answer length (prompt excluded), then by batch size.

Block-structured masking (an SFT option, ``block_mask_prob``): the semi-autoregressive samplers only ever
show the model states where every answer block before the current one is clean, the current block is
partly masked and every later block is fully masked. A row drawn in this mode picks one block b of the
answer (uniformly over the blocks up to the first one past its end), masks each token of b with probability
p = (1-eps)t + eps, leaves the blocks before b clean and masks everything after b (p = 1). The loss is the
same 1/p-weighted sum, so it is LLaDA's estimator restricted to the states block decoding visits (the
training-inference alignment of block-diffusion models); rows not drawn in this mode use plain LLaDA masking.
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
    return (*_mask_with(input_ids, p_mask, mask_id, generator, noisable), p_mask)


def _mask_with(input_ids, p_mask, mask_id: int, generator=None, noisable=None, forced=None):
    """Mask each token with probability ``p_mask`` (plus every ``forced`` one), never outside ``noisable``.
    Returns (noisy ids, masked bool)."""
    masked = torch.rand(input_ids.shape, generator=generator, device=input_ids.device) < p_mask
    if forced is not None:
        masked = masked | forced
    if noisable is not None:
        masked = masked & noisable
    return torch.where(masked, torch.full_like(input_ids, mask_id), input_ids), masked


def block_forward_process(input_ids: torch.Tensor, mask_id: int, answer_start: torch.Tensor,
                          content_len: torch.Tensor, block_length: int, eps: float = 1e-3, generator=None,
                          noisable: Optional[torch.Tensor] = None):
    """Block-structured masking (see the module docstring). ``answer_start`` [B]: index of each row's
    first answer token; ``content_len`` [B]: answer tokens proper (answer + its first EOS).
    Returns (noisy ids, masked bool, p_mask [B, L])."""
    B, L = input_ids.shape
    dev = input_ids.device
    answer_len = L - answer_start
    n_blocks = torch.div(answer_len + block_length - 1, block_length, rounding_mode="floor")
    # blocks worth training: those holding content, plus the first block after the content ends
    useful = torch.minimum(torch.div(content_len, block_length, rounding_mode="floor") + 1, n_blocks)
    u = torch.rand(B, generator=generator, device=dev)
    b = torch.minimum((u * useful).long(), useful - 1)
    t = torch.rand(B, generator=generator, device=dev)
    p_block = (1 - eps) * t + eps
    idx = torch.arange(L, device=dev)[None, :]
    lo = (answer_start + b * block_length)[:, None]
    hi = lo + block_length
    in_block = (idx >= lo) & (idx < hi)
    after = idx >= hi
    p_mask = torch.where(after, torch.ones(B, L, device=dev), p_block[:, None].expand(B, L))
    p_draw = torch.where(in_block, p_mask, torch.zeros_like(p_mask))   # the clean blocks before b are never drawn
    return (*_mask_with(input_ids, p_draw, mask_id, generator, noisable, forced=after), p_mask)


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


def diffusion_step_loss(model, batch: dict, mask_id: int, eps: float = 1e-3, generator=None,
                        block_mask_prob: float = 0.0, block_length: int = 32) -> torch.Tensor:
    """One training loss for a pretraining batch (``input_ids``) or an SFT batch (+ ``prompt_mask``).
    ``block_mask_prob`` > 0 (SFT only) draws that share of rows with block-structured masking."""
    ids = batch["input_ids"]
    prompt_mask = batch.get("prompt_mask")
    noisable = None if prompt_mask is None else ~prompt_mask
    noisy, masked, p_mask = forward_process(ids, mask_id, eps, generator, noisable)
    if block_mask_prob > 0 and prompt_mask is not None:
        start = prompt_mask.sum(-1)
        content = batch["answer_tokens"].sum(-1)
        bn, bm, bp = block_forward_process(ids, mask_id, start, content, block_length, eps, generator, noisable)
        rows = (torch.rand(ids.shape[0], generator=generator, device=ids.device) < block_mask_prob)[:, None]
        noisy, masked, p_mask = torch.where(rows, bn, noisy), torch.where(rows, bm, masked), torch.where(rows, bp, p_mask)
    valid = batch.get("valid")
    answer_lengths = None if prompt_mask is None else (~prompt_mask).sum(-1)
    if hasattr(model, "blocks_list") and hasattr(model, "head"):
        # LLaDA-style model: apply the LM head only at masked positions (the loss needs nothing else)
        if not bool(masked.any()):
            return model.head(model.final_norm(model.embed(ids[:1, :1]))).sum() * 0.0
        h = llada_hidden(model, noisy, valid)
        logits_m = model.head(h[masked])
        return masked_loss_from_selected(logits_m, ids, masked, p_mask, answer_lengths)
    logits = model(noisy, attention_mask=valid).logits
    return masked_diffusion_loss(logits, ids, masked, p_mask, answer_lengths)


def llada_hidden(model, ids, valid=None, x=None):
    """Final-normed hidden states of a LLaDA-style model (same computation as ``stack_forward``). ``x``:
    the input embeddings when the caller computes them (default: ``model.embed(ids)``)."""
    B, L = ids.shape
    key_valid = torch.ones(B, L, dtype=torch.bool, device=ids.device) if valid is None else valid.bool()
    pos = (key_valid.long().cumsum(-1) - 1).clamp(min=0)
    x = model.embed(ids) if x is None else x
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
