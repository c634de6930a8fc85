"""The shipped reference checkpoints: load through the public loaders on CPU and reproduce the fixed-batch
loss recorded in their eval.json (built here from fixed text; no data directory needed)."""
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
DLLM = MODELS / "spiffy-dllm-ref"
AR = MODELS / "spiffy-ar-ref"
DRAFT = MODELS / "spiffy-ar-draft"
ALL = [DLLM, AR, DRAFT]

# the checkpoints are committed with the repository: a missing one is a failure, not a skip


def _n_params(path):
    from safetensors import safe_open

    n = 0
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        for k in f.keys():
            n += f.get_tensor(k).numel()
    return n


def _recorded_loss(path):
    return json.loads((path / "eval.json").read_text())["fixed_batch"]["loss"]


def test_dllm_loads_and_reproduces_recorded_loss():
    import spiffy
    from spiffy_train.evaluate import fixed_batch_loss

    be = spiffy.load_backend(str(DLLM))
    assert be.family == "llada" and be.device.type == "cpu"
    tok = be.tokenizer
    assert tok is not None and tok.is_fast
    assert tok.mask_token is not None and tok.mask_token_id == be.mask_id == be.model.config.mask_token_id
    assert be.eos_id == tok.eos_token_id and be.eot_id == tok.convert_tokens_to_ids("<|eot|>")
    assert be.context_length >= 512
    loss = fixed_batch_loss("dllm", be, tok)
    assert abs(loss - _recorded_loss(DLLM)) < 2e-3, loss


def test_default_backend_is_the_reference_dllm():
    import spiffy
    from spiffy.backends.loader import DEFAULT_MODEL_NAME

    assert DLLM.name == DEFAULT_MODEL_NAME
    be = spiffy.load_backend(None)
    assert be.family == "llada" and be.vocab_size == 8192


def test_dllm_prompt_format_matches_sft():
    import spiffy
    from spiffy_train.tokenizer import format_prompt

    be = spiffy.load_backend(str(DLLM))
    ids = be.encode_prompt("What is 2 + 3?", chat=True)
    assert ids == be.tokenizer(format_prompt("What is 2 + 3?"), add_special_tokens=False)["input_ids"]
    assert be.tokenizer.decode(ids) == "<|user|>\nWhat is 2 + 3?<|eot|>\n<|assistant|>\n"


@pytest.mark.parametrize("path", [AR, DRAFT], ids=["ar-ref", "ar-draft"])
def test_ar_models_load_and_reproduce_recorded_loss(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spiffy_train.evaluate import fixed_batch_loss

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    assert tok.is_fast and model.config.eos_token_id == tok.eos_token_id
    loss = fixed_batch_loss("ar", model, tok)
    assert abs(loss - _recorded_loss(path)) < 2e-3, loss


def test_shared_tokenizer_and_chat_template():
    from transformers import AutoTokenizer

    toks = [AutoTokenizer.from_pretrained(str(p)) for p in ALL]
    assert len({t.chat_template for t in toks}) == 1 and toks[0].chat_template
    assert len({json.dumps(t.get_vocab(), sort_keys=True) for t in toks}) == 1
    msg = [{"role": "user", "content": "def f(x):"}]
    outs = {tuple(t.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)) for t in toks}
    assert len(outs) == 1


def test_sizes_and_budget():
    n = {p.name: _n_params(p) for p in ALL}
    assert n["spiffy-ar-ref"] >= 2 * n["spiffy-dllm-ref"]
    assert n["spiffy-ar-draft"] * 4 <= n["spiffy-ar-ref"]
    total = sum((p / "model.safetensors").stat().st_size for p in ALL)
    assert total <= 60 * 1024 * 1024
    for p in ALL:
        cfg = json.loads((p / "config.json").read_text())
        assert cfg.get("dtype", cfg.get("torch_dtype")) in ("bfloat16", "float16")


def test_shipped_calibrated_graphs_match_the_shipped_dllm():
    """Every graph under calibration/spiffy-dllm-ref validates against the bundled checkpoint's fingerprint
    (a retrained model without recalibration fails here, not silently at decode time), and the decoder's
    lookup finds one for each shipped setting and budget."""
    import spiffy
    from spiffy.backends.fingerprint import model_fingerprint
    from spiffy.sampling.config import GenerationConfig
    from spiffy.speculative.calibrated import calibrated_graph_for, load_graph_artifact

    be = spiffy.load_backend(str(DLLM))
    fp = model_fingerprint(be)
    folders = sorted(p for p in (ROOT / "calibration" / "spiffy-dllm-ref").iterdir() if p.is_dir())
    assert {f.name for f in folders} >= {"b32_k1_none", "b32_k1_dual", "b32_thr0.9_dual"}
    for folder in folders:
        files = sorted(folder.glob("D*.json"))
        assert files, folder
        for f in files:
            g = load_graph_artifact(f, fingerprint=fp)
            assert g.number_of_nodes() >= 2
    for cache, thr in (("none", None), ("dual", None), ("dual", 0.9)):
        cfg = GenerationConfig(gen_length=256, block_length=32, cache=cache, threshold=thr)
        for D in (3, 5, 8, 10):
            path = calibrated_graph_for(be, cfg, "llada", D)
            assert path is not None and path.name == f"D{D}.json", (cache, thr, D)
