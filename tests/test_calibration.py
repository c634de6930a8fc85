"""Offline calibration: counts, objectives vs brute force, replay agreement, artifacts."""
import itertools
import json
import os
from collections import Counter

import pytest
import torch

from spiffy import ArtifactError, GenerationConfig, generate
from spiffy.calibration.artifact import load_graph_artifact, write_graph_artifact
from spiffy.calibration.counts import formula_counts, possibility_graph
from spiffy.backends.fingerprint import model_fingerprint
from spiffy.calibration.pipeline import CalibrationConfig, calibrate, graph_from_nodes
from spiffy.calibration.select import Candidates, objective_fn, select_nodes
from spiffy.calibration.simulate import IndexedChains, simulate
from spiffy.calibration.traces import BlockChains, block_chains
from spiffy.speculative import SpeculativeConfig
from spiffy.speculative.graph import ROOT, make_graph
from spiffy.speculative.proposer import DraftSource
from spiffy.speculative.replay import BlockTrace

M = 9  # mask id of the hand-built traces


def brute_force(cand: Candidates, budget: int, score) -> float:
    """Best score over all subsets of the pool (for tests and small checks)."""
    best = float("-inf")
    for S in itertools.combinations(cand.nodes, budget):
        S = set(S)
        if cand.connected(S):
            best = max(best, score(S))
    return best



def source(top1, toks):
    """A DraftSource over 4 positions: top-1 probabilities and token ids by rank."""
    n, k = len(toks), len(toks[0])
    probs = torch.tensor([[top1[p] / (r + 1) for r in range(k)] for p in range(n)], dtype=torch.float64)
    return DraftSource(torch.tensor(top1, dtype=torch.float64), torch.tensor(toks), probs)


def hand_trace():
    # block of 4 positions, 1 token per step: S0 all masked ... S4 full
    S = [(M, M, M, M), (M, 5, M, M), (M, 5, 6, M), (7, 5, 6, M), (7, 5, 6, 3)]
    src = [
        source([0.1, 0.9, 0.5, 0.2], [[1, 2], [5, 4], [6, 0], [3, 1]]),   # step 0 (produces S1)
        source([0.6, 0.0, 0.8, 0.3], [[2, 7], [5, 5], [6, 1], [1, 3]]),   # step 1: ranks 2 > 0 > 3
        source([0.9, 0.0, 0.0, 0.4], [[7, 1], [5, 5], [6, 6], [3, 2]]),
        source([0.0, 0.0, 0.0, 0.9], [[7, 7], [5, 5], [6, 6], [3, 1]]),
    ]
    return BlockTrace(S, src, [1, 1, 1, 1])


def test_counts_on_hand_built_trace():
    bc = block_chains(hand_trace(), M, max_depth=3)
    assert bc.steps == 4
    # round at S1, drafts from step 0's source, S1's masked positions 0, 2, 3 ranked by [0.1, 0.5, 0.2]:
    # position 2 -> rank 0, position 3 -> rank 1, position 0 -> rank 2.
    # S2 adds token 6 at position 2 (token rank 0) -> {(0,0)}; S3 adds 7 at position 0: 7 is not among
    # step 0's tokens [1, 2] at position 0 -> the chain stops.
    assert bc.chains[1] == [((0, 0),)]
    # round at S2, source of step 1: masked 0, 3 ranked by [0.6, 0.3]: 0 -> rank 0, 3 -> rank 1.
    # S3 = 7 at position 0: token rank 1 in [2, 7] -> {(0,1)}; S4 would be depth 2 but S4 = S_T needs no call.
    assert bc.chains[2] == [((0, 1),)]
    assert bc.chains[3] == []
    c = formula_counts([bc])
    assert c == Counter({((0, 0),): 1, ((0, 1),): 1})
    g = possibility_graph(c, [bc], [1, 1, 1])
    assert g.nodes[ROOT]["count"] == 3 and g.has_edge(ROOT, ((0, 1),))
    # replay: block start + round S1 (accepts S2) + round S3 = 3 calls instead of 4
    assert simulate([bc], {((0, 0),)})["nfe"] == 3
    assert simulate([bc], set())["nfe"] == 4


def synthetic():
    """A small possibility graph with several parents per node and hand-chosen chains."""
    a, b, c = ((0, 0),), ((1, 0),), ((0, 1),)
    ab, ac2, bb = ((0, 0), (1, 0)), ((0, 0), (2, 0)), ((1, 0), (2, 0))
    abc = ((0, 0), (1, 0), (2, 0))
    chains = [[a, ab, abc]] * 5 + [[b, ab]] * 4 + [[c]] * 6 + [[a, ac2]] * 3 + [[b, bb, abc]] * 2 + [[a]] * 2
    blocks = [BlockChains(len(ch) + 2, {1: ch, **{r: [] for r in range(2, len(ch) + 2)}}) for ch in chains]
    return blocks


