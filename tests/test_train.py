"""The training recipe on a tiny synthetic corpus (seconds, CPU, no data directory needed)."""
import json
import math
from pathlib import Path

import pytest
import torch

from spiffy_train.objectives import block_forward_process, causal_lm_loss, forward_process, masked_diffusion_loss

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "models" / "tokenizer"


def test_masked_diffusion_weighting_hand_computed():
    # vocab 2, uniform logits: CE = ln 2 at every position
    logits = torch.zeros(1, 4, 2)
    targets = torch.tensor([[0, 1, 1, 0]])
    masked = torch.tensor([[True, False, True, False]])
    p_mask = torch.full((1, 4), 0.5)
    # pretraining: sum(CE / p) / (B * L) = (2 * ln2 / 0.5) / 4 = ln 2
    assert math.isclose(float(masked_diffusion_loss(logits, targets, masked, p_mask)), math.log(2), rel_tol=1e-6)
    # SFT: each term / answer length (2), summed, / B = (2 * ln2 / 0.5) / 2 = 2 ln 2
    loss = masked_diffusion_loss(logits, targets, masked, p_mask, answer_lengths=torch.tensor([2]))
    assert math.isclose(float(loss), 2 * math.log(2), rel_tol=1e-6)
    # two rows with different t: row weights 1/0.25 and 1/1.0
    logits = torch.zeros(2, 2, 2)
    targets = torch.zeros(2, 2, dtype=torch.long)
    masked = torch.tensor([[True, False], [True, True]])
    p_mask = torch.tensor([[0.25, 0.25], [1.0, 1.0]])
    expected = (math.log(2) / 0.25 + 2 * math.log(2) / 1.0) / 4
    assert math.isclose(float(masked_diffusion_loss(logits, targets, masked, p_mask)), expected, rel_tol=1e-6)
    # a confident correct prediction contributes ~0
    logits = torch.tensor([[[20.0, -20.0]]])
    assert float(masked_diffusion_loss(logits, torch.tensor([[0]]), torch.tensor([[True]]), torch.ones(1, 1))) < 1e-6


def test_forward_process_ratio_and_prompt_never_masked():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 100, (4, 2000))
    noisable = torch.ones_like(ids, dtype=torch.bool)
    noisable[:, :500] = False
    t = torch.tensor([0.1, 0.3, 0.6, 0.9])
    noisy, masked, p = forward_process(ids, 3, eps=1e-3, generator=g, noisable=noisable, t=t)
    assert not masked[:, :500].any()
    assert bool((noisy[masked] == 3).all()) and bool((noisy[~masked] == ids[~masked]).all())
    frac = masked[:, 500:].float().mean(-1)
    assert torch.allclose(frac, (1 - 1e-3) * t + 1e-3, atol=0.05)


def test_block_forward_process_matches_the_states_block_decoding_visits():
    g = torch.Generator().manual_seed(0)
    B, P, A, bl = 64, 5, 64, 8
    ids = torch.randint(10, 100, (B, P + A))
    noisable = torch.ones_like(ids, dtype=torch.bool)
    noisable[:, :P] = False
    content = torch.randint(1, A + 1, (B,))
    noisy, masked, p = block_forward_process(ids, 3, torch.full((B,), P), content, bl, generator=g,
                                             noisable=noisable)
    assert not masked[:, :P].any() and bool((noisy[masked] == 3).all())
    seen = set()
    for r in range(B):
        ans = masked[r, P:]
        ones = (p[r, P:] == 1).nonzero()
        blk = (int(ones[0]) // bl - 1) if len(ones) else A // bl - 1  # the block before the first p = 1 one
        seen.add(blk)
        assert not ans[:blk * bl].any()                       # every block before the current one is clean
        assert ans[(blk + 1) * bl:].all()                     # every later block is fully masked
        assert bool((p[r, P + (blk + 1) * bl:] == 1).all())   # ... with p_mask 1
        assert blk <= min(int(content[r]) // bl, A // bl - 1)  # never past the first block after the content
    assert len(seen) > 3  # the block is drawn, not fixed


def _synthetic(tmp_path):
    lines = ["def add(a, b):\n    return a + b\n", "The cat sat on the mat. The dog sat on the log.\n",
             "Question: 2 + 3?\nAnswer: 2 + 3 = 5\n#### 5\n"]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps({"text": l * 20}) for l in lines))
    (tmp_path / "sft.jsonl").write_text("\n".join(json.dumps({"prompt": f"What is {a} + {a}?",
                                                               "answer": f"{a} + {a} = {2 * a}\n#### {2 * a}"})
                                                   for a in range(1, 30)))
    return tmp_path


