"""Formula counts and the possibility graph.

``count[f]`` = the number of round starts at which the state the baseline reached some steps later
equals formula f (how often f, as a draft, would have matched). The possibility graph holds every
counted formula with its count; an edge A -> B means B is one legal step after A (for fixed per-step
counts: B adds that step's number of picks to A; for threshold decoding: B was observed right after A
in a trace).
"""
from __future__ import annotations

import itertools
from collections import Counter
from typing import Optional, Sequence

import networkx as nx

from ..speculative.graph import ROOT


def formula_counts(block_chains: list) -> Counter:
    c = Counter()
    for bc in block_chains:
        for chain in bc.chains.values():
            c.update(chain)
    return c


def round_starts(block_chains: list) -> int:
    return sum(len(bc.chains) for bc in block_chains)


def step_parents(f: tuple, step_counts: Optional[Sequence[int]]) -> list:
    """Formulas one legal step before f (fixed per-step counts), root included."""
    if step_counts is None:
        return [tuple(p) for r in range(len(f)) for p in itertools.combinations(f, r)]
    cum, d = [0], 0
    for c in step_counts:
        cum.append(cum[-1] + c)
    if len(f) not in cum:
        return []
    d = cum.index(len(f))
    if d == 0:
        return []
    k = step_counts[d - 1]
    return [tuple(x for x in f if x not in drop) for drop in itertools.combinations(f, k)]


def possibility_graph(counts: Counter, block_chains: list, step_counts: Optional[Sequence[int]]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node(ROOT, count=round_starts(block_chains))
    for f, c in counts.items():
        g.add_node(f, count=c)
    if step_counts is not None:
        for f in counts:
            for p in step_parents(f, step_counts):
                if p in g:
                    g.add_edge(p, f)
    else:
        for bc in block_chains:
            for chain in bc.chains.values():
                prev = ROOT
                for f in chain:
                    g.add_edge(prev, f)
                    prev = f
    return g


def possibility_to_dict(g: nx.DiGraph) -> dict:
    order = sorted(g.nodes, key=lambda f: (len(f), f))
    ids = {f: i for i, f in enumerate(order)}
    return {"nodes": [{"id": ids[f], "picks": [list(p) for p in f], "count": g.nodes[f]["count"]} for f in order],
            "edges": sorted([ids[a], ids[b]] for a, b in g.edges)}
