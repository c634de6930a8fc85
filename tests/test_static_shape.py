"""Static shapes: every verification forward's real-state rows are the very bits the baseline computes at the
same static shape, for every shape the decoder can produce (cache modes, layouts, batch rows, CFG, threshold),
and every step runs one shape per block.

float32 tiny models whose widths are not multiples of a SIMD vector pair, so that a kernel that rounds a row
differently at another shape (the plain, unpadded comparison) would show here.
"""
import pytest
import torch

from spiffy import GenerationConfig
from spiffy.backends.tiny import tiny_backend
from spiffy.errors import ConfigError
from spiffy.sampling.baseline import generate_baseline
from spiffy.speculative import SpeculativeConfig, generate_speculative
from spiffy.bench.real_rows import real_row_identity

from .conftest import random_prompts


@pytest.fixture(scope="module")
def models():
    return {"llada": tiny_backend("llada", seed=0, dtype=torch.float32, mlp_hidden_size=72),
            "dream": tiny_backend("dream", seed=1, dtype=torch.float32, intermediate_size=72)}


SETTINGS = {"k1": {}, "k2": dict(tokens_per_step=2), "threshold": dict(threshold=0.3), "cfg": dict(cfg_scale=1.0)}


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("verify", ["batch", "packed"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_real_rows_are_the_static_baselines_bits(models, family, cache, verify, setting):
    backend = models[family]
    cfg = GenerationConfig(gen_length=24, block_length=12, cache=cache, **SETTINGS[setting])
    spec = SpeculativeConfig(budget=4, verify=verify, static=True, use_calibration=False)
    prompts = random_prompts(3, seed=11, lo=4, hi=11)
    with real_row_identity() as rows:
        for batch in ([prompts[0]], [prompts[1]], prompts[1:]):    # one row, and two rows of unequal length
            out = generate_speculative(backend, batch, cfg, spec)
            if verify == "batch" or cache == "dual":
                base = generate_baseline(backend, batch, spec.static_config(cfg))
                assert out.token_ids == base.token_ids
                assert out.nfe <= base.nfe
    (st,) = rows.values()
    assert st["calls"] > 3 and st["identical"] == st["calls"], st


def test_one_shape_per_block(models, monkeypatch):
    """A static decode runs the block's opening forward and then a single step shape (dual cache: one shape for
    the whole decode), in the baseline and in Spiffy alike."""
    backend = models["llada"]
    seen = []
    forward = type(backend).forward

    def record(self, input_ids, *a, **k):
        seen.append(tuple(input_ids.shape))
        return forward(self, input_ids, *a, **k)

    monkeypatch.setattr(type(backend), "forward", record)
    cfg = GenerationConfig(gen_length=36, block_length=12, cache="dual")
    prompt = random_prompts(1, seed=5, lo=6, hi=7)
    for verify in ("batch", "packed"):
        spec = SpeculativeConfig(budget=5, verify=verify, static=True, use_calibration=False)
        for run in (lambda: generate_speculative(backend, prompt, cfg, spec),
                    lambda: generate_baseline(backend, prompt, spec.static_config(cfg))):
            seen.clear()
            run()
            assert len(set(seen)) == 2, (verify, set(seen))    # the opening full forward + the one step shape


def test_static_shape_must_hold_the_calls(models):
    backend = models["llada"]
    prompt = random_prompts(1, seed=5)
    cfg = GenerationConfig(gen_length=24, block_length=12, cache="dual", static_drafts=2)
    with pytest.raises(ConfigError, match="static shape"):
        generate_speculative(backend, prompt, cfg, SpeculativeConfig(budget=4, use_calibration=False))
    with pytest.raises(ConfigError, match="static shape"):
        generate_speculative(backend, prompt, GenerationConfig(gen_length=24, block_length=12, cache="dual",
                                                               static_drafts=4, static_layout="packed"),
                             SpeculativeConfig(budget=4, verify="batch", use_calibration=False))
    with pytest.raises(ConfigError, match="static_drafts"):
        generate_baseline(backend, prompt, GenerationConfig(gen_length=24, block_length=12, static_drafts=-1))


def test_compiled_static_step():
    """torch.compile(fullgraph=True) of the forward at the static shapes: no graph break; compiled Spiffy's real
    rows are the compiled static baseline's bits (the same graph runs both); tokens equal the eager decode's."""
    backend = tiny_backend("llada", seed=0, dtype=torch.float32, mlp_hidden_size=72)
    prompt = random_prompts(1, seed=7, lo=6, hi=7)
    cfg = GenerationConfig(gen_length=24, block_length=12, cache="dual")
    spec = SpeculativeConfig(budget=4, static=True, use_calibration=False)
    eager = generate_speculative(backend, prompt, cfg, spec)
    backend.compile()
    with real_row_identity() as rows:
        base = generate_baseline(backend, prompt, spec.static_config(cfg))
        out = generate_speculative(backend, prompt, cfg, spec)
    assert out.token_ids == base.token_ids == eager.token_ids
    (st,) = rows.values()
    assert out.nfe < base.nfe and st["calls"] > 0 and st["identical"] == st["calls"]


def test_kv_buffer_equals_concatenation():
    """The in-place context buffer gives attention the same values and layout as concatenating the context in
    every call: the same bits, call after call (the query part overwritten in place)."""
    from spiffy.backends.layers import KVBuffer, attend

    g = torch.Generator().manual_seed(0)
    kc, vc = torch.randn(1, 2, 10, 8, generator=g), torch.randn(1, 2, 10, 8, generator=g)
    buf = KVBuffer(kc.expand(3, -1, -1, -1), vc.expand(3, -1, -1, -1))
    buf.reserve(5)
    for _ in range(3):
        q, k, v = torch.randn(3, 4, 5, 8, generator=g), torch.randn(3, 2, 5, 8, generator=g), torch.randn(3, 2, 5, 8, generator=g)
        assert torch.equal(attend(q, k, v, None, buf), attend(q, k, v, None, (kc, vc)))
    with pytest.raises(RuntimeError, match="reserve"):
        attend(q[:, :, :4], k[:, :, :4], v[:, :, :4], None, buf)


def test_step_rule_compiles_without_graph_breaks():
    """The greedy step rule (what the acceptance walk applies to each verified distribution) traces as one graph
    (fullgraph=True: no host sync inside), fixed-count and threshold, and gives the eager step's tokens."""
    from spiffy.sampling.step import denoise_step

    g = torch.Generator().manual_seed(3)
    logits, block = torch.randn(1, 8, 64, generator=g), torch.full((1, 8), 63)
    for cfg, counts in ((GenerationConfig(gen_length=16, block_length=8), [2]),
                        (GenerationConfig(gen_length=16, block_length=8, threshold=0.05), None)):
        def step(lg, blk, cfg=cfg, counts=counts):
            return denoise_step(lg, blk, 63, cfg, "llada", counts, None, 62, None).tokens

        assert torch.equal(torch.compile(step, fullgraph=True, dynamic=False)(logits, block), step(logits, block))


@pytest.mark.parametrize("setting", [dict(), dict(threshold=0.05)])
@torch.no_grad()
def test_verify_and_acceptance_trace_as_one_graph(setting):
    """torch.compile(fullgraph=True) of one greedy round, the verification forward (batch copies of the real state
    and its drafts) followed by the acceptance walk and the next draft source: no graph break, hence no host sync
    between the forward and the one copy the host reads; the compiled round gives the eager round's path and
    codes, and its summary to rounding."""
    from spiffy.sampling.loop import StepRule
    from spiffy.speculative.decoder import accept_on_device
    from spiffy.speculative.defaults import default_graph
    from spiffy.speculative.proposer import DraftSource
    from spiffy.speculative.walk import plan_round

    backend = tiny_backend("llada", seed=0, dtype=torch.float32, mlp_hidden_size=72)
    cfg = GenerationConfig(gen_length=8, block_length=8, **setting)
    step, M = StepRule.of(backend, cfg), backend.mask_id
    x = torch.tensor([random_prompts(1, seed=3, lo=8, hi=9)[0] + [M] * 8])
    rows = torch.arange(8, 16)
    first = backend.model(x, logits_index=rows).logits[0]
    block = tuple(x[0, 8:].tolist())
    schedule = step.schedule()
    rnd = plan_round(default_graph(4, None if schedule is None else schedule), block,
                     DraftSource.from_logits(first, 2, cfg, "llada", backend.eos_id, M), M, schedule, None)
    states, children = torch.tensor([rnd.states(block)]), torch.tensor([rnd.children()])
    iters = rnd.steps_deep() + 1

    def round_fn(x, states, children):
        ids = x.expand(states.shape[1], -1).clone()
        ids[:, 8:] = states[0]
        logits = backend.model(ids, logits_index=rows).logits
        return accept_on_device(step, logits, torch.zeros(1, dtype=torch.long), states, children, 0, 0, iters, 2)

    (path, out), (cpath, cout) = round_fn(x, states, children), torch.compile(
        round_fn, fullgraph=True, dynamic=False)(x, states, children)
    assert len(rnd.nodes) >= 3 and torch.equal(path, cpath)
    n = path.shape[1] * 9 + path.shape[1] + 1           # path, nodes and codes
    assert torch.equal(out[:, :n], cout[:, :n]) and torch.allclose(out, cout)


@pytest.mark.parametrize("setting", [dict(), dict(threshold=0.3)])
def test_compiled_step_sees_the_baselines_shape(monkeypatch, setting):
    """With a compiled backend at a static shape the greedy step rule is compiled too, and Spiffy's walk applies it
    to every row of the session: every call of the compiled step, the baseline's and the walk's, has the shape
    [B, n, V], so both run the same kernels. (torch.compile is replaced by a recorder: shapes, not speed.)"""
    from spiffy.sampling import loop

    backend = tiny_backend("llada", seed=0, dtype=torch.float32, mlp_hidden_size=72)
    backend.compiled = "recorded"
    shapes = []

    def record(fn, **kw):
        def run(logits, block, n_commit):
            shapes.append(tuple(logits.shape))
            return fn(logits, block, n_commit)
        return run

    monkeypatch.setattr(loop.torch, "compile", record)
    batch = random_prompts(2, seed=5, lo=5, hi=9)
    cfg = GenerationConfig(gen_length=24, block_length=12, cache="dual", **setting)
    spec = SpeculativeConfig(budget=3, static=True, use_calibration=False)
    base = generate_baseline(backend, batch, spec.static_config(cfg))
    n_base = len(shapes)
    out = generate_speculative(backend, batch, cfg, spec)
    assert out.token_ids == base.token_ids and out.nfe < base.nfe
    assert n_base == sum(base.block_steps) and len(shapes) > n_base
    assert set(shapes) == {(2, 12, backend.vocab_size)}


def test_compiled_static_batch_equals_compiled_static_baseline():
    """Two rows, compiled model and compiled step (real torch.compile): static Spiffy = the static baseline."""
    backend = tiny_backend("llada", seed=0, dtype=torch.float32, mlp_hidden_size=72)
    batch = random_prompts(2, seed=6, lo=5, hi=9)
    cfg = GenerationConfig(gen_length=24, block_length=12, cache="dual")
    spec = SpeculativeConfig(budget=3, static=True, use_calibration=False)
    backend.compile()
    base = generate_baseline(backend, batch, spec.static_config(cfg))
    out = generate_speculative(backend, batch, cfg, spec)
    assert out.token_ids == base.token_ids and out.nfe < base.nfe


def test_compiled_functions_take_a_graph_per_shape_beyond_torchs_default_limit():
    """One graph per shape (dynamic=False) and fullgraph: torch's default of 8 recompiles per function would be a
    hard failure at the 9th prompt length; compile_static allows a dozen and more."""
    from spiffy.devices import compile_static

    f = compile_static(lambda x: (x * 2).sum(-1))
    for n in range(1, 13):
        assert torch.equal(f(torch.ones(1, n)), torch.full((1,), 2.0 * n))
