"""The fitted acceptance model of cost-aware pruning: features, fit, storage in calibrated graphs, refit of a
set, and decodes that stay the baseline's with it."""
import json
import math
import shutil

import networkx as nx
import numpy as np
import pytest
import torch

from spiffy.calibration.acceptance_fit import acceptance_rows, auc, refit_set
from spiffy.errors import ArtifactError
from spiffy.sampling.baseline import generate_baseline
from spiffy.speculative import SpeculativeConfig, generate_speculative
from spiffy.speculative.acceptance import FEATURES, AcceptanceModel, acceptance_model, fit_logistic, node_features
from spiffy.speculative.calibrated import load_graph_artifact
from spiffy.speculative.cost_pruning import CostAwarePruner
from spiffy.speculative.graph import ROOT
from spiffy.speculative.proposer import Instantiation
from spiffy.speculative.replay import provider_for, replay_nfe, trace_baseline

from .conftest import random_prompts
from .test_calibration import tiny_calibration  # noqa: F401  (the fixture)

SET = ("tiny-llada", "b8_k1_g16_none")


def test_features_of_a_hand_built_round():
    A, C = ((0, 0),), ((0, 0), (1, 1))
    g = nx.DiGraph()
    g.add_edges_from([(ROOT, A), (A, C)])
    g.nodes[ROOT]["count"], g.nodes[A]["count"], g.nodes[C]["count"] = 10, 5, 2
    M = 9
    block = (7, M, M, 4, M, M)                  # masked: 1, 2, 4, 5
    order = [4, 1, 5, 2]                         # by confidence
    inst = Instantiation({A: (), C: ()}, {A: [0.5], C: [0.5, 0.2]}, order, [0.6, 0.5, 0.3, 0.1], block)
    fa = node_features(g, A, inst)
    assert list(fa) == list(FEATURES)
    assert list(fa.values()) == pytest.approx([math.log(0.5 + 1e-6), math.log(0.5 + 1e-6), math.log(0.1 + 1e-4), 4 / 6,
                                               1.0, 1.0, 0.0, math.log(0.5 + 1e-6)])
    fc = node_features(g, C, inst)             # picks positions 4 (next to 3) and 1 (next to 0); last rank 1
    assert list(fc.values()) == pytest.approx([math.log(0.2 + 1e-6), math.log(0.1 + 1e-6), math.log(0.2 + 1e-4), 4 / 6,
                                               1.0, 2.0, 1.0, math.log(0.2 + 1e-6)])
    inst.order = [5, 2, 4, 1]                  # 5 has masked neighbours only, 2 is next to 3
    assert node_features(g, A, inst)["adjacent"] == 0.0 and node_features(g, C, inst)["adjacent"] == 0.5


def test_logistic_fit_recovers_known_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 5)) * [1, 2, 0.5, 1, 3] + [0, 1, 0, -1, 2]
    w, b = np.array([1.0, -0.5, 2.0, 0.0, 0.3]), -0.7
    y = rng.random(20000) < 1 / (1 + np.exp(-(X @ w + b)))
    m = fit_logistic(X.tolist(), y.tolist())
    assert np.allclose(m.weights, w, atol=0.1) and m.bias == pytest.approx(b, abs=0.1)
    assert auc([m.prob(x) for x in X], y) > 0.75
    assert auc([0.1, 0.2, 0.9], [False, False, True]) == 1.0 and auc([0.9, 0.1], [False, True]) == 0.0
    with pytest.raises(ValueError, match="both accepted and rejected"):
        fit_logistic([[0.0] * 5] * 3, [True] * 3)


