"""The LLaMA-family diffusion backend and its LoRA adapters (spiffy.backends.llama_dlm/adapter,
spiffy_train.adapt): the port equals transformers' Llama, attention is bidirectional, the logit shift is
applied where the samplers read logits, training resumes exactly, and a shipped adapter rebuilds the
weights whose logits were saved at the end of training."""
import json
from pathlib import Path

import pytest
import torch

from spiffy.backends.llama_dlm import LlamaDLMConfig, LlamaDLMModel
from spiffy.backends.tiny import tiny_tokenizer
from spiffy.errors import ModelLoadError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "spiffy-smollm2-dlm"
CHAT = ("{% for m in messages %}<|bos|>{{ m['content'] }}<|eot|>{% endfor %}"
        "{% if add_generation_prompt %}<|bos|>{% endif %}")


def tiny_llama_base(folder: Path, hidden=32, seed=0) -> Path:
    """A random causal Llama with tied embeddings and a chat-templated character tokenizer, saved like a
    real checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    tok.chat_template = CHAT
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    m = LlamaForCausalLM(cfg)
    m.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    return folder


def tiny_recipe(base: Path, data: Path, steps: int) -> dict:
    rows = [{"prompt": f"what is {a} plus {b}?", "answer": f"{a} plus {b} is {a + b}."}
            for a in range(6) for b in range(6)]
    (data / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (data / "held.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:6]))
    return {"name": "tiny-dlm", "kind": "dllm-adapt", "base": str(base), "mask_token": "<|mask|>", "seed": 0,
            "adapter": {"rank": 4, "alpha": 8, "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                           "up_proj", "down_proj"], "train_norms": True},
            "amp": "none", "save_dtype": "fp32", "steps": steps, "batch_size": 4, "lr": 0.01, "warmup": 2,
            "block_length": 8, "block_mask_prob": 0.5, "answer_len": 32, "max_prompt": 32,
            "sources": {str(data / "pairs.jsonl"): 1},
            "eval": {"rows": 6, "every_minutes": 100, "source": str(data / "held.jsonl")},
            "samples": {"gen_length": 16, "prompts": ["what is 2 plus 3?"]}, "log_every": 100,
            "checkpoint_minutes": 100}


def test_port_equals_transformers_llama_under_a_causal_mask(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = tiny_llama_base(tmp_path / "base")
    hf = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
    raw = json.loads((base / "config.json").read_text())
    ours = LlamaDLMModel(LlamaDLMConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
                                        rms_norm_eps=raw["rms_norm_eps"], mask_token_id=63)).eval()
    sd = {k: v for k, v in load_file(str(base / "model.safetensors")).items() if k != "lm_head.weight"}
    ours.load_state_dict(sd, strict=True)
    ids = torch.randint(0, 60, (2, 20))
    causal = torch.tril(torch.ones(20, 20, dtype=torch.bool))[None, None]
    with torch.no_grad():
        a = ours(ids, attention_mask=causal).logits
        b = hf(ids).logits
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    with torch.no_grad():   # without the mask: bidirectional, so the logits change
        assert not torch.allclose(ours(ids).logits, b, atol=1e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny adapter trained 6 steps and exported (the same code path as the shipped one)."""
    from spiffy_train.adapt import train_adapter

    root = tmp_path_factory.mktemp("adapt")
    base = tiny_llama_base(root / "base")
    (root / "data").mkdir()
    recipe = tiny_recipe(base, root / "data", steps=6)
    import os

    old = os.environ.get("SPIFFY_CACHE")
    os.environ["SPIFFY_CACHE"] = str(root / "cache")
    try:
        summary = train_adapter(recipe, root / "data", root / "out", "cpu", None, log=lambda *_: None)
    finally:
        if old is None:
            os.environ.pop("SPIFFY_CACHE")
        else:
            os.environ["SPIFFY_CACHE"] = old
    return root, recipe, summary


