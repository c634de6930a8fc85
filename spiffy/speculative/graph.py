"""Draft formulas and the directed draft graph: construction, validation and the JSON schema.

A *formula* is a set of picks ``(i, j)``: "the position of rank i gets the token of rank j".
Position ranks order the current block's masked positions by the top-1 probability of the
distribution the draft is built from (rank 0 = most confident); token ranks order the vocabulary at
that position (rank 0 = most likely). A formula is stored as a sorted tuple of pairs with distinct
position ranks; the empty tuple is the root (the current state itself).

The *draft graph* is a ``networkx.DiGraph`` whose nodes are formulas. An edge A -> B means B is
exactly one step of the baseline sampler after A: B contains A and adds the tokens that step
commits. Two kinds of graph exist:

- ``mode="fixed"``: the sampler commits a known number of tokens per step (1 token/step, k
  tokens/step, LLaDA's or Dream's schedules). ``counts[d]`` is the number of tokens step d+1
  commits, so a node at depth d has ``sum(counts[:d])`` picks and every edge adds ``counts[depth]``.
- ``mode="variable"``: confidence-threshold decoding commits a data-dependent number of tokens
  (at least one). A node is just a state; an edge A -> B means B strictly contains A (one step may
  commit any positive number of tokens). A node's "depth" is then the fewest steps that can reach
  it (the shortest path from the root); a node can be reached in different numbers of steps.

Edges are implied by the nodes: every legal edge between two nodes of the graph is present
(:func:`complete_edges`). A file may list edges; they are checked and missing ones are added.

JSON schema (``"schema": "spiffy.draft_graph", "version": 1``)::

    {
      "schema": "spiffy.draft_graph", "version": 1,
      "mode": "fixed",                 # or "variable"
      "counts": [1, 1, 1, 1],          # fixed mode only: tokens committed by step 1, 2, ...
      "nodes": [{"id": 0, "picks": []}, {"id": 1, "picks": [[0, 0]], "depth": 1}, ...],
      "edges": [[0, 1], ...],          # optional; node ids
      "meta": {"model": "...", "setting": "...", "objective": "...", ...}   # free-form
    }

``depth`` per node is optional (computed); when given it must agree.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import networkx as nx

from ..errors import ArtifactError

SCHEMA = "spiffy.draft_graph"
VERSION = 1
ROOT: tuple = ()

Formula = tuple  # tuple[tuple[int, int], ...], sorted by position rank


def formula(picks: Iterable) -> Formula:
    """Canonical formula from an iterable of (position rank, token rank) pairs."""
    out = []
    for p in picks:
        if len(p) != 2:
            raise ArtifactError(f"a pick must be a (position rank, token rank) pair, got {p!r}")
        i, j = p
        if isinstance(i, bool) or isinstance(j, bool) or not isinstance(i, int) or not isinstance(j, int):
            raise ArtifactError(f"pick ranks must be integers, got {p!r}")
        if i < 0 or j < 0:
            raise ArtifactError(f"pick ranks must be non-negative, got {p!r}")
        out.append((i, j))
    out.sort()
    ranks = [i for i, _ in out]
    if len(set(ranks)) != len(ranks):
        raise ArtifactError(f"formula {out} picks the same position rank twice")
    return tuple(out)


def formula_str(f: Formula) -> str:
    return "{" + ",".join(f"{i}:{j}" for i, j in f) + "}"


def is_fixed(graph: nx.DiGraph) -> bool:
    return graph.graph.get("mode", "fixed") == "fixed"


def counts_of(graph: nx.DiGraph) -> list:
    return list(graph.graph.get("counts") or [])


def node_frequency(graph: nx.DiGraph, node) -> float:
    """How often the calibration walk reached ``node``: its ``count`` over the root's (the rounds of the
    calibration traces); 1 for a graph without counts."""
    rounds = graph.nodes[ROOT].get("count")
    return graph.nodes[node].get("count", rounds) / rounds if rounds else 1.0


def budget_of(graph: nx.DiGraph) -> int:
    """Number of draft nodes (the root is the current state, not a draft)."""
    return graph.number_of_nodes() - (1 if ROOT in graph else 0)


def max_token_rank(graph: nx.DiGraph) -> int:
    return max((j for f in graph.nodes for _, j in f), default=0)


def _edge_ok(graph: nx.DiGraph, a: Formula, b: Formula) -> bool:
    sa, sb = set(a), set(b)
    if not sa < sb:
        return False
    if not is_fixed(graph):
        return True
    counts = counts_of(graph)
    d = graph.nodes[a]["depth"]
    return d < len(counts) and len(sb) - len(sa) == counts[d] and graph.nodes[b]["depth"] == d + 1


def _fixed_depth(f: Formula, cum: list) -> Optional[int]:
    n = len(f)
    return cum.index(n) if n in cum else None


def make_graph(nodes: Iterable, mode: str = "fixed", counts: Optional[Sequence[int]] = None,
               meta: Optional[dict] = None) -> nx.DiGraph:
    """Build a validated draft graph from formulas (the root is added), with every implied edge."""
    if mode not in ("fixed", "variable"):
        raise ArtifactError(f"graph mode must be 'fixed' or 'variable', got {mode!r}")
    g = nx.DiGraph(mode=mode, counts=list(counts or []) if mode == "fixed" else None, meta=dict(meta or {}))
    g.add_node(ROOT, depth=0)
    cum = [0]
    for c in (counts or []):
        cum.append(cum[-1] + c)
    for f in nodes:
        f = formula(f)
        if f == ROOT:
            continue
        if mode == "fixed":
            d = _fixed_depth(f, cum)
            if d is None or d == 0:
                raise ArtifactError(f"node {formula_str(f)} has {len(f)} picks, which is no depth of a graph whose "
                                    f"steps commit {list(counts or [])} tokens")
            g.add_node(f, depth=d)
        else:
            g.add_node(f, depth=None)
    complete_edges(g)
    if mode == "variable":
        lengths = nx.single_source_shortest_path_length(g, ROOT)
        for f in g.nodes:
            g.nodes[f]["depth"] = lengths.get(f)
    validate_graph(g)
    return g


def complete_edges(g: nx.DiGraph) -> nx.DiGraph:
    """Add every legal edge between nodes of ``g`` (edges are implied by the nodes)."""
    nodes = list(g.nodes)
    for a in nodes:
        for b in nodes:
            if a != b and not g.has_edge(a, b) and _edge_ok(g, a, b):
                g.add_edge(a, b)
    return g


def validate_graph(g: nx.DiGraph) -> nx.DiGraph:
    """Check the invariants: root present, acyclic, every edge one legal step, depths consistent with
    the per-step counts, every node reachable from the root. Raises ArtifactError."""
    if ROOT not in g:
        raise ArtifactError("draft graph has no root (the empty formula)")
    if not nx.is_directed_acyclic_graph(g):
        raise ArtifactError("draft graph has a cycle")
    mode = g.graph.get("mode", "fixed")
    if mode not in ("fixed", "variable"):
        raise ArtifactError(f"graph mode must be 'fixed' or 'variable', got {mode!r}")
    if mode == "fixed":
        counts = counts_of(g)
        if any((not isinstance(c, int)) or c <= 0 for c in counts):
            raise ArtifactError(f"counts must be positive integers, got {counts}")
        cum = [0]
        for c in counts:
            cum.append(cum[-1] + c)
        for f, data in g.nodes(data=True):
            d = data.get("depth")
            if d is None or d >= len(cum) or len(f) != cum[d]:
                raise ArtifactError(f"node {formula_str(f)} ({len(f)} picks) is inconsistent with depth {d} and "
                                    f"per-step counts {counts}")
    for a, b in g.edges:
        if not _edge_ok(g, a, b):
            raise ArtifactError(f"edge {formula_str(a)} -> {formula_str(b)} is not one legal step of the sampler")
    if g.in_degree(ROOT) != 0:
        raise ArtifactError("the root has a parent")
    reach = nx.descendants(g, ROOT) | {ROOT}
    lost = [f for f in g.nodes if f not in reach]
    if lost:
        raise ArtifactError(f"{len(lost)} node(s) cannot be reached from the root, e.g. {formula_str(lost[0])}")
    return g


# ---------------------------------------------------------------------------------------------- JSON
def graph_to_dict(g: nx.DiGraph) -> dict:
    order = sorted(g.nodes, key=lambda f: (len(f), f))
    ids = {f: k for k, f in enumerate(order)}
    nodes = []
    for f in order:
        row = {"id": ids[f], "picks": [list(p) for p in f], "depth": g.nodes[f].get("depth")}
        for k, v in g.nodes[f].items():
            if k not in ("depth",) and isinstance(v, (int, float, str, bool)):
                row[k] = v
        nodes.append(row)
    out = {"schema": SCHEMA, "version": VERSION, "mode": g.graph.get("mode", "fixed")}
    if is_fixed(g):
        out["counts"] = counts_of(g)
    out["nodes"] = nodes
    out["edges"] = sorted([ids[a], ids[b]] for a, b in g.edges)
    out["meta"] = dict(g.graph.get("meta") or {})
    return out


def graph_from_dict(d: dict, where: str = "graph") -> nx.DiGraph:
    def bad(msg):
        raise ArtifactError(f"{where}: {msg}")

    if not isinstance(d, dict):
        bad("not a JSON object")
    if d.get("schema") != SCHEMA:
        bad(f"not a Spiffy draft graph (schema {d.get('schema')!r}, expected {SCHEMA!r})")
    if d.get("version") != VERSION:
        bad(f"unsupported draft-graph version {d.get('version')!r} (this spiffy reads version {VERSION})")
    mode = d.get("mode", "fixed")
    if mode not in ("fixed", "variable"):
        bad(f"mode must be 'fixed' or 'variable', got {mode!r}")
    counts = d.get("counts")
    if mode == "fixed" and (not isinstance(counts, list) or not counts):
        bad("a fixed-mode graph needs a non-empty 'counts' list (tokens committed by each step)")
    nodes = d.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        bad("'nodes' must be a non-empty list")
    by_id = {}
    try:
        for row in nodes:
            if not isinstance(row, dict) or "id" not in row or "picks" not in row:
                bad(f"every node needs 'id' and 'picks', got {row!r}")
            if row["id"] in by_id:
                bad(f"duplicate node id {row['id']!r}")
            by_id[row["id"]] = (formula(row["picks"]), row)
        formulas = [f for f, _ in by_id.values()]
        if len(set(formulas)) != len(formulas):
            bad("two nodes have the same formula")
        if ROOT not in formulas:
            bad("no root node (a node with empty picks: the current state)")
        g = make_graph(formulas, mode, counts, d.get("meta"))
    except ArtifactError as e:
        if str(e).startswith(where):
            raise
        bad(str(e))
    for f, row in by_id.values():
        if row.get("depth") is not None and row["depth"] != g.nodes[f]["depth"]:
            bad(f"node {row['id']} {formula_str(f)} says depth {row['depth']}, but its picks put it at depth "
                f"{g.nodes[f]['depth']}")
        for k, v in row.items():
            if k not in ("id", "picks", "depth"):
                g.nodes[f][k] = v
    for e in d.get("edges") or []:
        if not (isinstance(e, list) and len(e) == 2 and e[0] in by_id and e[1] in by_id):
            bad(f"edge {e!r} does not name two node ids")
        a, b = by_id[e[0]][0], by_id[e[1]][0]
        if not g.has_edge(a, b):
            bad(f"edge {e!r} ({formula_str(a)} -> {formula_str(b)}) is not one legal step of the sampler")
    return g


def save_graph(g: nx.DiGraph, path: Union[str, Path]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(graph_to_dict(g), indent=1) + "\n")
    return p


def load_graph(path: Union[str, Path]) -> nx.DiGraph:
    """Read and validate a draft graph file. Raises ArtifactError with the reason on any problem."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"draft graph file {p} does not exist")
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{p}: not readable JSON ({e})") from None
    return graph_from_dict(d, where=str(p))


def usable_depth(g: nx.DiGraph, upcoming: Optional[Sequence[int]]) -> int:
    """How deep a fixed graph can be used when the next steps commit ``upcoming`` tokens (its counts
    must agree level by level); variable graphs: unlimited (returns a large number)."""
    if not is_fixed(g):
        return 1 << 30
    counts = counts_of(g)
    d = 0
    up = list(upcoming or [])
    while d < len(counts) and d < len(up) and counts[d] == up[d]:
        d += 1
    return d