@pytest.mark.parametrize("objective", ["frequency", "degree1", "saved"])
@pytest.mark.parametrize("budget", [1, 2, 3, 4, 5])
def test_exact_search_matches_brute_force(objective, budget):
    blocks = synthetic()
    counts = formula_counts(blocks)
    idx = IndexedChains(blocks)
    cand = Candidates(counts, [1, 1, 1], pool=64)
    score = objective_fn(objective, cand, idx)
    best = brute_force(cand, budget, score)
    got = select_nodes(counts, budget, objective, idx, [1, 1, 1], search="exact")
    assert len(got) == budget and cand.connected(got)
    assert score(got) == best


def test_greedy_saved_reaches_optimum_on_synthetic():
    blocks = synthetic()
    counts = formula_counts(blocks)
    idx = IndexedChains(blocks)
    cand = Candidates(counts, [1, 1, 1], pool=64)
    score = objective_fn("saved", cand, idx)
    for budget in (1, 2, 3, 4):
        got = select_nodes(counts, budget, "saved", idx, [1, 1, 1], search="greedy")
        assert score(got) == brute_force(cand, budget, score)


def test_objectives_disagree_where_they_should():
    """Frequency favours the popular but dead-end node c; 'saved' counts what the walk gains."""
    blocks = synthetic()
    counts = formula_counts(blocks)
    idx = IndexedChains(blocks)
    freq = select_nodes(counts, 2, "frequency", idx, [1, 1, 1], search="exact")
    saved = select_nodes(counts, 2, "saved", idx, [1, 1, 1], search="exact")
    cand = Candidates(counts, [1, 1, 1], 64)
    s = objective_fn("saved", cand, idx)
    assert s(saved) >= s(freq)


@pytest.fixture(scope="module")
def tiny_calibration(tmp_path_factory):
    from spiffy.backends.tiny import tiny_backend

    be = tiny_backend("llada", seed=0, dtype=torch.float64)
    rows = [{"id": i, "prompt": p} for i, p in enumerate(["abc def", "hello", "what is 2+3?", "the cat"])]
    cfg = GenerationConfig(gen_length=16, block_length=8)
    out = tmp_path_factory.mktemp("calib")
    run = calibrate(be, rows, cfg, CalibrationConfig([2, 4]), out_dir=out, chat=False, prompt_set="unit")
    return be, rows, cfg, out, run


def test_simulation_equals_decoder_and_replay(tiny_calibration):
    """The graph's predicted calls (the search's fast index, and the decode loop run over the trace)
    equal the Spiffy decoder's measured NFE, prompt by prompt."""
    from spiffy.speculative.replay import provider_for, replay_nfe

    be, rows, cfg, out, rep = tiny_calibration
    path = out / "tiny-llada" / "b8_k1_g16_none" / "D4.json"
    g = load_graph_artifact(path, be)
    calib = rep.sets["calibration"]
    provider, _ = provider_for(be, cfg, SpeculativeConfig(graph=g, use_calibration=False))
    for k, r in enumerate(rows):
        ids = be.encode_prompt(r["prompt"], chat=False)
        base = generate(be, ids, cfg)
        spec = generate(be, ids, cfg, speculative=SpeculativeConfig(graph=g, verify="batch"))
        assert spec.token_ids == base.token_ids
        blocks = calib.chains[k * cfg.num_blocks:(k + 1) * cfg.num_blocks]
        assert spec.nfe == simulate(blocks, set(g.nodes))["nfe"] == replay_nfe([calib.traces[k]], provider)["nfe"]


def test_decoder_picks_calibrated_graph(tiny_calibration, monkeypatch):
    be, rows, cfg, out, rep = tiny_calibration
    ids = be.encode_prompt(rows[0]["prompt"], chat=False)
    res = generate(be, ids, cfg, speculative=SpeculativeConfig(budget=4, calibration_dir=str(out)))
    assert "calibrated" in res.stats.to_dict().get("graph_source", "")


def test_artifact_records(tiny_calibration):
    be, rows, cfg, out, rep = tiny_calibration
    d = json.loads((out / "tiny-llada" / "b8_k1_g16_none" / "D2.json").read_text())
    meta = d["meta"]
    assert meta["artifact"] == "spiffy.calibration" and meta["artifact_version"] == 1
    assert meta["fingerprint"] == model_fingerprint(be)
    assert meta["prompt_set"]["size"] == 4 and (out / meta["prompt_set"]["file"]).exists()
    assert meta["objective"] == "saved" and meta["budget"] == 2
    assert all("count" in n for n in d["nodes"])
    counts = json.loads((out / "tiny-llada" / "b8_k1_g16_none" / "counts.json").read_text())
    assert counts["possibility_graph"]["nodes"]