def test_adapter_rebuilds_the_logits_saved_at_the_end_of_training(trained):
    from safetensors.torch import load_file

    from spiffy.backends.loader import load_backend

    root, _, summary = trained
    out = root / "out"
    assert {"config.json", "adapter.safetensors", "training.json", "probe_logits.safetensors"} <= {
        p.name for p in out.iterdir()}
    be = load_backend(str(out), dtype="float32")
    assert be.family == "llama_dlm" and be.logit_shift == 1 and be.mask_id == 63
    probe = load_file(str(out / "probe_logits.safetensors"))
    with torch.no_grad():
        logits = be.forward(probe["input_ids"]).logits[0].float()
    # equal up to float32 rounding: the base weights are dequantised and the LoRA merged with this CPU's kernels,
    # which round differently from one CPU model to another (measured: up to 5e-5 on logits of magnitude ~20
    # between two of this project's machines); a wrong merge (scale, rank, a missing layer) moves them by far more
    assert torch.allclose(logits, probe["logits"], rtol=0, atol=1e-3)
    assert torch.equal(logits.argmax(-1), probe["logits"].argmax(-1))
    # the adapter changed the model: the base alone gives other logits
    assert summary["curve"][-1]["step"] == 6 and len(summary["samples"]) == 1


def test_training_resumes_exactly(trained, tmp_path, monkeypatch):
    """3 steps, stop, 3 more steps from the saved state == 6 steps in one run (same adapter tensors)."""
    from safetensors.torch import load_file

    from spiffy_train.adapt import train_adapter

    root, recipe, _ = trained
    monkeypatch.setenv("SPIFFY_CACHE", str(tmp_path / "cache"))
    train_adapter(recipe, root / "data", tmp_path / "a", "cpu", None, log=lambda *_: None, max_steps=3)
    s = train_adapter(recipe, root / "data", tmp_path / "b", "cpu", None, log=lambda *_: None)
    assert [r["start_step"] for r in s["runs"]] == [0, 3]
    one = load_file(str(root / "out" / "adapter.safetensors"))
    two = load_file(str(tmp_path / "b" / "adapter.safetensors"))
    assert one.keys() == two.keys()
    for k in one:
        assert torch.equal(one[k], two[k]), k
    # a recipe that changed what it trains is refused, not silently continued
    with pytest.raises(ValueError, match="different recipe"):
        train_adapter(dict(recipe, steps=8, lr=0.02), root / "data", tmp_path / "c", "cpu", None,
                      log=lambda *_: None)


def test_bidirectional_and_shifted(trained):
    from spiffy.backends.loader import load_backend
    from spiffy.sampling.config import GenerationConfig
    from spiffy.sampling.session import DecodeSession

    be = load_backend(str(trained[0] / "out"), dtype="float32")
    ids = torch.tensor([be.encode_prompt("what is 1 plus 1?") + [be.mask_id] * 8])
    changed = ids.clone()
    changed[0, -1] = 5
    with torch.no_grad():
        a, b = be.forward(ids).logits[0, 0], be.forward(changed).logits[0, 0]
    assert not torch.allclose(a, b), "changing the last token must change position 0's logits"
    # the session reads block positions j from rows j - 1 of a direct forward
    prompt = ids[0, :-8].tolist()
    s = DecodeSession(be, [prompt], GenerationConfig(gen_length=8, block_length=8))
    got = s.begin_block(0)
    with torch.no_grad():
        direct = be.forward(s.x).logits[:, len(prompt) - 1:len(prompt) + 7]
    assert torch.equal(got, direct)


