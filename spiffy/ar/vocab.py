"""Drafter/target vocabulary agreement: the drafter must share the target's tokenizer."""
from __future__ import annotations


import torch

from ..errors import ConfigError


def _vocab(tok) -> dict:
    try:
        return dict(tok.get_vocab())
    except Exception:
        return {}


def check_tokenizers(target_tok, drafter_tok, target_name: str = "target", drafter_name: str = "drafter"):
    """Raise :class:`ConfigError` unless both tokenizers map the same strings to the same ids.

    Ids the drafter has and the target lacks (a dLLM's mask token, say) are allowed: they are never
    proposed (see :func:`allowed_ids`). Either tokenizer missing (id-only use) skips the check.
    """
    if target_tok is None or drafter_tok is None:
        return
    tv, dv = _vocab(target_tok), _vocab(drafter_tok)
    if not tv or not dv:
        return
    shared = set(tv) & set(dv)
    bad = [s for s in shared if tv[s] != dv[s]]
    target_only = [s for s in tv if s not in dv]
    if bad or target_only or not shared:
        ex = (bad or target_only)[:5]
        raise ConfigError(
            f"{drafter_name} and {target_name} do not share a tokenizer "
            f"({len(bad)} tokens map to different ids, {len(target_only)} target tokens are unknown to the "
            f"drafter; e.g. {ex!r}): a drafter must use the target's tokenizer")
    if target_tok("a1 b", add_special_tokens=False)["input_ids"] != drafter_tok("a1 b", add_special_tokens=False)["input_ids"]:
        raise ConfigError(f"{drafter_name} and {target_name} tokenize text differently: a drafter must use the "
                          "target's tokenizer")


def allowed_ids(drafter_vocab: int, target_vocab: int, banned=(), device=None) -> torch.Tensor:
    """Boolean [drafter_vocab]: ids the drafter may propose (present in the target, not banned)."""
    ok = torch.zeros(drafter_vocab, dtype=torch.bool, device=device)
    ok[: min(drafter_vocab, target_vocab)] = True
    for b in banned:
        if b is not None and 0 <= b < drafter_vocab:
            ok[b] = False
    return ok


def to_target_vocab(probs: torch.Tensor, target_vocab: int) -> torch.Tensor:
    """Cut or zero-pad the last dimension of drafter probabilities to the target's vocabulary."""
    v = probs.shape[-1]
    if v == target_vocab:
        return probs
    if v > target_vocab:
        return probs[..., :target_vocab]
    pad = probs.new_zeros(*probs.shape[:-1], target_vocab - v)
    return torch.cat([probs, pad], dim=-1)
