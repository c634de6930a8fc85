"""One denoising step of the baseline sampler: (block state, logits, step noise) -> next block state.

This is the single transition rule every decoder in spiffy uses. Spiffy's speculative decoder calls
the same function with the same keyed noise, so an accepted draft is the state the baseline reaches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .config import GenerationConfig

NEG_INF = float("-inf")
EOS_FLOOR = -1e300


@dataclass
class StepOutcome:
    tokens: torch.Tensor      # [B, n] next block state
    x0: torch.Tensor          # [B, n] candidate token at every position
    confidence: torch.Tensor  # [B, n] float64, -inf at positions that were not masked
    committed: torch.Tensor   # [B, n] bool, positions unmasked by this step
    host: Optional[list] = None   # tokens as lists, when the host already has them (a planned step)


def shared_uniform(shape, gen, device) -> torch.Tensor:
    """Uniform float64 noise of ``shape`` [B, ...]: one draw of shape[1:] shared by every row, so a
    prompt gets the same noise in a batch as alone."""
    u = torch.rand(tuple(shape[1:]), dtype=torch.float64, generator=gen, device=device)
    return u.expand(*shape)


def categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF categorical draw: the first token whose cumulative probability exceeds u * total."""
    cdf = probs.cumsum(-1)
    x = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1).contiguous()).squeeze(-1)
    return x.clamp(max=probs.shape[-1] - 1)


def _filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    remove = cum > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    drop = torch.zeros_like(remove).scatter(-1, idx, remove)
    return logits.masked_fill(drop, NEG_INF)


def _filter_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    k = min(top_k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def _never_mask(scores, mask_id):
    """The one deliberate deviation from the references: the mask token itself is never a candidate.
    (LLaDA's generate.py would commit it when the model ranks it first, leaving a hole that a later
    block refills; a trained model gives it ~0 probability, so real outputs are unaffected.) Only the
    choice of x0 is affected; confidences use the unmodified distribution."""
    out = scores.clone()
    out[..., mask_id] = NEG_INF     # a Python index: no host data is uploaded (nothing waits for the device)
    return out


def candidate_logits(logits: torch.Tensor, cfg: GenerationConfig, sampler: str, eos_id=None) -> torch.Tensor:
    """The float64 logits a sampler draws its candidates from: EOS suppressed under ``logits_eos_inf``;
    for Dream, divided by the temperature (when sampling) and filtered by top-p then top-k. The one
    place this preprocessing is written (Spiffy's draft sources read the same distribution)."""
    l64 = logits.to(torch.float64)
    if cfg.logits_eos_inf and eos_id is not None:
        l64 = l64.clone()
        l64[..., eos_id] = NEG_INF
    if sampler == "dream":
        if cfg.temperature > 0:
            l64 = l64 / cfg.temperature
        if cfg.top_p is not None and cfg.top_p < 1:
            l64 = _filter_top_p(l64, cfg.top_p)
        if cfg.top_k is not None:
            l64 = _filter_top_k(l64, cfg.top_k)
    return l64


def llada_candidates(l64, temperature, gen, mask_id):
    """LLaDA: x0 = argmax(exp(l) / (-log u)^T) with l, u in float64 (T > 0); plain argmax at T = 0.
    Returns x0 and the float64 softmax probabilities."""
    if temperature > 0:
        u = shared_uniform(l64.shape, gen, l64.device)
        x0 = torch.argmax(_never_mask(l64.exp() / (-torch.log(u)) ** temperature, mask_id), dim=-1)
    else:
        x0 = torch.argmax(_never_mask(l64, mask_id), dim=-1)
    return x0, torch.softmax(l64, dim=-1)


def dream_candidates(l64, sample: bool, gen, mask_id):
    """Dream: softmax of the (already tempered and filtered) logits, then a categorical draw (T > 0) or
    the argmax (T = 0). Probabilities in float64."""
    probs = torch.softmax(l64, dim=-1)
    if sample:
        x0 = categorical(_never_mask(probs, mask_id).clamp(min=0), shared_uniform(probs.shape[:-1], gen, probs.device))
    else:
        x0 = _never_mask(probs, mask_id).argmax(-1)
    return x0, probs


def confidence_of(kind, x0, probs, gen):
    if kind == "low_confidence":
        return torch.gather(probs, -1, x0[..., None]).squeeze(-1)
    if kind == "random":
        return shared_uniform(x0.shape, gen, x0.device)
    if kind == "margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    if kind == "entropy":
        return (probs * torch.log(probs + 1e-10)).sum(-1)
    if kind == "left_to_right":
        n = x0.shape[-1]
        return (1.0 - torch.arange(n, dtype=torch.float64, device=x0.device) / n).expand(x0.shape)
    raise ValueError(kind)


def select_commits(confidence, n_commit: Optional[list], threshold: Optional[float], alg_temp=None,
                   gen=None) -> torch.Tensor:
    """Which masked positions to unmask. ``confidence`` is -inf at unmasked positions.

    Fixed count: the ``n_commit[b]`` most confident (torch.topk). Threshold (Fast-dLLM): every position
    whose confidence is at least ``threshold``, and always the most confident one. ``alg_temp`` (Dream):
    sample the positions from softmax(confidence / alg_temp) without replacement instead of top-k.
    """
    B, n = confidence.shape
    masked = confidence > NEG_INF
    out = torch.zeros_like(masked)
    gumbel_u = shared_uniform((B, n), gen, confidence.device) if alg_temp else None
    if threshold is not None:
        out = masked & (confidence >= threshold)
        best = confidence.argmax(-1, keepdim=True)
        out.scatter_(1, best, masked.gather(1, best))
        return out
    for b in range(B):
        k = int(n_commit[b])
        if k <= 0:
            continue
        if alg_temp:  # sampling without replacement from softmax(conf / alg_temp): Gumbel top-k
            g = -torch.log(-torch.log(gumbel_u[b]))
            idx = torch.topk(torch.log_softmax(confidence[b] / alg_temp, -1) + g, k).indices
        else:
            idx = torch.topk(confidence[b], k).indices
        out[b].scatter_(0, idx, True)   # a scalar fill: indexing with `= True` would upload a host scalar
    return out & masked


def denoise_step(logits: torch.Tensor, block: torch.Tensor, mask_id: int, cfg: GenerationConfig, sampler: str,
                 n_commit: Optional[list], gen: Optional[torch.Generator], eos_id=None, eot_id=None
                 ) -> StepOutcome:
    """Apply the baseline's rule to ``logits`` [B, n, V] (the model's predictions for the block's n
    positions, after CFG) and the current ``block`` [B, n]."""
    l64 = candidate_logits(logits, cfg, sampler, eos_id)
    if sampler == "dream":
        x0, probs = dream_candidates(l64, cfg.temperature > 0, gen, mask_id)
    else:
        x0, probs = llada_candidates(l64, cfg.temperature, gen, mask_id)
    conf = confidence_of(cfg.remasking, x0, probs, gen)
    if cfg.confidence_eos_eot_inf:
        for t in (eos_id, eot_id):
            if t is not None:
                # the reference uses -inf, which can leave a block with masks when every candidate is
                # EOS; a finite floor keeps such positions behind every other masked one instead
                conf = conf.masked_fill(x0 == t, EOS_FLOOR)
    masked = block == mask_id
    conf = torch.where(masked, conf, torch.full_like(conf, NEG_INF))
    commit = select_commits(conf, n_commit, cfg.threshold, cfg.alg_temp if sampler == "dream" else None, gen)
    tokens = torch.where(commit, x0, block)
    return StepOutcome(tokens, x0, conf, commit)
