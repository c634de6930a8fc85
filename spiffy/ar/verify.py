"""Verification of a draft (a chain or a tree) against the target's logits.

Greedy: accept the longest prefix of the draft that equals the target's argmax, then take the
target's own next token — the output is exactly the target's greedy decoding.

Sampling (Leviathan et al. / Chen et al.): accept draft token d at a position with probability
min(1, p(d)/q(d)); on rejection draw from the normalised residual max(0, p − q); after a fully
accepted draft draw one more token from p. The output is distributed exactly as the target's own
sampling, provided d was drawn from q given everything to its left. A deterministic draft is the
point mass q = δ(d): accept with probability p(d), otherwise draw from p with d removed.

Trees of deterministic candidates use the recursive form (at a node try each child in turn, accept it
with probability p(child) under the current residual p, otherwise zero it out; when no child survives draw
from what is left), computed as the equivalent single draw per level (:func:`sample_tree`). Chains and trees
are verified on the device and read back once per round.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..devices import to_device
from .tree import node_depths

RULES = ("exact", "always", "ratio_no_residual")   # the last two are deliberately wrong (tests only)


def target_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.to(torch.float64) / temperature, dim=-1)


def greedy_chain(draft: list, logits: torch.Tensor) -> tuple[int, int]:
    """``logits`` [len(draft)+1, V]: row i predicts the token after draft[:i]. Returns (accepted, next)."""
    return accept_prefix(draft, logits.argmax(-1).tolist())


def accept_prefix(draft: list, top: list) -> tuple[int, int]:
    """``top``: the target's argmax after each prefix of the draft (len(draft) + 1 or more). Returns (accepted, next)."""
    n = 0
    while n < len(draft) and draft[n] == top[n]:
        n += 1
    return n, top[n]


def sample_chain(draft, q: Optional[torch.Tensor], logits: torch.Tensor, temperature: float,
                 generator: torch.Generator, rule: str = "exact", stop=()) -> torch.Tensor:
    """Speculative sampling of a chain, as tensor code on the logits' device (nothing is read back): returns
    [2] = (accepted, next token), for the caller to read in one copy. ``draft``: ids [γ], a list or a tensor
    (e.g. still on the device); a draft holding a stop token ends after it. ``q`` [γ, V] (None: each draft
    token is a point mass). One uniform per draft position is drawn, then one categorical draw: the
    uniforms past the first rejection are unused, which leaves every draw independent of the others, so the
    output is distributed exactly as the target's own sampling."""
    if rule not in RULES:
        raise ValueError(f"unknown acceptance rule {rule!r}")
    p_all = target_probs(logits, temperature)
    dev = p_all.device
    d = draft.to(dev) if isinstance(draft, torch.Tensor) else to_device(torch.tensor(draft, dtype=torch.long), dev)
    g = d.numel()
    if g == 0:
        return torch.cat([d.new_zeros(1), torch.multinomial(p_all[0], 1, generator=generator)])
    i = torch.arange(g, device=dev)
    pd = p_all[i, d]
    qd = torch.ones_like(pd) if q is None else q.to(dev)[i, d].to(torch.float64)
    ratio = torch.where(qd > 0, pd / qd.clamp(min=torch.finfo(torch.float64).tiny), torch.full_like(pd, float("inf")))
    u = torch.rand(g, generator=generator, dtype=torch.float64, device=dev)
    ok = torch.ones_like(pd, dtype=torch.bool) if rule == "always" else u < ratio.clamp(max=1.0)
    length = i.new_full((), g)
    if stop:
        is_stop = torch.isin(d, to_device(torch.tensor(sorted(stop), dtype=torch.long), dev))
        length = torch.where(is_stop.any(), is_stop.to(torch.uint8).argmax() + 1, length)
    n = torch.minimum(ok.to(torch.long).cumprod(0).sum(), length)
    p_n = p_all[n]
    j = n.clamp(max=g - 1)                                  # the rejected position (when n < length)
    if rule == "ratio_no_residual":
        res = p_n
    elif q is None:
        res = p_n.scatter(0, d[j][None], 0.0)
    else:
        res = (p_n - q.to(dev)[j].to(torch.float64)).clamp(min=0.0)
    dist = torch.where(n < length, res, p_n)
    dist = torch.where(dist.sum() > 0, dist, p_n)
    return torch.stack([n, torch.multinomial(dist, 1, generator=generator)[0]])


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
    """Exact sampling over a tree of deterministic candidates, as tensor code with one read at the end.

    At a node, recursive rejection tries each child c in turn with probability p(c) under what is left of p,
    and draws from the residual when none survives: child c_i is taken with probability p(c_i), and any other
    token y comes next with probability p(y). That is one draw x from p: descend when x is a child, else x is
    the next token; the same joint distribution of (path, next token), drawn on the device level by level."""
    p_all = target_probs(logits, temperature)
    dev = p_all.device
    if not tokens:
        return [], int(torch.multinomial(p_all[0], 1, generator=generator)[0])
    tok = to_device(torch.tensor(tokens, dtype=torch.long), dev)
    par = to_device(torch.tensor(parents, dtype=torch.long), dev)
    node = torch.full((), -1, dtype=torch.long, device=dev)
    live = torch.ones((), dtype=torch.bool, device=dev)
    nxt = node.clone()
    steps = []
    for _ in range(max(node_depths(parents)) + 1):
        x = torch.multinomial(p_all[node + 1], 1, generator=generator)[0]
        match = (par == node) & (tok == x)
        hit = live & match.any()
        nxt = torch.where(live & ~hit, x, nxt)
        node = torch.where(hit, match.to(torch.uint8).argmax(), node)
        steps.append(torch.where(hit, node, -1))
        live = hit
    host = torch.cat([torch.stack(steps), nxt[None]]).tolist()        # the round's one read
    return [j for j in host[:-1] if j >= 0], host[-1]