def test_adapter_for_another_model_is_refused(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    from spiffy.backends.loader import load_backend

    root = trained[0]
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((root / "out" / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(cfg))
    sd = load_file(str(root / "out" / "adapter.safetensors"))
    sd = {k: (torch.zeros(v.shape[0], 48) if k.endswith("q_proj.lora_A") else v) for k, v in sd.items()}
    save_file(sd, str(other / "adapter.safetensors"))
    with pytest.raises(ModelLoadError, match="trained for another model"):
        load_backend(str(other))
    cfg["spiffy_adapter"]["base"] = "no-such-model"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="neither a named model nor a checkpoint folder"):
        load_backend(str(other))


def test_shipped_adapter_rebuilds_its_saved_logits():
    from safetensors.torch import load_file

    from spiffy.backends.loader import load_backend
    from spiffy.named_models import fetch

    fetch("smollm2-135m-instruct", progress=print)   # a no-op when .ci/run already prepared it
    assert (SHIPPED / "adapter.safetensors").stat().st_size <= 60 * 2 ** 20
    be = load_backend(str(SHIPPED), dtype="float32")
    probe = load_file(str(SHIPPED / "probe_logits.safetensors"))
    with torch.no_grad():
        logits = be.forward(probe["input_ids"]).logits[0].float()
    # equal up to float32 rounding: the base weights are dequantised and the LoRA merged with this CPU's kernels,
    # which round differently from one CPU model to another (measured: up to 5e-5 on logits of magnitude ~20
    # between two of this project's machines); a wrong merge (scale, rank, a missing layer) moves them by far more
    assert torch.allclose(logits, probe["logits"], rtol=0, atol=1e-3)
    assert torch.equal(logits.argmax(-1), probe["logits"].argmax(-1))


def test_bad_adapter_training_input_is_one_clear_line(trained, tmp_path, monkeypatch):
    """`spiffy train` on an adapter recipe: an unknown mask token, a changed recipe and a corrupt saved state
    each give one `error:` line, no traceback, and leave the saved state as it was."""
    from click.testing import CliRunner

    from spiffy.cli import main

    root, recipe, _ = trained
    monkeypatch.setenv("SPIFFY_CACHE", str(tmp_path / "cache"))

    def run(r):
        (tmp_path / "r.json").write_text(json.dumps(r))
        return CliRunner().invoke(main, ["train", "--recipe", str(tmp_path / "r.json"), "--data-dir",
                                         str(root / "data"), "--out", str(tmp_path / "out"), "--device", "cpu"])

    res = run(dict(recipe, mask_token="<|no-such-token|>"))
    assert res.exit_code == 2 and res.output.startswith("error: mask token") and "Traceback" not in res.output
    assert run(dict(recipe, steps=2)).exit_code == 0            # saves a state
    state = tmp_path / "cache" / "train" / recipe["name"] / "state.pt"
    before = state.read_bytes()
    res = run(dict(recipe, steps=4, lr=0.5))
    assert res.exit_code == 2 and "different recipe" in res.output and "--restart" in res.output
    state.write_bytes(b"not a torch file")
    res = run(dict(recipe, steps=4))
    assert res.exit_code == 2 and "not a readable training state" in res.output
    assert len(res.output.strip().splitlines()) == 1
    state.write_bytes(before)
    assert run(dict(recipe, steps=4)).exit_code == 0            # the intact state continues


def test_bundled_models_by_name_and_the_sample_default():
    """`--model spiffy-dllm-ref` names a bundled model from anywhere (a wheel too), and `spiffy sample`
    without --model decodes with spiffy-smollm2-dlm over the fetched SmolLM2 base."""
    from click.testing import CliRunner

    from spiffy.backends.loader import default_model_path, resolve_path
    from spiffy.cli import main
    from spiffy.named_models import fetch

    assert resolve_path("spiffy-dllm-ref") == default_model_path()
    assert resolve_path("spiffy-smollm2-dlm") == SHIPPED
    fetch("smollm2-135m-instruct", progress=print)   # a no-op when .ci/run already prepared it
    r = CliRunner().invoke(main, ["sample", "--prompt", "What is 2 + 3?", "--gen-length", "8", "--block-length", "8",
                                  "--cache", "dual", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["model"] == "spiffy-smollm2-dlm"


def test_shipped_calibrated_graphs_fit_the_shipped_adapter():
    """Every calibrated graph shipped for spiffy-smollm2-dlm passes the decoder's checks (schema, model
    fingerprint of the rebuilt model, setting) and is the one the decoder finds for its setting."""
    from spiffy.backends.loader import load_backend
    from spiffy.named_models import fetch
    from spiffy.sampling.config import GenerationConfig
    from spiffy.speculative.calibrated import calibrated_graph_for, load_graph_artifact

    fetch("smollm2-135m-instruct", progress=print)   # a no-op when .ci/run already prepared it
    be = load_backend(str(SHIPPED), dtype="float32")
    folders = sorted(p for p in (ROOT / "calibration" / "spiffy-smollm2-dlm").iterdir() if p.is_dir())
    assert [f.name for f in folders] == ["b32_k1_g128_dual", "b32_k1_g128_none", "b32_thr0.9_g128_dual"]
    for folder, cache, threshold in zip(folders, ("dual", "none", "dual"), (None, None, 0.9)):
        cfg = GenerationConfig(gen_length=128, block_length=32, cache=cache, threshold=threshold)
        for D in (3, 5, 8, 10):
            load_graph_artifact(folder / f"D{D}.json", be)
            assert calibrated_graph_for(be, cfg, "llada", D, ROOT / "calibration") == folder / f"D{D}.json"
