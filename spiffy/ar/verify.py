"""Verification of a draft (a chain or a tree) against the target's logits.

Greedy: accept the longest prefix of the draft that equals the target's argmax, then take the
target's own next token — the output is exactly the target's greedy decoding.

Sampling (Leviathan et al. / Chen et al.): accept draft token d at a position with probability
min(1, p(d)/q(d)); on rejection draw from the normalised residual max(0, p − q); after a fully
accepted draft draw one more token from p. The output is distributed exactly as the target's own
sampling, provided d was drawn from q given everything to its left. A deterministic draft is the
point mass q = δ(d): accept with probability p(d), otherwise draw from p with d removed.

Trees of deterministic candidates use the recursive form: at a node try each child in turn, accept it
with probability p(child) under the current (residual) p, otherwise zero it out and renormalise; when
no child survives draw from what is left.
"""
from __future__ import annotations

from typing import Optional

import torch

RULES = ("exact", "always", "ratio_no_residual")   # the last two are deliberately wrong (tests only)


def target_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.to(torch.float64) / temperature, dim=-1)


def _draw(p: torch.Tensor, generator) -> int:
    return int(torch.multinomial(p, 1, generator=generator)[0])


def _uniform(generator) -> float:
    return float(torch.rand((), generator=generator, dtype=torch.float64, device=generator.device))


def greedy_chain(draft: list, logits: torch.Tensor) -> tuple[int, int]:
    """``logits`` [len(draft)+1, V]: row i predicts the token after draft[:i]. Returns (accepted, next)."""
    top = logits.argmax(-1).tolist()
    n = 0
    while n < len(draft) and draft[n] == top[n]:
        n += 1
    return n, top[n]


def sample_chain(draft: list, q: Optional[torch.Tensor], logits: torch.Tensor, temperature: float,
                 generator: torch.Generator, rule: str = "exact") -> tuple[int, int]:
    """Speculative sampling of a chain. ``q`` [γ, V] (None: each draft token is a point mass)."""
    if rule not in RULES:
        raise ValueError(f"unknown acceptance rule {rule!r}")
    p_all = target_probs(logits, temperature)
    for i, d in enumerate(draft):
        p = p_all[i]
        qd = 1.0 if q is None else float(q[i, d])
        pd = float(p[d])
        if rule == "always":
            continue
        ratio = pd / qd if qd > 0 else float("inf")
        if _uniform(generator) < min(1.0, ratio):
            continue
        if rule == "ratio_no_residual":
            return i, _draw(p, generator)
        if q is None:
            res = p.clone()
            res[d] = 0.0
        else:
            res = (p - q[i].to(p.dtype)).clamp(min=0.0)
        s = float(res.sum())
        return i, _draw(res / s if s > 0 else p, generator)
    return len(draft), _draw(p_all[len(draft)], generator)


def _children(parents: list) -> dict:
    ch: dict = {}
    for j, p in enumerate(parents):
        ch.setdefault(p, []).append(j)
    return ch


def greedy_tree(tokens: list, parents: list, logits: torch.Tensor) -> tuple[list, int]:
    """``tokens``/``parents`` describe draft nodes (parent -1 = the root); ``logits`` [1+N, V] has the
    root's row first, then node j's at 1+j. Returns (accepted node indices root-to-leaf, next token)."""
    ch = _children(parents)
    top = logits.argmax(-1).tolist()
    path, node = [], -1
    while True:
        want = top[node + 1]
        nxt = next((c for c in ch.get(node, []) if tokens[c] == want), None)
        if nxt is None:
            return path, want
        path.append(nxt)
        node = nxt


def sample_tree(tokens: list, parents: list, logits: torch.Tensor, temperature: float,
                generator: torch.Generator) -> tuple[list, int]:
    """Exact recursive rejection sampling over a tree of deterministic candidates."""
    ch = _children(parents)
    p_all = target_probs(logits, temperature)
    path, node = [], -1
    while True:
        p = p_all[node + 1].clone()
        nxt = None
        for c in ch.get(node, []):
            d = tokens[c]
            s = float(p.sum())
            if s <= 0:
                break
            if _uniform(generator) < float(p[d]) / s:
                nxt = c
                break
            p[d] = 0.0
        if nxt is None:
            s = float(p.sum())
            return path, _draw(p / s if s > 0 else p_all[node + 1], generator)
        path.append(nxt)
        node = nxt