def _recipe(kind, model):
    stages = [{"name": "pretrain", "type": "pretrain", "steps": 25, "batch_size": 4, "seq_len": 32, "lr": 1e-2,
               "warmup": 2, "sources": {"corpus.jsonl": {"weight": 1.0}}},
              {"name": "sft", "type": "sft", "steps": 25, "batch_size": 4, "answer_len": 24, "max_prompt": 32,
               "lr": 1e-2, "warmup": 2, "sources": {"sft.jsonl": 1}}]
    return {"name": f"tiny-{kind}", "kind": kind, "seed": 0, "tokenizer": str(TOKENIZER), "model": model,
            "save_dtype": "bf16", "threads": 2, "log_every": 1, "checkpoint_minutes": 100, "stages": stages}


@pytest.mark.parametrize("kind,model", [
    ("dllm", {"d_model": 32, "n_heads": 2, "n_layers": 1, "mlp_hidden_size": 64, "weight_tying": True,
              "max_sequence_length": 128}),
    ("ar", {"hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2, "num_hidden_layers": 1,
            "intermediate_size": 64, "max_position_embeddings": 128}),
])
def test_training_loop_runs_and_loss_decreases(tmp_path, kind, model):
    from spiffy_train.loop import train

    (tmp_path / "data").mkdir()
    data = _synthetic(tmp_path / "data")
    out = tmp_path / "out"
    summary = train(None, data_dir=str(data), out=str(out), device="cpu", root=ROOT, recipe=_recipe(kind, model))
    for st in summary["stages"]:
        h = [l for _, l in st["loss_history"]]
        assert sum(h[-5:]) / 5 < sum(h[:5]) / 5, (st["name"], h)
    assert (out / "model.safetensors").exists() and (out / "training.json").exists()
    assert (out / "tokenizer.json").exists()
    if kind == "dllm":
        import spiffy

        be = spiffy.load_backend(str(out))
        assert be.family == "llada" and be.tokenizer.mask_token_id == be.mask_id
        assert spiffy.generate(be, "What is 2 + 2?", gen_length=8, block_length=8).nfe == 8
    else:
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_pretrained(str(out))
        assert m.config.vocab_size == 8192


def test_same_seed_same_batches(tmp_path):
    from spiffy_train.data import PackedMixture

    import numpy as np

    s = {"a": np.arange(1000, dtype=np.int32), "b": np.arange(1000, 3000, dtype=np.int32)}
    b1 = PackedMixture(s, {"a": 1, "b": 2}, 16, seed=3).batch(5)
    b2 = PackedMixture(s, {"a": 1, "b": 2}, 16, seed=3).batch(5)
    assert torch.equal(b1, b2)


def test_causal_lm_loss_answer_only():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, num_attention_heads=2, num_key_value_heads=2,
                                     num_hidden_layers=1, intermediate_size=32))
    ids = torch.randint(0, 50, (2, 10))
    ans = torch.zeros(2, 10, dtype=torch.bool)
    ans[:, 6:9] = True
    loss = causal_lm_loss(m, {"input_ids": ids, "answer_tokens": ans})
    logits = m(input_ids=ids).logits
    ref = torch.nn.functional.cross_entropy(logits[:, 5:8].reshape(-1, 50), ids[:, 6:9].reshape(-1))
    assert torch.allclose(loss, ref, atol=1e-5)


