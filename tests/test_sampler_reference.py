"""The project's sampler equals, token for token, a straightforward implementation of the reference
algorithms written here (LLaDA's generate.py and Dream's diffusion sampler): full-sequence forward,
full-vocabulary softmax over the whole sequence, no caching, no head projection tricks.

The one documented deviation from the references (spiffy/sampling/step.py `_never_mask`): the mask
token is never chosen as a candidate; the reference implementations below apply the same rule at the
point where they choose x0, and nowhere else.

Noise convention (documented in spiffy/sampling/noise.py): at step t of block b the random numbers
come from a generator keyed by (seed, b, t), drawn for the block's positions in order (one draw shared
by all rows of a batch); categorical draws use one uniform per position (inverse CDF).
"""
import pytest
import torch

from spiffy import GenerationConfig, generate
from spiffy.sampling.noise import step_generator

from .conftest import random_prompts


def ref_llada(model, prompt, mask_id, steps, gen_length, block_length, temperature=0.0, cfg_scale=0.0,
              remasking="low_confidence", seed=0):
    x = torch.full((1, len(prompt) + gen_length), mask_id, dtype=torch.long)
    x[0, :len(prompt)] = torch.tensor(prompt)
    prompt_index = x != mask_id
    nb = gen_length // block_length
    spb = steps // nb
    for b in range(nb):
        s = len(prompt) + b * block_length
        e = s + block_length
        bmask = x[:, s:e] == mask_id
        n = bmask.sum(dim=1, keepdim=True)
        base, rem = n // spb, n % spb
        ntt = torch.zeros(1, spb, dtype=torch.long) + base
        for i in range(1):
            ntt[i, :rem[i]] += 1
        for i in range(spb):
            mask_index = x == mask_id
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                both = model(torch.cat([x, un_x])).logits
                logits, un_logits = torch.chunk(both, 2, dim=0)
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            else:
                logits = model(x).logits
            gen = step_generator(seed, b, i, "cpu")
            if temperature > 0:
                lg = logits.to(torch.float64)
                noise = torch.ones_like(lg)
                noise[0, s:e] = torch.rand(lg[0, s:e].shape, dtype=torch.float64, generator=gen)
                scores = lg.exp() / (-torch.log(noise)) ** temperature
                scores[..., mask_id] = -float("inf")
                x0 = torch.argmax(scores, dim=-1)
            else:
                scores = logits.clone()
                scores[..., mask_id] = -float("inf")
                x0 = torch.argmax(scores, dim=-1)
            if remasking == "low_confidence":
                p = torch.softmax(logits.to(torch.float64), dim=-1)
                x0_p = torch.gather(p, -1, x0[..., None]).squeeze(-1)
            else:
                x0_p = torch.zeros(x0.shape, dtype=torch.float64)
                x0_p[0, s:e] = torch.rand((block_length,), dtype=torch.float64, generator=gen)
            x0_p[:, e:] = -float("inf")
            x0 = torch.where(mask_index, x0, x)
            conf = torch.where(mask_index, x0_p, torch.tensor(-float("inf"), dtype=torch.float64))
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            _, idx = torch.topk(conf[0], k=int(ntt[0, i]))
            transfer[0, idx] = True
            x[transfer] = x0[transfer]
    return x[0, len(prompt):].tolist()


def ref_dream(model, prompt, mask_id, steps, gen_length, temperature=0.0, alg="maskgit_plus", seed=0, eps=1e-3):
    """Dream's sampler over one block (the whole generation), logits shifted by one position."""
    x = torch.full((1, len(prompt) + gen_length), mask_id, dtype=torch.long)
    x[0, :len(prompt)] = torch.tensor(prompt)
    ts = torch.linspace(1, eps, steps + 1)
    s0 = len(prompt)
    for i in range(steps):
        mask_index = x == mask_id
        logits = model(x).logits
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        t, s = ts[i], ts[i + 1]
        gen = step_generator(seed, 0, i, "cpu")
        lg = logits[0, s0:].to(torch.float64)
        if temperature > 0:
            lg = lg / temperature
        probs = torch.softmax(lg, dim=-1)
        pick = probs.clone()
        pick[:, mask_id] = 0.0
        if temperature > 0:  # inverse-CDF draw with one uniform per position (spiffy's convention)
            u = torch.rand(pick.shape[0], dtype=torch.float64, generator=gen)
            cdf = pick.cumsum(-1)
            x0 = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(-1)
        else:
            x0 = pick.argmax(-1)
        conf = probs.gather(-1, x0[:, None]).squeeze(-1)
        if alg == "topk_margin":
            sp = probs.sort(-1, descending=True).values
            conf = sp[:, 0] - sp[:, 1]
        elif alg == "entropy":
            conf = (probs * torch.log(probs + 1e-10)).sum(-1)
        m = mask_index[0, s0:]
        full_conf = torch.where(m, conf, torch.tensor(-float("inf"), dtype=torch.float64))
        n_mask = int(m.sum())
        k = int(n_mask * (1 - s / t)) if i < steps - 1 else n_mask
        if k > 0:
            _, idx = torch.topk(full_conf, k)
            x[0, s0 + idx] = x0[idx]
    return x[0, s0:].tolist()


