"""KV-cache semantics (Fast-dLLM prefix and dual cache).

- The first step of each block (a full forward) equals the no-cache computation.
- A cached step equals a direct computation of the same attention, written here from the weights:
  positions outside the recomputed range keep the keys/values they had at block start.
"""
import pytest
import torch
import torch.nn.functional as F

from spiffy import GenerationConfig, generate
from spiffy.sampling.session import DecodeSession

from .conftest import random_prompts


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope(x, pos, theta):
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    f = pos.double()[:, None] * inv
    emb = torch.cat([f, f], -1)
    x1, x2 = x.chunk(2, -1)
    return x * emb.cos() + torch.cat([-x2, x1], -1) * emb.sin()


def manual_llada(model, ids, pos, frozen=None, recompute=None):
    """Direct LLaDA forward for one sequence. Returns logits [L, V] and per-layer (K, V) [L, H, D].
    With ``frozen`` (per-layer K, V from an earlier pass) and a boolean ``recompute`` [L], only the
    recomputed rows are computed; the others attend nowhere and contribute their frozen K, V."""
    c = model.config
    H, D = c.n_heads, c.d_model // c.n_heads
    t = model.model.transformer
    rows = torch.arange(len(ids)) if recompute is None else recompute.nonzero().squeeze(-1)
    x = t.wte.weight[ids[rows]]
    kvs = []
    for i, blk in enumerate(t.blocks):
        h = rms(x, blk.attn_norm.weight, c.rms_norm_eps)
        q = rope((h @ blk.q_proj.weight.T).view(-1, H, D).transpose(0, 1), pos[rows], c.rope_theta)
        k = rope((h @ blk.k_proj.weight.T).view(-1, H, D).transpose(0, 1), pos[rows], c.rope_theta)
        v = (h @ blk.v_proj.weight.T).view(-1, H, D).transpose(0, 1)
        if frozen is not None:
            K, V = frozen[i][0].clone(), frozen[i][1].clone()
            K[:, rows], V[:, rows] = k, v
        else:
            K, V = k, v
        kvs.append((K, V))
        att = torch.softmax(q @ K.transpose(-1, -2) / D ** 0.5, dim=-1) @ V
        x = x + att.transpose(0, 1).reshape(len(rows), -1) @ blk.attn_out.weight.T
        h = rms(x, blk.ff_norm.weight, c.rms_norm_eps)
        x = x + (F.silu(h @ blk.ff_proj.weight.T) * (h @ blk.up_proj.weight.T)) @ blk.ff_out.weight.T
    x = rms(x, t.ln_f.weight, c.rms_norm_eps)
    return x @ t.ff_out.weight.T, kvs


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_first_step_of_each_block_equals_no_cache(tiny_llada, cache):
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    cfg = GenerationConfig(gen_length=24, block_length=8)
    final = generate(tiny_llada, prompt, cfg).token_ids[0]
    for b in range(3):
        state = final[:b * 8] + [tiny_llada.mask_id] * (24 - b * 8)
        sessions = {}
        for mode in ("none", cache):
            s = DecodeSession(tiny_llada, [prompt], GenerationConfig(gen_length=24, block_length=8, cache=mode))
            s.x[0, len(prompt):] = torch.tensor(state)
            sessions[mode] = s.begin_block(b)
        torch.testing.assert_close(sessions["none"], sessions[cache], rtol=0, atol=1e-12)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cached_step_equals_direct_computation(tiny_llada, cache):
    prompt = [7, 7, 2, 9, 11, 4]
    P, G, n = len(prompt), 16, 8
    model = tiny_llada.model
    s = DecodeSession(tiny_llada, [prompt], GenerationConfig(gen_length=G, block_length=n, cache=cache))
    b = 1
    s.x[0, P:P + n] = torch.tensor([5, 6, 7, 8, 9, 10, 11, 12])  # block 0 finished
    s.begin_block(b)
    ids0 = s.x[0].clone()
    pos = torch.arange(P + G)
    _, frozen = manual_llada(model, ids0, pos)
    block = torch.full((1, n), tiny_llada.mask_id)
    block[0, [1, 4, 6]] = torch.tensor([20, 21, 22])
    got = s.block_logits(b, block)[0]
    ids1 = ids0.clone()
    ids1[P + n:P + 2 * n] = block[0]
    recompute = torch.zeros(P + G, dtype=torch.bool)
    recompute[P + n:P + 2 * n] = True
    if cache == "prefix":
        recompute[P + n:] = True
    logits, _ = manual_llada(model, ids1, pos, frozen, recompute)
    rows = torch.arange(n)  # the block is the first recomputed range
    torch.testing.assert_close(got, logits[rows], rtol=0, atol=1e-10)
    # and it really is an approximation: the no-cache logits of the same state differ
    full, _ = manual_llada(model, ids1, pos)
    assert (full[P + n:P + 2 * n] - got).abs().max() > 1e-6


def test_dream_cache_includes_shift_position(tiny_dream):
    """Dream's block position p is predicted at p-1; the cached query starts one before the block."""
    s = DecodeSession(tiny_dream, [[1, 2, 3]], GenerationConfig(gen_length=8, block_length=4, cache="dual"))
    assert s.query_range(0) == (2, 7)
    assert s.target_rows(0, 2).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_cached_decoding_is_deterministic_and_complete(family, cache, tiny_llada, tiny_dream):
    be = tiny_llada if family == "llada" else tiny_dream
    for prompt in random_prompts(3, seed=5):
        a = generate(be, prompt, gen_length=16, block_length=8, cache=cache, temperature=0.5, seed=3)
        b = generate(be, prompt, gen_length=16, block_length=8, cache=cache, temperature=0.5, seed=3)
        assert a.token_ids == b.token_ids
        assert be.mask_id not in a.token_ids[0]
        assert a.nfe == 16


def test_cached_queries_process_fewer_tokens(tiny_llada):
    prompt = list(range(20))
    tp = {c: generate(tiny_llada, prompt, gen_length=32, block_length=8, cache=c).tokens_processed
          for c in ("none", "prefix", "dual")}
    assert tp["dual"] < tp["prefix"] < tp["none"]
