"""Instantiate draft formulas on a distribution, and the runtime pruning hook.

A :class:`DraftSource` is what a draft needs from a distribution over the block: every position's
top-1 probability (to rank positions) and its top tokens with their probabilities (to fill token
ranks). Instantiating a graph on (current block state, source) turns each formula into a concrete
block state: the current state with the picked tokens written at the picked positions. Position
ranks run over the *current* state's masked positions only.

Pruning (optional): a score function rates each node of a (larger) graph from the source's
probabilities, and the best ``keep`` nodes that stay connected to the root are verified.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import networkx as nx
import numpy as np
import torch

from ..sampling.step import candidate_logits
from .graph import ROOT, is_fixed, usable_depth


@dataclass
class DraftSource:
    """Per-position summary of one distribution over the block's n positions, on the host: numpy arrays
    (:meth:`from_logits`; CPU tensors are accepted too, e.g. in tests). Numpy also pickles fast (a torch tensor
    pickles through a torch.save of its storage: seconds for a calibration's tens of thousands of sources)."""

    top1: object        # [n] float64, probability of the most likely token
    tokens: object      # [n, K] int64, token ids by rank
    probs: object       # [n, K] float64, their probabilities

    @classmethod
    def from_logits(cls, logits: torch.Tensor, k: int, cfg=None, sampler: str = "llada", eos_id=None,
                    mask_id=None) -> "DraftSource":
        """``logits`` [n, V] (one row, after CFG); one device -> host copy (see :func:`source_summary`)."""
        return cls.from_summary(source_summary(logits, k, cfg, sampler, eos_id, mask_id).cpu().numpy())

    @classmethod
    def from_summary(cls, host) -> "DraftSource":
        """From a :func:`source_summary` row [n, 2K] read back to the host (numpy)."""
        k = host.shape[-1] // 2
        values = host[:, :k]
        return cls(values[:, 0].copy(), host[:, k:].astype(np.int64), values.copy())

    @property
    def k(self) -> int:
        return self.tokens.shape[1]


def source_summary(logits: torch.Tensor, k: int, cfg=None, sampler: str = "llada", eos_id=None,
                   mask_id=None) -> torch.Tensor:
    """What a draft source needs of ``logits`` [..., n, V] (after CFG), on their device: [..., n, 2K] float64,
    the top-K probabilities then their token ids (exact in float64 below 2**53), so that it comes back in
    one copy. Probabilities are the sampler's own (:func:`spiffy.sampling.step.candidate_logits`: EOS
    suppression, Dream's temperature and top-p/top-k); the mask token is never ranked (the sampler never
    commits it)."""
    l64 = logits.to(torch.float64) if cfg is None else candidate_logits(logits, cfg, sampler, eos_id)
    probs = torch.softmax(l64, dim=-1)
    if mask_id is not None:
        probs[..., mask_id] = -1.0
    k = max(1, min(k, probs.shape[-1] - 1))
    top = torch.topk(probs, k, dim=-1)
    return torch.cat([top.values, top.indices.to(torch.float64)], dim=-1)


def position_order(block: Sequence[int], source: DraftSource, mask_id: int) -> list:
    """The current state's masked positions, most confident first (ties: lower position first)."""
    masked = [p for p, t in enumerate(block) if t == mask_id]
    top1 = source.top1.tolist()
    return sorted(masked, key=lambda p: (-top1[p], p))


@dataclass
class Instantiation:
    """The drafts of one round: node -> concrete block state, and each node's picked-token probabilities."""

    states: dict           # node -> tuple of token ids (the block)
    pick_probs: dict       # node -> list of the source probabilities of its picked tokens
    order: list            # masked positions by rank
    confidence: list = field(default_factory=list)   # the source's top-1 probability of each, by rank
    block: tuple = ()      # the state the drafts are built on


def instantiate(graph: nx.DiGraph, block: Sequence[int], source: DraftSource, mask_id: int,
                upcoming: Optional[Sequence[int]] = None) -> Instantiation:
    """Concrete states for every node of ``graph`` that can be built on ``block`` (a list of ids):
    nodes deeper than the steps left (fixed graphs: whose counts disagree with ``upcoming``), or
    naming a position rank beyond the masked positions or a token rank beyond the source's, are left out."""
    order = position_order(block, source, mask_id)
    max_d = usable_depth(graph, upcoming) if is_fixed(graph) else 1 << 30
    tok = source.tokens.tolist()
    pr = source.probs.tolist()
    states, probs = {}, {}
    base = list(block)
    for f in graph.nodes:
        if f == ROOT:
            continue
        d = graph.nodes[f].get("depth")
        if is_fixed(graph) and (d is None or d > max_d):
            continue
        if any(i >= len(order) or j >= source.k for i, j in f):
            continue
        st = base.copy()
        pp = []
        for i, j in f:
            p = order[i]
            st[p] = tok[p][j]
            pp.append(pr[p][j])
        states[f] = tuple(st)
        probs[f] = pp
    top1 = source.top1
    return Instantiation(states, probs, order, [float(top1[p]) for p in order], tuple(base))


# ---------------------------------------------------------------------------------------------- pruning
ScoreFn = Callable[[nx.DiGraph, tuple, Instantiation], float]


def geometric_mean_score(graph: nx.DiGraph, node, inst: Instantiation) -> float:
    """Default node score: the geometric mean of the picked tokens' probabilities under the source."""
    pp = inst.pick_probs[node]
    if not pp:
        return 1.0
    return math.exp(sum(math.log(max(p, 1e-300)) for p in pp) / len(pp))


@dataclass
class Pruner:
    """Keep the ``keep`` best-scoring nodes per round, grown best-first from the root so that every
    kept node has a kept parent (a node with no kept parent could never be reached by the walk).

    ``score(graph, node, instantiation) -> float`` (higher = verify first); replace it with a
    calibrated scorer (e.g. one that also weighs a node's children)."""

    keep: int
    score: ScoreFn = geometric_mean_score

    def __call__(self, graph: nx.DiGraph, inst: Instantiation) -> set:
        if len(inst.states) <= self.keep:
            return set(inst.states)
        scores = {f: self.score(graph, f, inst) for f in inst.states}
        return {f for f, _ in best_first(graph, scores, self.keep)}


def best_first(graph: nx.DiGraph, scores: dict, limit: Optional[int] = None) -> list:
    """The scored nodes grown best-first from the root, each after a parent of it: [(node, score)], at most
    ``limit`` of them (ties: the smaller ranks first)."""
    out, kept = [], set()
    frontier = {c for c in graph.successors(ROOT) if c in scores}
    while frontier and (limit is None or len(out) < limit):
        best = max(frontier, key=lambda f: (scores[f], [-x for x in sum(f, ())]))
        out.append((best, scores[best]))
        kept.add(best)
        frontier.discard(best)
        frontier |= {c for c in graph.successors(best) if c in scores and c not in kept}
    return out
