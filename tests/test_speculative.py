"""Spiffy decoding is token-identical to the baseline in every composition, and really speculates.

Tiny float64 models, short generations. Each case also checks that the NFE the decoder measured
equals the NFE predicted by replaying the baseline's own trace with the same graph.
"""
import pytest
import torch

from spiffy import GenerationConfig
from spiffy.sampling.baseline import generate_baseline
from spiffy.speculative import SpeculativeConfig, generate_speculative
from spiffy.speculative.replay import provider_for, replay_nfe, trace_baseline

from .conftest import random_prompts


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny models: threading only adds overhead on a shared 2-core machine
    yield
    torch.set_num_threads(n)


SETTINGS = {
    "k1": dict(),
    "k2": dict(tokens_per_step=2),
    "uneven": dict(steps=6),                    # uneven schedule (LLaDA even split / Dream's schedule)
    "threshold": dict(threshold=0.4),
    "T1": dict(temperature=1.0),
    "cfg": dict(cfg_scale=1.5),
}
PROMPTS = random_prompts(3, seed=3, lo=4, hi=10)


def run_case(backend, setting, cache, verify, budget=8, prompts=PROMPTS, check_replay=True):
    cfg = GenerationConfig(gen_length=24, block_length=12, cache=cache, **SETTINGS[setting])
    spec = SpeculativeConfig(budget=budget, verify=verify)
    accepted = saved = 0
    for n, p in enumerate(prompts):
        base = generate_baseline(backend, [p], cfg)
        out = generate_speculative(backend, [p], cfg, spec)
        assert out.token_ids == base.token_ids, (setting, cache, verify, p)
        assert out.block_steps == base.block_steps
        assert out.stats.steps == sum(base.block_steps)
        assert out.nfe <= base.nfe
        assert out.stats.nfe == out.nfe
        accepted += out.stats.accepted
        saved += base.nfe - out.nfe
        if check_replay and n == 0:
            _, trace = trace_baseline(backend, p, cfg, 2)
            provider, _ = provider_for(backend, cfg, spec)
            pred = replay_nfe([trace], provider)
            assert pred["nfe"] == out.nfe, "the decoder must realise every saving its graph allows"
    return accepted, saved


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_batch_verify_is_lossless(family, cache, setting, tiny_llada, tiny_dream):
    backend = tiny_llada if family == "llada" else tiny_dream
    run_case(backend, setting, cache, "batch")


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_packed_verify_is_lossless_under_dual_cache(family, setting, tiny_llada, tiny_dream):
    backend = tiny_llada if family == "llada" else tiny_dream
    run_case(backend, setting, "dual", "packed")


def test_drafts_are_really_accepted(tiny_llada, tiny_dream):
    """The speculative path is exercised: drafts get accepted and model calls are saved."""
    for backend in (tiny_llada, tiny_dream):
        for setting in ("k1", "threshold", "T1"):
            accepted, saved = run_case(backend, setting, "dual", "batch", budget=10, check_replay=False)
            assert accepted > 0 and saved > 0, (backend.name, setting)


def test_wrong_noise_key_breaks_equality(tiny_llada, monkeypatch):
    """Sanity check that the equality tests can fail: a decoder drawing noise from the wrong key
    (one step late) does not reproduce the baseline at T > 0."""
    import spiffy.sampling.loop as loop

    cfg = GenerationConfig(gen_length=24, block_length=12, temperature=1.0)
    base = [generate_baseline(tiny_llada, [p], cfg).token_ids for p in PROMPTS]
    real = loop.step_generator
    monkeypatch.setattr(loop, "step_generator", lambda seed, b, t, device: real(seed, b, t + 1, device))
    diff = sum(generate_speculative(tiny_llada, [p], cfg, SpeculativeConfig(budget=3)).token_ids != want
               for p, want in zip(PROMPTS, base))
    assert diff > 0


def test_batched_prompts_with_early_stop(tiny_llada, tiny_dream):
    """B > 1 (left padding): rows decode independently, with the batched baseline's noise and stopping."""
    prompts = random_prompts(3, seed=11, lo=3, hi=12)
    for backend in (tiny_llada, tiny_dream):
        for kw in (dict(temperature=1.0, remasking="random"), dict(threshold=0.4, early_stop=True),
                   dict(temperature=0.7, cache="dual", early_stop=True)):
            cfg = GenerationConfig(gen_length=24, block_length=8, **kw)
            base = generate_baseline(backend, prompts, cfg)
            out = generate_speculative(backend, prompts, cfg, SpeculativeConfig(budget=5))
            assert out.token_ids == base.token_ids, (backend.name, kw)
            assert out.block_steps == base.block_steps


