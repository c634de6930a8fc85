"""Draft graphs used when no calibrated graph exists for a model and setting.

A default graph of budget D holds D draft nodes chosen greedily under a simple prior of how the
baseline moves: each committed position is the lowest still-masked position rank with probability
``a`` (else the next one with ``a (1 - a)``, ...), and its token is the top-1 token with probability
``b`` (else rank 1 with ``b (1 - b)``, ...). A node's prior is the sum over its parents of the
parent's prior times the step probability, so nodes with several parents count every way in. The
result is the top-1 chain (``{0:0}``, ``{0:0,1:0}``, ...) plus the best-ranked alternatives
(``{1:0}``, ``{0:1}``, ...), connected to the root. Threshold (variable) graphs also weigh the
number of tokens a step commits, fewer being likelier. ``a`` and ``b`` were chosen by replaying
baseline traces of five train-split prompts (GSM8K train, MBPP train) of an early reference-model
checkpoint; calibrated graphs replace these defaults.
"""
from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Optional, Sequence

import networkx as nx

from .graph import ROOT, make_graph

DEFAULT_BUDGETS = (1, 3, 5, 8, 10)
POS_KEEP = 0.7     # a: chance that a step's position is the next unused rank
TOK_KEEP = 0.9     # b: chance that a position gets its top-1 token
VAR_SIZE = 0.5     # threshold graphs: prior of committing m tokens in a step ~ VAR_SIZE ** (m - 1)


def _pick_prob(parent, i, j) -> float:
    used = {r for r, _ in parent}
    u = sum(1 for r in range(i) if r not in used)
    return POS_KEEP * (1 - POS_KEEP) ** u * TOK_KEEP * (1 - TOK_KEEP) ** j


def _children(parent, k: Optional[int]):
    """Candidate next states: add k picks (fixed) or 1-3 picks (variable) among the first few unused
    ranks, all top-1 tokens or one rank-1 token."""
    used = {r for r, _ in parent}
    free, r = [], 0
    while len(free) < (k or 3) + 2:
        if r not in used:
            free.append(r)
        r += 1
    sizes = [k] if k else [1, 2, 3]
    for m in sizes:
        for ranks in itertools.combinations(free, m):
            for flip in [None] + list(range(m)):
                picks = [(rk, 1 if q == flip else 0) for q, rk in enumerate(ranks)]
                yield tuple(sorted(parent + tuple(picks))), picks


def _step_prob(parent, picks, variable: bool) -> float:
    p = 1.0
    cur = parent
    for i, j in sorted(picks):
        p *= _pick_prob(cur, i, j)
        cur = tuple(sorted(cur + ((i, j),)))
    if variable:
        p *= VAR_SIZE ** (len(picks) - 1)
    return p


@lru_cache(maxsize=256)
def _default_nodes(budget: int, counts: Optional[tuple]) -> tuple:
    variable = counts is None
    kept = {ROOT: 1.0}
    frontier = {}

    def extend(node):
        depth = None if variable else _depth[node]
        if not variable and depth >= len(counts):
            return
        k = None if variable else counts[depth]
        for child, picks in _children(node, k):
            if child in kept:
                continue
            frontier.setdefault(child, {})[node] = _step_prob(node, picks, variable)
            if not variable:
                _depth[child] = depth + 1

    _depth = {ROOT: 0}
    extend(ROOT)
    while len(kept) - 1 < budget and frontier:
        # highest prior first; ties go to the lexicographically smallest picks (deterministic)
        best = max(frontier, key=lambda c: (sum(kept[p] * q for p, q in frontier[c].items()),
                                            [-x for x in sum(c, ())]))
        kept[best] = sum(kept[p] * q for p, q in frontier.pop(best).items())
        extend(best)
    return tuple(f for f in kept if f != ROOT)


def default_graph(budget: int, counts: Optional[Sequence[int]] = None, max_depth: Optional[int] = None) -> nx.DiGraph:
    """Default draft graph with ``budget`` draft nodes.

    ``counts``: tokens committed by each upcoming step (fixed-count samplers; e.g. ``[1] * 32`` for
    one token per step); None builds a threshold (variable) graph.
    """
    if budget < 0:
        raise ValueError("budget must be >= 0")
    if counts is not None:
        counts = tuple(int(c) for c in counts[: (max_depth or budget)] if c > 0)
        counts = counts[:budget]
    nodes = _default_nodes(int(budget), counts)
    if counts is not None:
        depth = max((_depth_of(f, counts) for f in nodes), default=0)
        counts = list(counts[:max(depth, 1)])
    return make_graph(nodes, "variable" if counts is None else "fixed", counts,
                      meta={"source": "default", "budget": int(budget)})


def _depth_of(f, counts) -> int:
    n, d, tot = len(f), 0, 0
    while tot < n:
        tot += counts[d]
        d += 1
    return d