LLADA_CASES = [
    # gen, block, steps, temperature, cfg, remasking
    (16, 16, 16, 0.0, 0.0, "low_confidence"),
    (16, 8, 16, 0.0, 0.0, "low_confidence"),
    (24, 8, 12, 0.0, 0.0, "low_confidence"),
    (20, 4, 10, 0.0, 0.0, "low_confidence"),
    (16, 8, 6, 0.0, 0.0, "low_confidence"),   # uneven split: remainder to earliest steps
    (16, 8, 16, 0.8, 0.0, "low_confidence"),
    (24, 8, 12, 1.5, 0.0, "low_confidence"),
    (16, 8, 8, 0.0, 0.0, "random"),
    (16, 8, 16, 0.0, 1.5, "low_confidence"),
    (16, 8, 8, 0.7, 0.5, "low_confidence"),
]


@pytest.mark.parametrize("gen,block,steps,temp,cfg,remask", LLADA_CASES)
def test_llada_sampler_matches_reference(tiny_llada, gen, block, steps, temp, cfg, remask):
    for k, prompt in enumerate(random_prompts(3, seed=gen + block + steps)):
        seed = 7 + k
        ours = generate(tiny_llada, prompt, gen_length=gen, block_length=block, steps=steps, temperature=temp,
                        cfg_scale=cfg, remasking=remask, seed=seed)
        ref = ref_llada(tiny_llada.model, prompt, tiny_llada.mask_id, steps, gen, block, temp, cfg, remask, seed)
        assert ours.token_ids[0] == ref
        assert tiny_llada.mask_id not in ours.token_ids[0]
        assert ours.nfe == steps * (2 if cfg > 0 else 1)


@pytest.mark.parametrize("gen,steps,temp,alg", [(16, 16, 0.0, "maskgit_plus"), (16, 5, 0.0, "maskgit_plus"),
                                                (12, 12, 0.9, "maskgit_plus"), (16, 8, 0.0, "topk_margin"),
                                                (16, 7, 0.0, "entropy"), (12, 6, 0.6, "entropy")])
def test_dream_sampler_matches_reference(tiny_dream, gen, steps, temp, alg):
    remask = {"maskgit_plus": "low_confidence", "topk_margin": "margin", "entropy": "entropy"}[alg]
    for k, prompt in enumerate(random_prompts(3, seed=steps)):
        ours = generate(tiny_dream, prompt, gen_length=gen, block_length=gen, steps=steps, temperature=temp,
                        remasking=remask, seed=k)
        ref = ref_dream(tiny_dream.model, prompt, tiny_dream.mask_id, steps, gen, temp, alg, seed=k)
        assert ours.token_ids[0] == ref


def test_temperature_uses_keyed_noise(tiny_llada):
    """Different seeds give different samples; the same seed gives the same sample."""
    prompt = [1, 2, 3, 4]
    a = generate(tiny_llada, prompt, gen_length=16, block_length=8, temperature=2.0, seed=1).token_ids
    b = generate(tiny_llada, prompt, gen_length=16, block_length=8, temperature=2.0, seed=1).token_ids
    c = generate(tiny_llada, prompt, gen_length=16, block_length=8, temperature=2.0, seed=2).token_ids
    assert a == b
    assert a != c


def test_tokens_per_step_and_threshold(tiny_llada):
    prompt = [5, 6, 7]
    k2 = generate(tiny_llada, prompt, gen_length=16, block_length=8, tokens_per_step=2)
    s8 = generate(tiny_llada, prompt, gen_length=16, block_length=8, steps=8)
    assert k2.token_ids == s8.token_ids and k2.nfe == 8
    th = generate(tiny_llada, prompt, gen_length=16, block_length=8, threshold=0.3)
    assert tiny_llada.mask_id not in th.token_ids[0]
    assert sum(th.block_steps) == th.nfe <= 16
    one = generate(tiny_llada, prompt, gen_length=16, block_length=8, threshold=1.0)
    # confidence never reaches 1 exactly on this model: one token per step, like the 1-token sampler
    assert one.token_ids == generate(tiny_llada, prompt, gen_length=16, block_length=8).token_ids
