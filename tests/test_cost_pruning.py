"""Cost-aware runtime pruning: the kept drafts maximise expected steps per second, and the output never changes."""
import networkx as nx
import pytest
import torch

from spiffy import GenerationConfig
from spiffy.errors import ConfigError
from spiffy.sampling.baseline import generate_baseline
from spiffy.speculative import SpeculativeConfig, generate_speculative
from spiffy.speculative.cost_pruning import CostAwarePruner, cost_pruner
from spiffy.speculative.graph import ROOT
from spiffy.speculative.proposer import Instantiation
from spiffy.speculative.replay import provider_for, replay_nfe, trace_baseline

from .conftest import random_prompts

A, B, C = ((0, 0),), ((1, 0),), ((0, 0), (1, 0))


def round_of(probs: dict, counts=None):
    """A graph ROOT -> A -> C, ROOT -> B and one round's instantiation with these picked-token probabilities."""
    g = nx.DiGraph()
    g.add_edges_from([(ROOT, A), (ROOT, B), (A, C)])
    for node, n in (counts or {}).items():
        g.nodes[node]["count"] = n
    return g, Instantiation({f: (0,) for f in probs}, {f: list(p) for f, p in probs.items()}, [0, 1])


def test_keeps_the_prefix_with_the_most_steps_per_second():
    g, inst = round_of({A: [0.9], B: [0.05], C: [0.9, 0.5 / 0.9]})
    linear = CostAwarePruner(lambda n: 1 + 0.1 * (n - 1), scale=1.0)
    # best first: A (0.9), then C (0.5) now that A is in, then B (0.05):
    # k = 0: 1/1, k = 1: 1.9/1.1 = 1.73, k = 2: 2.4/1.2 = 2.0, k = 3: 2.45/1.3 = 1.88
    assert linear(g, inst) == {A, C}
    assert CostAwarePruner(lambda n: 1.0, scale=1.0)(g, inst) == {A, B, C}     # free drafts: all of them
    assert CostAwarePruner(lambda n: float(n), scale=1.0)(g, inst) == set()    # a draft costs a whole call: none


def test_a_child_is_never_kept_without_its_parent():
    linear = CostAwarePruner(lambda n: 1 + 0.1 * (n - 1), scale=1.0)
    # C looks certain (0.95) but hangs on A (0.05): order B, A, C; k = 1: 1.3/1.1 = 1.18, k = 2: 1.35/1.2 = 1.13,
    # k = 3: 2.3/1.3 = 1.77, so A is kept for what stands behind it
    g, inst = round_of({A: [0.05], B: [0.3], C: [0.05, 19.0]})
    assert linear(g, inst) == {A, B, C}
    # with C at 0.1 nothing behind A pays: k = 3 gives 1.45/1.3 = 1.12 < 1.18
    g, inst = round_of({A: [0.05], B: [0.3], C: [0.05, 2.0]})
    assert linear(g, inst) == {B}
    g, inst = round_of({A: [0.01], C: [0.01, 95.0]})                 # never C without A
    for cost in (lambda n: 1.0, lambda n: 1 + 0.1 * (n - 1), lambda n: float(n)):
        kept = CostAwarePruner(cost, scale=1.0)(g, inst)
        assert C not in kept or A in kept


def test_calibrated_counts_and_scale_enter_the_estimate():
    g, inst = round_of({A: [1.0], B: [1.0], C: [1.0, 1.0]}, counts={ROOT: 100, A: 40, B: 5, C: 30})
    p = CostAwarePruner(lambda n: 1 + 0.2 * (n - 1), scale=1.0)
    assert p.estimate(g, A, inst) == pytest.approx(0.4) and p.estimate(g, B, inst) == pytest.approx(0.05)
    assert CostAwarePruner(lambda n: 1.0, scale=5.0).estimate(g, A, inst) == 1.0      # capped
    # 1.4/1.2 = 1.17 > 1; + C: 1.7/1.4 = 1.21; + B: 1.75/1.6 = 1.09
    assert p(g, inst) == {A, C}


def test_bundled_table_and_bad_tables():
    p = cost_pruner("h100-llada8b-bf16")
    assert p.cost(1) == pytest.approx(0.014) and p.cost(9) > p.cost(8) > p.cost(1)
    with pytest.raises(ConfigError, match="no bundled table"):
        cost_pruner("no-such-table")
    with pytest.raises(ConfigError, match="non-negative integer or cost:TABLE"):
        SpeculativeConfig(prune="cost:").validate()
    with pytest.raises(ConfigError, match="no bundled table"):
        SpeculativeConfig(prune="cost:nope").validate()
    assert SpeculativeConfig(prune="3").validate().prune == 3
    assert SpeculativeConfig(prune="cost:h100-llada8b-bf16").pruner().name == "h100-llada8b-bf16"


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_cost_pruned_decode_equals_the_baseline_and_its_replay(tiny_llada, cache):
    """Tokens as the baseline's; NFE as the replay's with the same pruner; and the pruner does prune (some drafts
    verified, fewer than without it), so the test fails if pruning were a no-op or dropped everything."""
    torch.set_num_threads(1)
    cfg = GenerationConfig(gen_length=24, block_length=12, cache=cache)
    pruner = CostAwarePruner(lambda n: 1 + 0.01 * (n - 1))
    kept = full = 0
    for p in random_prompts(3, seed=5, lo=4, hi=10):
        base = generate_baseline(tiny_llada, [p], cfg)
        spec = SpeculativeConfig(budget=8, prune=pruner)
        out = generate_speculative(tiny_llada, [p], cfg, spec)
        assert out.token_ids == base.token_ids
        _, trace = trace_baseline(tiny_llada, p, cfg, 2)
        provider, _ = provider_for(tiny_llada, cfg, spec)
        assert replay_nfe([trace], provider, pruner)["nfe"] == out.nfe
        kept += out.stats.drafts_verified
        full += generate_speculative(tiny_llada, [p], cfg, SpeculativeConfig(budget=8)).stats.drafts_verified
    assert 0 < kept < full
