"""Draft graphs: invariants, JSON round trip, corrupt files refused, multi-parent walks, lookup hook."""
import json

import networkx as nx
import pytest
import torch

from spiffy.errors import ArtifactError
from spiffy.speculative import DEFAULT_BUDGETS, ROOT, default_graph, graph_from_dict, graph_to_dict, load_graph, \
    make_graph, save_graph
from spiffy.speculative.graph import budget_of, formula_str
from spiffy.speculative.proposer import DraftSource, Pruner, instantiate
from spiffy.speculative.walk import DONE, HIT, MISS, OFF, SAME, acceptance_walk, plan_round


def check_invariants(g):
    assert ROOT in g and nx.is_directed_acyclic_graph(g)
    counts = g.graph["counts"]
    for a, b in g.edges:
        assert set(a) < set(b)
        assert g.nodes[b]["depth"] == g.nodes[a]["depth"] + 1
        assert len(b) - len(a) == counts[g.nodes[a]["depth"]]
    for f in g.nodes:
        assert f == ROOT or nx.has_path(g, ROOT, f)


@pytest.mark.parametrize("budget", DEFAULT_BUDGETS)
@pytest.mark.parametrize("k", [1, 2, 4])
def test_default_graphs(budget, k):
    g = default_graph(budget, [k] * 16)
    assert budget_of(g) == budget
    check_invariants(g)
    assert ((0, 0),) in g or k > 1          # the top-1 chain starts every 1-token graph
    if budget >= 5 and k == 1:
        assert ((0, 0), (1, 0)) in g and g.in_degree(((0, 0), (1, 0))) == 2   # two parents


def test_threshold_graph_is_variable():
    g = default_graph(8, None)
    assert g.graph["mode"] == "variable" and budget_of(g) == 8
    for a, b in g.edges:
        assert set(a) < set(b)
    assert g.has_edge(ROOT, ((0, 0), (1, 0)))   # one threshold step may commit several tokens


@pytest.mark.parametrize("g", [default_graph(10, [1] * 16), default_graph(5, [2, 2, 2]), default_graph(6, None)])
def test_json_round_trip(g, tmp_path):
    p = save_graph(g, tmp_path / "g.json")
    h = load_graph(p)
    assert set(h.nodes) == set(g.nodes) and set(h.edges) == set(g.edges)
    assert h.graph["mode"] == g.graph["mode"] and h.graph.get("counts") == g.graph.get("counts")
    assert graph_to_dict(h) == graph_to_dict(g)