def test_speculatability_is_what_the_decoder_measures():
    """The speculatability table (a replay of greedy traces with top-1 chains) predicts exactly the
    NFE that Spiffy measures with the same chain graph, and the traces survive their JSON form."""
    from spiffy.backends.tiny import tiny_backend
    from spiffy.sampling.config import GenerationConfig
    from spiffy.speculative import SpeculativeConfig, generate_speculative
    from spiffy_train.speculatability import calls_for_depth, chain_graph, trace, trace_from_json, trace_to_json

    be = tiny_backend("llada", seed=0, dtype=torch.float64)
    cfg = GenerationConfig(gen_length=16, block_length=8)
    for prompt in ([5, 6, 7], [9, 3, 2, 8]):
        gen, tr = trace(be, prompt, gen_length=16, block_length=8)
        back = trace_from_json(json.loads(json.dumps(trace_to_json(tr))))
        for depth in (1, 3):
            res = generate_speculative(be, [prompt], cfg, SpeculativeConfig(graph=chain_graph(depth)))
            assert res.token_ids[0] == gen
            assert calls_for_depth([tr], depth) == calls_for_depth([back], depth) == res.nfe
        assert calls_for_depth([tr], 1) < 16


def test_resume_runs_the_remaining_stages_and_carries_the_earlier_records(tmp_path):
    from spiffy_train.loop import train

    (tmp_path / "data").mkdir()
    data = _synthetic(tmp_path / "data")
    model = {"d_model": 32, "n_heads": 2, "n_layers": 1, "mlp_hidden_size": 64, "weight_tying": True,
             "max_sequence_length": 128}
    recipe = _recipe("dllm", model)
    first = dict(recipe, stages=recipe["stages"][:1])
    train(None, data_dir=str(data), out=str(tmp_path / "a"), device="cpu", root=ROOT, recipe=first)
    block_sft = dict(recipe["stages"][1], name="sft-block", block_mask_prob=1.0, block_length=8)
    full = dict(recipe, stages=recipe["stages"][:1] + [block_sft])
    s = train(None, data_dir=str(data), out=str(tmp_path / "b"), device="cpu", root=ROOT, recipe=full,
              resume_from=str(tmp_path / "a"), start_stage="sft-block")
    assert [st["name"] for st in s["stages"]] == ["pretrain", "sft-block"]
    assert s["stages"][0]["resumed"] and "resumed" not in s["stages"][1]
    h = [l for _, l in s["stages"][1]["loss_history"]]
    assert sum(h[-5:]) / 5 < sum(h[:5]) / 5, h
    with pytest.raises(ValueError, match="no record of stage"):
        train(None, data_dir=str(data), out=str(tmp_path / "c"), device="cpu", root=ROOT,
              recipe=dict(full, stages=[dict(recipe["stages"][0], name="other")] + [block_sft]),
              resume_from=str(tmp_path / "a"), start_stage="sft-block")
    with pytest.raises(ValueError, match="not in the recipe"):
        train(None, data_dir=str(data), out=str(tmp_path / "c"), device="cpu", root=ROOT, recipe=full,
              resume_from=str(tmp_path / "a"), start_stage="nope")


def test_max_minutes_is_a_wall_budget_that_includes_data_preparation(tmp_path, monkeypatch):
    import time

    import spiffy_train.loop as loop

    (tmp_path / "data").mkdir()
    data = _synthetic(tmp_path / "data")
    real = loop.build_stage_data

    def slow(*a, **k):
        time.sleep(2.0)
        return real(*a, **k)

    monkeypatch.setattr(loop, "build_stage_data", slow)
    recipe = _recipe("ar", {"hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2,
                            "num_hidden_layers": 1, "intermediate_size": 64, "max_position_embeddings": 128})
    for st in recipe["stages"]:
        st.update(steps=10 ** 9, minutes=10)  # only the budget can stop them
    t = time.time()
    summary = loop.train(None, data_dir=str(data), out=str(tmp_path / "o"), device="cpu", root=ROOT, recipe=recipe,
                         max_minutes=0.15)  # 9 s for two stages that each spend 2 s preparing data
    wall = time.time() - t
    # budget + saving; stages scaled without counting the preparation would take 9 + 4 = 13 s
    assert wall < 9 + 2.5, wall
    assert summary["stages"][0]["steps"] > 0
    assert summary["stages"][0]["wall_min"] < 0.15 / 2