def test_corrupt_truncated_and_mismatched_artifacts_refused(tiny_calibration, tmp_path):
    be, rows, cfg, out, rep = tiny_calibration
    src = (out / "tiny-llada" / "b8_k1_g16_none" / "D4.json").read_text()
    p = tmp_path / "D4.json"
    p.write_text(src[: len(src) // 2])
    with pytest.raises(ArtifactError, match="not readable JSON"):
        load_graph_artifact(p, be)
    d = json.loads(src)
    d["nodes"][1]["picks"] = [[0, 0], [0, 1]]
    p.write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match="same position rank twice"):
        load_graph_artifact(p, be)
    d = json.loads(src)
    d["meta"]["fingerprint"]["digest"] = "0" * 16
    d["meta"]["fingerprint"]["weights"] = "0" * 16
    p.write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match="different model.*weights"):
        load_graph_artifact(p, be)
    load_graph_artifact(p, be, allow_mismatch=True)  # the override for experiments
    d = json.loads(src)
    d["meta"]["artifact_version"] = 99
    p.write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match="unsupported calibration artifact version"):
        load_graph_artifact(p, be)
    other = type(be)(be.model, be.family, be.tokenizer, name="x", logit_shift=0)
    with torch.no_grad():
        other.model.model.transformer.ln_f.weight.add_(0.0)  # same weights: still matches
    load_graph_artifact(out / "tiny-llada" / "b8_k1_g16_none" / "D4.json", other)


def test_interrupted_write_leaves_old_file(tmp_path, monkeypatch):
    g = make_graph([((0, 0),)], "fixed", [1])
    path = tmp_path / "D1.json"
    write_graph_artifact(g, path, {"model": "m"})
    before = path.read_text()

    def boom(*a, **k):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "replace", boom)
    g2 = make_graph([((0, 0),), ((0, 0), (1, 0))], "fixed", [1, 1])
    with pytest.raises(KeyboardInterrupt):
        write_graph_artifact(g2, path, {"model": "m"})
    assert path.read_text() == before
    assert [f.name for f in tmp_path.iterdir()] == ["D1.json"]  # no temporary left behind


def test_graph_from_nodes_variable_mode():
    g = graph_from_nodes({((0, 0),), ((0, 0), (1, 0), (2, 0))}, None)
    assert g.graph["mode"] == "variable" and g.has_edge(((0, 0),), ((0, 0), (1, 0), (2, 0)))


def test_calibrate_cli_writes_artifacts_and_plots(tmp_path):
    from click.testing import CliRunner

    from spiffy.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in ["abc", "hello there", "2+2=?"]))
    out = tmp_path / "cal"
    r = CliRunner().invoke(main, ["calibrate", "--model", "tiny-llada", "--dataset", str(prompts), "--budgets", "2,3",
                                  "--gen-length", "16", "--block-length", "8", "--out", str(out), "--plot", "--raw",
                                  "--heldout", str(prompts), "--heldout-limit", "2"])
    assert r.exit_code == 0, r.output
    folder = out / "tiny-llada" / "b8_k1_g16_none"
    for f in ("D2.json", "D3.json", "D2.png", "counts.json", "report.json", "nfe_reduction.png"):
        assert (folder / f).exists(), f
    assert "ceiling" in r.output and "default" in r.output
    r = CliRunner().invoke(main, ["calibrate", "--model", "tiny-llada", "--dataset", str(prompts), "--budgets", "0"])
    assert r.exit_code != 0 and "must be integers in [1, 64]" in r.output


def test_runtime_pruning_replay_equals_decoder(tiny_calibration):
    """A calibrated D=4 graph pruned to 2 nodes per round by the child-aware score: the replayed NFE
    equals the decoder's, outputs stay identical, and pruning sits between the D=2 and D=4 graphs."""
    from spiffy.calibration.pipeline import evaluate_pruned, trace_set
    from spiffy.calibration.pruning import calibrated_pruner

    be, rows, cfg, out, rep = tiny_calibration
    g = load_graph_artifact(out / "tiny-llada" / "b8_k1_g16_none" / "D4.json", be)
    ts = trace_set(be, "h", rows[:2], cfg, 4, chat=False)
    pred = evaluate_pruned(be, cfg, ts, g, keep=2)
    nfe = 0
    for r in rows[:2]:
        ids = be.encode_prompt(r["prompt"], chat=False)
        res = generate(be, ids, cfg, speculative=SpeculativeConfig(graph=g, prune=calibrated_pruner(2)))
        assert res.token_ids == generate(be, ids, cfg).token_ids
        assert res.stats.drafts_verified <= 2 * res.stats.rounds
        nfe += res.nfe
    assert nfe == pred["calls"]
    assert simulate(ts.chains, set(g.nodes))["nfe"] <= pred["calls"] <= ts.baseline