def test_quadratic_fit_recovers_an_interaction_a_linear_one_cannot():
    """Acceptance that needs two features at once (here: a probable pick early in the block, z0 * z1) is what the
    quadratic terms are for; the centre and scale of the features are kept so raw features go in."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20000, 3)) * [2, 0.5, 1] + [3, -1, 0]
    z = (X - [3, -1, 0]) / [2, 0.5, 1]
    y = rng.random(20000) < 1 / (1 + np.exp(-(2.0 * z[:, 0] * z[:, 1] - 0.5)))
    names = ("log_pick_prob", "masked_fraction", "depth")
    quad = fit_logistic(X.tolist(), y.tolist(), names, "quadratic")
    lin = fit_logistic(X.tolist(), y.tolist(), names, "linear")
    assert quad.terms == "quadratic" and len(quad.weights) == 3 + 6 and quad.features == names
    assert np.allclose(quad.center, X.mean(0)) and np.allclose(quad.scale, X.std(0))
    # terms z0, z1, z2, z0z0, z0z1, z0z2, z1z1, z1z2, z2z2: the product z0 z1 carries the signal
    assert quad.weights[4] == pytest.approx(2.0, abs=0.25) and quad.bias == pytest.approx(-0.5, abs=0.2)
    assert max(abs(w) for i, w in enumerate(quad.weights) if i != 4) < 0.2
    a_quad = auc([quad.prob(dict(zip(names, x))) for x in X], y)
    assert a_quad > 0.8 and auc([lin.prob(x) for x in X], y) < 0.6
    assert quad.prob(dict(zip(names, X[0]))) == quad.prob(list(X[0]))      # by name or in order
    with pytest.raises(ValueError, match="terms"):
        fit_logistic(X.tolist(), y.tolist(), names, "cubic")
    with pytest.raises(ValueError, match="feature columns"):
        fit_logistic(X.tolist(), y.tolist(), names[:2], "linear")


def test_meta_round_trip_and_malformed_models_refused():
    m = AcceptanceModel((1.0, 0.5, 0.2, -1.0, 1.0), 2.0)
    assert AcceptanceModel.from_meta(m.to_meta({"drafts": 3})) == m
    good = m.to_meta()
    legacy = {k: v for k, v in good.items() if k != "terms"}         # the first models were written without terms
    assert AcceptanceModel.from_meta(legacy) == m
    q = AcceptanceModel(tuple(round(0.1 * i, 1) for i in range(9)), -1.0, ("depth", "adjacent", "log_gap"), "quadratic",
                        (1.0, 0.5, -2.0), (0.5, 0.25, 1.0))
    assert AcceptanceModel.from_meta(q.to_meta()) == q
    qm = q.to_meta()
    for bad, why in (({**good, "features": ["log_frequency"]}, "finite weights"),
                     ({**good, "features": ["log_frequency"] * 5}, "distinct features"),
                     ({**good, "features": ["nope", "log_gap", "depth", "adjacent", "masked_fraction"]}, "features among"),
                     ({**good, "features": [["depth"]] * 5}, "features among"),
                     ({**good, "weights": [1.0] * 4}, "finite"), ({**good, "bias": float("nan")}, "finite"),
                     ({**good, "weights": [True] * 5}, "finite"), ("yes", "features"),
                     ({**good, "terms": "cubic"}, "terms"), ({**qm, "weights": [0.0] * 3}, "9 finite weights"),
                     ({k: v for k, v in qm.items() if k not in ("center", "scale")}, "center and scale"),
                     ({k: v for k, v in qm.items() if k != "scale"}, "both center and scale"),
                     ({**qm, "scale": [1.0, 0.0, 1.0]}, "scales positive"), ({**qm, "center": [1.0]}, "3 finite")):
        with pytest.raises(ArtifactError, match=why):
            AcceptanceModel.from_meta(bad)


def test_calibration_fits_one_model_per_graph_and_refit_reproduces_it(tiny_calibration, tmp_path):  # noqa: F811
    be, rows, cfg, out, run = tiny_calibration
    folder = out.joinpath(*SET)
    for D in (2, 4):
        acc = json.loads((folder / f"D{D}.json").read_text())["meta"]["acceptance"]
        assert acc["features"] == list(FEATURES) and acc["terms"] == "quadratic"
        assert 0 < acc["fit"]["reached"] < acc["fit"]["drafts"]
        g = load_graph_artifact(folder / f"D{D}.json", be)
        X, y = acceptance_rows(run.sets["calibration"].traces, g, cfg, "llada")
        assert len(y) == acc["fit"]["drafts"] and sum(y) == acc["fit"]["reached"]
    # a set written without models gets the same ones back from its own prompts
    copy = tmp_path / "root" / SET[0] / SET[1]
    shutil.copytree(folder, copy)
    for f in copy.glob("D*.json"):
        d = json.loads(f.read_text())
        want = d["meta"].pop("acceptance")
        f.write_text(json.dumps(d))
        d["meta"]["acceptance"] = want
        f.with_suffix(".want").write_text(json.dumps(d, sort_keys=True))
    written = refit_set(copy, be, chat=False)
    assert sorted(p.name for p in written) == ["D2.json", "D4.json"]
    for f in written:
        assert json.dumps(json.loads(f.read_text()), sort_keys=True) == f.with_suffix(".want").read_text()
    # a set re-traced with another model or setting is refused, and a malformed model is refused on load
    with pytest.raises(ArtifactError, match="baseline calls"):
        d = json.loads((copy / "D2.json").read_text())
        d["meta"]["calibration"]["baseline_calls"] += 1
        (copy / "D2.json").write_text(json.dumps(d))
        refit_set(copy, be, chat=False)
    from spiffy.backends.tiny import tiny_backend

    with pytest.raises(ArtifactError, match="different model"):
        refit_set(folder, tiny_backend("llada", seed=1, dtype=torch.float64), chat=False)
    d = json.loads((folder / "D4.json").read_text())
    d["meta"]["acceptance"]["weights"] = [1.0]
    (tmp_path / "D4.json").write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match="meta.acceptance"):
        load_graph_artifact(tmp_path / "D4.json", be)


def test_pruning_with_the_fitted_model_is_exact_and_used(tiny_calibration):  # noqa: F811
    """Decodes with a graph that carries a model equal the baseline, their NFE equals the replay's, and the
    model (not the heuristic) made the choice: a model that says 'never accepted' verifies no draft."""
    torch.set_num_threads(1)
    be, rows, cfg, out, run = tiny_calibration
    g = load_graph_artifact(out.joinpath(*SET, "D4.json"), be)
    assert acceptance_model(g) is not None
    cost = lambda n: 1 + 0.05 * (n - 1)  # noqa: E731
    verified = 0
    for p in random_prompts(3, seed=11, lo=4, hi=10):
        base = generate_baseline(be, [p], cfg)
        spec = SpeculativeConfig(graph=g, use_calibration=False, prune=CostAwarePruner(cost))
        res = generate_speculative(be, [p], cfg, spec)
        assert res.token_ids == base.token_ids
        _, trace = trace_baseline(be, p, cfg, 2)
        provider, _ = provider_for(be, cfg, spec)
        assert replay_nfe([trace], provider, CostAwarePruner(cost))["nfe"] == res.nfe
        verified += res.stats.drafts_verified
    assert verified > 0
    never = g.copy()
    never.graph = {**g.graph, "meta": {**g.graph["meta"], "acceptance": AcceptanceModel((0.0,) * 5, -50.0).to_meta()}}   # a linear one
    never.graph.pop("_acceptance_model", None)
    p = random_prompts(1, seed=11, lo=4, hi=10)[0]
    res = generate_speculative(be, [p], cfg, SpeculativeConfig(graph=never, use_calibration=False,
                                                               prune=CostAwarePruner(cost)))
    assert res.stats.drafts_verified == 0 and res.token_ids == generate_baseline(be, [p], cfg).token_ids


def test_refit_tool_bad_input_is_one_error_line(tmp_path, capsys):
    from spiffy.calibration.acceptance_fit import main

    assert main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing'}: no D<k>.json graphs to fit"
    (tmp_path / "D3.json").write_text("{")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'D3.json'}: not readable JSON") and "\n" not in err
    (tmp_path / "D3.json").write_text(json.dumps({"meta": {}}))
    assert main([str(tmp_path)]) == 2
    assert "not a Spiffy draft graph" in capsys.readouterr().err
    from spiffy.speculative.defaults import default_graph
    from spiffy.speculative.graph import graph_to_dict

    sampled = graph_to_dict(default_graph(3))
    sampled["meta"] = {"sampler": {"temperature_band": "T = 0.7"}}
    (tmp_path / "D3.json").write_text(json.dumps(sampled))
    assert main([str(tmp_path)]) == 2
    assert "only greedy calibration sets" in capsys.readouterr().err


def test_refit_tool_refuses_zero_threads(capsys):
    from spiffy.calibration.acceptance_fit import main

    with pytest.raises(SystemExit) as e:
        main(["anywhere", "--threads", "0"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("error: --threads must be at least 1 (got 0)")