CORRUPT = {
    "truncated": '{"schema": "spiffy.draft_graph", "version": 1, "nodes": [',
    "wrong schema": json.dumps({"schema": "other", "version": 1}),
    "future version": json.dumps({"schema": "spiffy.draft_graph", "version": 99, "mode": "fixed", "counts": [1],
                                  "nodes": [{"id": 0, "picks": []}]}),
    "no root": json.dumps({"schema": "spiffy.draft_graph", "version": 1, "mode": "fixed", "counts": [1],
                           "nodes": [{"id": 1, "picks": [[0, 0]]}]}),
    "depth vs counts": json.dumps({"schema": "spiffy.draft_graph", "version": 1, "mode": "fixed", "counts": [1, 1],
                                   "nodes": [{"id": 0, "picks": []}, {"id": 1, "picks": [[0, 0], [1, 0], [2, 0]]}]}),
    "unreachable": json.dumps({"schema": "spiffy.draft_graph", "version": 1, "mode": "fixed", "counts": [1, 1],
                               "nodes": [{"id": 0, "picks": []}, {"id": 1, "picks": [[0, 0], [1, 0]]}]}),
    "illegal edge": json.dumps({"schema": "spiffy.draft_graph", "version": 1, "mode": "fixed", "counts": [1, 1],
                                "nodes": [{"id": 0, "picks": []}, {"id": 1, "picks": [[0, 0]]},
                                          {"id": 2, "picks": [[1, 0]]}, {"id": 3, "picks": [[0, 1], [1, 0]]}],
                                "edges": [[1, 3]]}),
    "bad pick": json.dumps({"schema": "spiffy.draft_graph", "version": 1, "mode": "fixed", "counts": [1],
                            "nodes": [{"id": 0, "picks": []}, {"id": 1, "picks": [[0, -1]]}]}),
    "repeated rank": json.dumps({"schema": "spiffy.draft_graph", "version": 1, "mode": "fixed", "counts": [2],
                                 "nodes": [{"id": 0, "picks": []}, {"id": 1, "picks": [[0, 0], [0, 1]]}]}),
    "wrong depth": json.dumps({"schema": "spiffy.draft_graph", "version": 1, "mode": "fixed", "counts": [1, 1],
                               "nodes": [{"id": 0, "picks": []}, {"id": 1, "picks": [[0, 0]], "depth": 2}]}),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_corrupt_graph_refused(name, tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(CORRUPT[name])
    with pytest.raises(ArtifactError) as e:
        load_graph(p)
    assert str(p) in str(e.value)


def test_missing_graph_file(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_graph(tmp_path / "nope.json")


def test_cycle_refused():
    g = default_graph(3, [1, 1])
    g.add_edge(((0, 0), (1, 0)), ROOT)
    from spiffy.speculative import validate_graph

    with pytest.raises(ArtifactError):
        validate_graph(g)


def source(top1, tokens):
    """A draft source over len(top1) positions with the given top-1 probabilities and token lists."""
    n = len(top1)
    probs = torch.tensor([[p, (1 - p) / 2] for p in top1], dtype=torch.float64)
    return DraftSource(torch.tensor(top1, dtype=torch.float64), torch.tensor(tokens), probs)


def test_node_reached_through_second_parent():
    """Graph {0:0}, {1:0}, {0:0,1:0}. The true path commits the rank-1 position first: the walk goes
    root -> {1:0} -> {0:0,1:0}, entering the depth-2 node through its second parent."""
    M = 99
    g = make_graph([[(0, 0)], [(1, 0)], [(0, 0), (1, 0)]], "fixed", [1, 1])
    assert set(g.predecessors(((0, 0), (1, 0)))) == {((0, 0),), ((1, 0),)}
    block = (M, 5, M, M)                        # position 1 committed; 0, 2, 3 masked
    src = source([0.2, 0.9, 0.7, 0.5], [[10, 11], [0, 0], [20, 21], [30, 31]])
    rnd = plan_round(g, block, src, M, [1, 1], None)
    # ranks: position 2 (0.7) -> rank 0, position 3 (0.5) -> rank 1, position 0 (0.2) -> rank 2
    assert rnd.inst.order == [2, 3, 0]
    assert rnd.inst.states[((1, 0),)] == (M, 5, M, 30)
    assert rnd.inst.states[((0, 0), (1, 0))] == (M, 5, 20, 30)
    # the baseline's true path: (M,5,M,30) -> (M,5,20,30) -> (7,5,20,30); the walk's steps come from the
    # distribution of the node it stands on, here simply the next state of that path
    true = [(M, 5, M, 30), (M, 5, 20, 30), (7, 5, 20, 30)]
    states = rnd.states(block)
    assert rnd.steps_deep() == 2
    path, at, code = acceptance_walk(lambda k, _: torch.tensor([true[k]]), torch.tensor([states]),
                                     torch.tensor([rnd.children()]), M, rnd.steps_deep() + 1)
    nodes = [None] + rnd.nodes
    assert [nodes[i] for i in at[0].tolist()] == [None, ((1, 0),), ((0, 0), (1, 0)), ((0, 0), (1, 0))]
    assert code[0].tolist() == [HIT, HIT, DONE]      # entered through the second parent; then no mask is left
    assert [tuple(p) for p in path[0].tolist()] == true


def test_walk_stops_at_a_miss_and_steps_through_empty_steps():
    """Per row: a step that commits nothing keeps the walk at its node (SAME); a state no child holds ends the
    path (MISS) and the steps after it are OFF; rows walk independently and the first matching child is taken."""
    M = 9
    states = torch.tensor([[[M, M, M], [1, M, M], [1, 2, M]],       # row 0: root, child, grandchild
                           [[M, M, M], [4, M, M], [M, M, M]]])      # row 1: root, child, padding (a root copy)
    children = torch.tensor([[[0, 1, 0], [0, 0, 1], [0, 0, 0]],
                             [[0, 1, 0], [0, 0, 0], [0, 0, 0]]], dtype=torch.bool)
    nxt = {0: [[1, M, M], [5, M, M]], 1: [[1, M, M], [5, 6, M]], 2: [[1, 2, M], [5, 6, 7]], 3: [[1, 2, 3], [0, 0, 0]]}
    path, at, code = acceptance_walk(lambda k, a: torch.tensor(nxt[k]), states, children, M, 4)
    assert code.tolist() == [[HIT, SAME, HIT, DONE], [MISS, OFF, OFF, OFF]]
    assert at.tolist() == [[0, 1, 1, 2, 2], [0, 0, 0, 0, 0]]
    assert path[0, 2].tolist() == [1, 2, M]


def test_instantiation_skips_impossible_nodes():
    M = 99
    g = default_graph(10, [1] * 8)
    inst = instantiate(g, (M, 1, 2, 3), source([0.5, 0.1, 0.1, 0.1], [[4, 5]] * 4), M, [1])
    assert set(inst.states) == {((0, 0),), ((0, 1),)}   # one masked position, one step left


def test_pruner_keeps_connected_best():
    M = 99
    g = default_graph(10, [1] * 8)
    src = source([0.9, 0.8, 0.7, 0.6, 0.5], [[1, 2]] * 5)
    rnd = plan_round(g, (M,) * 5, src, M, [1] * 5, Pruner(3))
    assert len(rnd.nodes) == 3
    for f in rnd.nodes:
        assert any(p == ROOT or p in rnd.nodes for p in g.predecessors(f))


def test_calibrated_lookup(tmp_path, tiny_llada):
    from spiffy import GenerationConfig
    from spiffy.speculative import SpeculativeConfig, generate_speculative
    from spiffy.speculative.calibrated import backend_fingerprint, calibrated_graph_for, setting_key

    cfg = GenerationConfig(gen_length=24, block_length=12)
    key = setting_key(cfg, "llada")
    assert key == "b12_k1"
    assert calibrated_graph_for(tiny_llada, cfg, "llada", 3, tmp_path) is None
    g = make_graph([[(0, 0)], [(0, 0), (1, 0)], [(0, 0), (1, 0), (2, 0)]], "fixed", [1, 1, 1],
                   meta={"model": "tiny-llada"})
    from spiffy.calibration.artifact import write_graph_artifact
    from spiffy.backends.fingerprint import model_fingerprint

    path = tmp_path / backend_fingerprint(tiny_llada) / key / "D3.json"
    write_graph_artifact(g, path, {"model": "tiny-llada", "fingerprint": model_fingerprint(tiny_llada)})
    assert calibrated_graph_for(tiny_llada, cfg, "llada", 3, tmp_path) == path
    out = generate_speculative(tiny_llada, [[1, 2, 3]], cfg, SpeculativeConfig(budget=3, calibration_dir=str(tmp_path)))
    assert out.stats.graph_source.startswith("calibrated:")
    assert set(out.stats.to_dict()["acceptance_by_node"]) <= {formula_str(f) for f in g.nodes}