@pytest.mark.parametrize("verify", ["batch", "packed"])
def test_batch_decoded_as_a_batch(verify, tiny_llada, tiny_dream):
    """Rows at the same block step share one verification forward: each row's output is the one it gets
    alone, and the batch needs fewer calls than its rows one at a time (at least the shared block starts)."""
    prompts = random_prompts(3, seed=5, lo=3, hi=12)
    for backend in (tiny_llada, tiny_dream):
        for kw in (dict(), dict(threshold=0.4), dict(temperature=1.0, cfg_scale=1.0)):
            cfg = GenerationConfig(gen_length=24, block_length=8, cache="dual", **kw)
            spec = SpeculativeConfig(budget=5, verify=verify)
            batch = generate_speculative(backend, prompts, cfg, spec)
            alone = [generate_speculative(backend, [p], cfg, spec) for p in prompts]
            assert batch.token_ids == [a.token_ids[0] for a in alone], (backend.name, kw)
            assert batch.token_ids == generate_baseline(backend, prompts, cfg).token_ids
            mult = 2 if cfg.cfg_scale > 0 else 1
            assert max(a.nfe for a in alone) <= batch.nfe <= sum(a.nfe for a in alone) - 2 * cfg.num_blocks * mult
            assert batch.stats.rounds == sum(a.stats.rounds for a in alone)


def test_budget_zero_and_pruning(tiny_llada):
    cfg = GenerationConfig(gen_length=24, block_length=12)
    for p in PROMPTS[:2]:
        base = generate_baseline(tiny_llada, [p], cfg)
        zero = generate_speculative(tiny_llada, [p], cfg, SpeculativeConfig(budget=0))
        assert zero.token_ids == base.token_ids and zero.nfe == base.nfe and zero.stats.accepted == 0
        pruned = generate_speculative(tiny_llada, [p], cfg, SpeculativeConfig(budget=10, prune=3))
        assert pruned.token_ids == base.token_ids
        assert pruned.stats.drafts_verified <= 3 * pruned.stats.rounds


def test_public_api_and_stats(tiny_llada):
    import spiffy

    res = spiffy.generate(tiny_llada, PROMPTS[0], gen_length=24, block_length=12, cache="dual",
                          speculative=SpeculativeConfig(budget=5, verify="packed"))
    base = spiffy.generate(tiny_llada, PROMPTS[0], gen_length=24, block_length=12, cache="dual")
    assert res.token_ids == base.token_ids
    d = res.to_dict()["stats"]
    for k in ("nfe", "rounds", "accepted", "mean_accepted_per_round", "acceptance_by_depth", "acceptance_by_node",
              "time_split_s", "exact", "verify"):
        assert k in d
    assert d["exact"] is True and d["verify"] == "packed"
    assert d["nfe"] == res.nfe


def test_packed_without_dual_cache_warns_and_measures(tiny_llada):
    from spiffy.speculative import NearLosslessWarning

    cfg = GenerationConfig(gen_length=24, block_length=12, cache="none")
    with pytest.warns(NearLosslessWarning, match="NEAR-lossless"):
        out = generate_speculative(tiny_llada, [PROMPTS[0]], cfg,
                                   SpeculativeConfig(budget=5, verify="packed", measure_mismatch=True))
    st = out.stats
    assert st.exact is False
    assert st.mismatch_checked == st.accepted
    assert st.max_logit_diff is None or st.max_logit_diff >= 0


def test_bad_speculative_config(tiny_llada):
    from spiffy.errors import ConfigError
    from spiffy.speculative import default_graph

    cfg = GenerationConfig(gen_length=24, block_length=12)
    with pytest.raises(ConfigError, match="verify"):
        generate_speculative(tiny_llada, [PROMPTS[0]], cfg, SpeculativeConfig(verify="tree"))
    with pytest.raises(ConfigError, match="variable"):   # a fixed graph under threshold decoding
        generate_speculative(tiny_llada, [PROMPTS[0]], GenerationConfig(gen_length=24, block_length=12,
                                                                        threshold=0.5),
                             SpeculativeConfig(graph=default_graph(3, [1] * 4)))
    with pytest.raises(ConfigError, match="no draft could ever match"):   # a 1-token graph for 2 tokens/step
        generate_speculative(tiny_llada, [PROMPTS[0]], GenerationConfig(gen_length=24, block_length=12,
                                                                        tokens_per_step=2),
                             SpeculativeConfig(graph=default_graph(3, [1] * 4)))
