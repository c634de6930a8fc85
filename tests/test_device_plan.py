"""The GPU training plan (recipes' `cuda` sections, models/device/) and the training-only data pack."""
import json
from pathlib import Path

import pytest
import torch

from spiffy_train.loop import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "models" / "recipes"
NAMES = ("spiffy-dllm-ref", "spiffy-ar-ref", "spiffy-ar-draft")


def _params(name: str) -> int:
    from spiffy_train.models import build_model, count_params
    from spiffy_train.tokenizer import load_tokenizer

    r = load_recipe(RECIPES / f"{name}.json", "cpu", variant="cuda")
    with torch.device("meta"):
        return count_params(build_model(r["kind"], r["model"], load_tokenizer(ROOT / "models" / "tokenizer")))


def test_gpu_sizes_keep_the_issue_ratios_and_the_60mb_budget():
    n = {k: _params(k) for k in NAMES}
    assert n["spiffy-ar-ref"] >= 2 * n["spiffy-dllm-ref"]          # AR target >= 2x the dLLM
    assert n["spiffy-ar-draft"] <= n["spiffy-ar-ref"] / 4          # drafter <= 1/4 of the target
    assert n["spiffy-dllm-ref"] > 2 * 2_553_000                     # and the GPU plan is a bigger model
    weights = 2 * sum(n.values())                                   # bf16
    others = sum(f.stat().st_size for d in ("tokenizer", "ngram") for f in (ROOT / "models" / d).rglob("*")
                 if f.is_file())
    tokenizer_copies = 3 * sum((ROOT / "models" / "tokenizer" / f).stat().st_size
                               for f in ("tokenizer.json", "tokenizer_config.json"))
    assert weights + others + tokenizer_copies <= 60e6


def test_gpu_plan_fits_one_device_call():
    # train_all.sh runs the three recipes side by side, each with a 6.9-minute wall budget that includes
    # about a minute of data preparation (0.9 min on the CPU dry run); the stage minutes should fit in it
    script = (ROOT / "models" / "device" / "train_all.sh").read_text()
    assert "MAX_MIN=${MAX_MIN:-6.9}" in script and "LIMIT_S=${LIMIT_S:-450}" in script
    for name in NAMES:
        r = load_recipe(RECIPES / f"{name}.json", "cpu", variant="cuda")
        assert sum(s["minutes"] for s in r["stages"]) <= 6.5, name
        assert r["checkpoint_minutes"] <= 1  # a run cut short still leaves a recent checkpoint
    d = load_recipe(RECIPES / "spiffy-dllm-ref.json", "cpu", variant="cuda")
    assert [s.get("answer_len") for s in d["stages"][1:]] == [256, 256]  # the length speculatability decodes
    assert d["stages"][2]["block_mask_prob"] > 0 and d["stages"][2]["block_length"] == 32


def test_recipe_variants(tmp_path):
    base = RECIPES / "spiffy-dllm-ref.json"
    cpu, gpu = load_recipe(base, "cpu"), load_recipe(base, "cpu", variant="cuda")
    raw = json.loads(base.read_text())
    assert cpu["model"] == raw["model"] and cpu["variant"] == "base" and "cuda" not in cpu
    assert load_recipe(base, "cuda", variant="base")["model"] == raw["model"]
    assert gpu["model"]["d_model"] == raw["cuda"]["model"]["d_model"] and gpu["variant"] == "cuda"
    assert gpu["model"]["weight_tying"] == raw["model"]["weight_tying"]           # deep merge keeps the rest
    assert gpu["stages"][0]["sources"]["mbpp"]["weight"] == raw["cuda"]["stages"][0]["sources"]["mbpp"]["weight"]
    assert gpu["stages"][2]["block_mask_prob"] == raw["stages"][2]["block_mask_prob"]
    with pytest.raises(ValueError, match="variant"):
        load_recipe(base, "cpu", variant="gpu")
    bare = tmp_path / "r.json"
    bare.write_text(json.dumps({k: v for k, v in raw.items() if k != "cuda"}))
    with pytest.raises(ValueError, match="no 'cuda' section"):
        load_recipe(bare, "cpu", variant="cuda")
    assert load_recipe(bare, "cuda")["variant"] == "base"  # auto on a GPU: a recipe without one trains as is


def _fake_data(d: Path) -> Path:
    def w(rel, rows):
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    w("python_stdlib/train.jsonl", [{"path": "Lib/a.py", "text": "def f():\n    return 1\n"},
                                    {"path": "Lib/test/test_a.py", "text": "assert f() == 1\n"}])
    w("python_stdlib/valid.jsonl", [{"path": "Lib/b.py", "text": "held out\n"}])
    w("python_docs/train.jsonl", [{"text": "Docs prose."}])
    w("gsm8k/train.jsonl", [{"question": "1+1?", "answer": "2\n#### 2"}])
    w("gsm8k/test.jsonl", [{"question": "TEST 2+2?", "answer": "4\n#### 4"}])
    w("mbpp/mbpp.jsonl", [{"task_id": i, "text": f"task {i}", "code": "pass", "test_list": ["assert True"]}
                          for i in (1, 11, 510, 600)])
    (d / "gsm8k" / "README.md").write_text("source: GSM8K, MIT")
    return d


def test_data_pack_is_training_only_and_reads_like_the_data_dir(tmp_path):
    from spiffy_train.data import sft_pairs, source_texts
    from spiffy_train.datapack import build_pack

    src = _fake_data(tmp_path / "data")
    m = build_pack(src, tmp_path / "pack", max_mb=1)
    pack = tmp_path / "pack"
    files = {str(p.relative_to(pack)) for p in pack.rglob("*") if p.is_file()}
    assert files == {"MANIFEST.json", "gsm8k/README.md", "gsm8k/train.jsonl.gz", "mbpp/mbpp.jsonl.gz",
                     "python_docs/train.jsonl.gz", "python_stdlib/train.jsonl.gz"}
    assert m["files"]["mbpp/mbpp.jsonl.gz"]["rows"] == 2            # ids 11 and 510 are MBPP test
    assert m["files"]["python_stdlib/train.jsonl.gz"]["rows"] == 1  # the test suite is dropped
    blob = b"".join(__import__("gzip").open(p).read() for p in pack.rglob("*.gz"))
    assert b"TEST 2+2" not in blob and b"held out" not in blob
    for name in ("python_stdlib", "python_docs", "gsm8k", "mbpp"):
        assert source_texts(pack, name, None, 1) == source_texts(src, name, None, 1)
    assert sft_pairs(pack, {"gsm8k": 1, "mbpp": 1}, 2) == sft_pairs(src, {"gsm8k": 1, "mbpp": 1}, 2)
    assert json.loads((pack / "MANIFEST.json").read_text())["files"] == m["files"]


def test_data_pack_over_budget_writes_nothing(tmp_path):
    from spiffy_train.datapack import build_pack

    src = _fake_data(tmp_path / "data")
    with pytest.raises(ValueError, match="over --max-mb"):
        build_pack(src, tmp_path / "pack", max_mb=1e-4)
    assert not (tmp_path / "pack").exists() and not (tmp_path / "pack.tmp").exists()
