"""Measure a reference model for its card: held-out losses, sample generations, GSM8K accuracy, and the
fixed-batch loss the tests check. Writes ``<model>/eval.json``.

    python -m spiffy_train.evaluate models/spiffy-dllm-ref [--data-dir DIR] [--n-gsm8k 200]

dLLM: masked-token cross-entropy at mask ratios 0.1 … 0.9 (fixed seeded masks) on python_stdlib valid
windows and on GSM8K test answers (prompt in the chat format, only answer tokens masked); samples with
``spiffy.generate(backend, prompt, gen_length=256, block_length=32)``. AR: perplexity on the same text;
greedy ``generate`` samples.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F

MASK_RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)

# The fixed batch the tests recompute (no data directory needed).
FIXED_TEXTS = [
    "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n\n\nclass Stack:\n"
    "    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        self.items.append(item)\n",
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have?\n"
    "Answer: Tom has 3 + 5 = <<3+5=8>>8 apples.\n#### 8",
    "The :mod:`os` module provides a portable way of using operating system dependent functionality. "
    "If you just want to read or write a file see :func:`open`.",
]
FIXED_SEED = 1234
FIXED_RATIO = 0.5


def _is_dllm(path: Path) -> bool:
    return json.loads((Path(path) / "config.json").read_text()).get("model_type") == "llada"


def load_any(path):
    """(kind, model, tokenizer) for a reference checkpoint, in float32 on CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if _is_dllm(path):
        from spiffy.backends.loader import load_backend

        be = load_backend(str(path), device="cpu", dtype="float32")
        return "dllm", be, be.tokenizer
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    return "ar", model, AutoTokenizer.from_pretrained(str(path))


def fixed_batch(tok, length: int = 64) -> torch.Tensor:
    ids = []
    for t in FIXED_TEXTS:
        x = tok(t, add_special_tokens=False)["input_ids"][:length]
        x = x + [tok.eos_token_id] * (length - len(x))
        ids.append(x)
    return torch.tensor(ids)


@torch.no_grad()
def fixed_batch_loss(kind: str, model, tok) -> float:
    """dLLM: mean CE on positions masked by a seeded 50% mask; AR: mean next-token CE."""
    ids = fixed_batch(tok)
    if kind == "dllm":
        g = torch.Generator().manual_seed(FIXED_SEED)
        masked = torch.rand(ids.shape, generator=g) < FIXED_RATIO
        noisy = torch.where(masked, torch.full_like(ids, model.mask_id), ids)
        logits = model.model(noisy).logits.float()
        return float(F.cross_entropy(logits[masked], ids[masked]))
    logits = model(input_ids=ids).logits.float()
    return float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)))


# ------------------------------------------------------------------------------------------ held-out data
def stdlib_windows(tok, data_dir, n: int = 48, length: int = 256) -> torch.Tensor:
    from .data import stdlib_files

    rows = stdlib_files(Path(data_dir), "valid", drop_tests=True)
    stream = []
    for r in rows:
        stream += tok(r["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    step = max(length, (len(stream) - length) // n)
    return torch.tensor([stream[i:i + length] for i in range(0, step * n, step)][:n])


def gsm8k_test_pairs(tok, data_dir, n: int = 48):
    from .data import gsm8k_rows
    from .chat_format import format_prompt

    rows = gsm8k_rows(Path(data_dir), "test")[:n]
    return [(tok(format_prompt(r["question"]), add_special_tokens=False)["input_ids"],
             tok(r["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]) for r in rows]


@torch.no_grad()
def dllm_losses(be, windows, pairs, batch: int = 8) -> dict:
    out = {"python_stdlib_valid": {}, "gsm8k_test": {}}
    for r in MASK_RATIOS:
        g = torch.Generator().manual_seed(int(r * 1000))
        tot, cnt = 0.0, 0
        for i in range(0, len(windows), batch):
            ids = windows[i:i + batch]
            m = torch.rand(ids.shape, generator=g) < r
            logits = be.model(torch.where(m, torch.full_like(ids, be.mask_id), ids)).logits.float()
            tot += float(F.cross_entropy(logits[m], ids[m], reduction="sum"))
            cnt += int(m.sum())
        out["python_stdlib_valid"][str(r)] = round(tot / cnt, 4)
        tot, cnt = 0.0, 0
        for p, a in pairs:
            ids = torch.tensor([p + a])
            m = torch.zeros_like(ids, dtype=torch.bool)
            m[0, len(p):] = torch.rand(len(a), generator=g) < r
            if not bool(m.any()):
                continue
            logits = be.model(torch.where(m, torch.full_like(ids, be.mask_id), ids)).logits.float()
            tot += float(F.cross_entropy(logits[m], ids[m], reduction="sum"))
            cnt += int(m.sum())
        out["gsm8k_test"][str(r)] = round(tot / cnt, 4)
    return out


@torch.no_grad()
def ar_losses(model, windows, pairs, batch: int = 8) -> dict:
    tot, cnt = 0.0, 0
    for i in range(0, len(windows), batch):
        ids = windows[i:i + batch]
        logits = model(input_ids=ids).logits.float()[:, :-1]
        tot += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"))
        cnt += ids[:, 1:].numel()
    std = tot / cnt
    tot, cnt = 0.0, 0
    for p, a in pairs:
        ids = torch.tensor([p + a])
        logits = model(input_ids=ids).logits.float()[0, len(p) - 1:-1]
        tot += float(F.cross_entropy(logits, ids[0, len(p):], reduction="sum"))
        cnt += len(a)
    gsm = tot / cnt
    return {"python_stdlib_valid": {"loss": round(std, 4), "ppl": round(math.exp(std), 2)},
            "gsm8k_test_answers": {"loss": round(gsm, 4), "ppl": round(math.exp(gsm), 2)}}


# --------------------------------------------------------------------------------------------- generation
def parse_answer(text: str):
    m = re.search(r"####\s*(-?[\d,]*\.?\d+)", text)
    return None if m is None else m.group(1).replace(",", "")


def gold_answer(ref: str) -> str:
    return ref.split("####")[-1].strip().replace(",", "")


def _num_eq(a, b) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-6
    except (TypeError, ValueError):
        return False


def dllm_generate(be, prompts, **kw):
    from spiffy.generation import generate

    return generate(be, prompts, gen_length=256, block_length=32, **kw)


@torch.no_grad()
def ar_generate(model, tok, prompts: list[str], max_new_tokens: int = 256) -> list[str]:
    from .chat_format import format_prompt

    tok.padding_side = "left"
    enc = tok([format_prompt(p) for p in prompts], add_special_tokens=False, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    gen = out[:, enc["input_ids"].shape[1]:]
    texts = []
    for row in gen.tolist():
        if tok.eos_token_id in row:
            row = row[:row.index(tok.eos_token_id)]
        texts.append(tok.decode(row, skip_special_tokens=True))
    return texts


PARTS = ("losses", "samples", "gsm8k")


def evaluate(path, data_dir=None, n_gsm8k: int = 200, n_samples_gsm8k: int = 5, n_samples_he: int = 3,
             batch: int = 20, parts=PARTS, gsm8k_range=None, n_heldout: int = 24, log=print) -> dict:
    """Measure the requested ``parts``; ``gsm8k_range`` (start, stop) restricts the accuracy run to a slice
    of the first ``n_gsm8k`` questions (to split it over processes; merge with ``--merge``)."""
    from spiffy.datasets import load_prompts, resolve_data_dir

    data_dir = resolve_data_dir(data_dir)
    kind, model, tok = load_any(path)
    t0 = time.time()
    res = {"model": Path(path).name, "kind": kind, "torch_threads": torch.get_num_threads()}
    if "losses" in parts:
        res["fixed_batch"] = {"texts": "spiffy_train.evaluate.FIXED_TEXTS", "length": 64, "seed": FIXED_SEED,
                              "mask_ratio": FIXED_RATIO if kind == "dllm" else None,
                              "loss": round(fixed_batch_loss(kind, model, tok), 5)}
        windows = stdlib_windows(tok, data_dir, n=n_heldout)
        pairs = gsm8k_test_pairs(tok, data_dir, n=n_heldout)
        res["heldout"] = {"python_stdlib_valid_windows": [int(windows.shape[0]), int(windows.shape[1])],
                          "gsm8k_test_questions": len(pairs)}
        res["heldout"].update(dllm_losses(model, windows, pairs) if kind == "dllm" else ar_losses(model, windows, pairs))
        log(f"losses done {time.time() - t0:.0f}s: {res['heldout']}")
    gsm = load_prompts("gsm8k", n_gsm8k, data_dir)
    if "samples" in parts:
        he = load_prompts("humaneval", n_samples_he, data_dir)
        samples = []
        for r in gsm[:n_samples_gsm8k] + he:
            if kind == "dllm":
                # early_stop only skips blocks after every row has committed EOS: the text is unchanged
                text = dllm_generate(model, r["prompt"], early_stop=True).text[0]
            else:
                text = ar_generate(model, tok, [r["prompt"]])[0]
            samples.append({"id": r["id"], "prompt": r["prompt"], "output": text})
            log(f"sample {r['id']} {time.time() - t0:.0f}s")
        res["samples"] = samples
        res["samples_decoding"] = ("spiffy.generate(backend, prompt, gen_length=256, block_length=32) (greedy, "
                                   "1 token/step, no cache; early_stop, which leaves the text unchanged)"
                                   if kind == "dllm" else "model.generate(max_new_tokens=256, do_sample=False)")
    if "gsm8k" in parts:
        lo, hi = gsm8k_range or (0, len(gsm))
        sub = gsm[lo:hi]
        correct, preds = 0, []
        for i in range(0, len(sub), batch):
            chunk = sub[i:i + batch]
            if kind == "dllm":
                texts = dllm_generate(model, [r["prompt"] for r in chunk], cache="dual", early_stop=True).text
            else:
                texts = ar_generate(model, tok, [r["prompt"] for r in chunk])
            for r, t in zip(chunk, texts):
                p = parse_answer(t)
                ok = _num_eq(p, gold_answer(r["reference"]))
                correct += ok
                preds.append({"id": r["id"], "pred": p, "gold": gold_answer(r["reference"]), "correct": bool(ok),
                              "output": t})
            log(f"gsm8k {lo + i + len(chunk)}/{hi} correct {correct} {time.time() - t0:.0f}s")
        res["gsm8k"] = _gsm8k_summary(preds, kind, batch)
    res["eval_wall_s"] = round(time.time() - t0, 1)
    return res


def _gsm8k_summary(preds, kind, batch):
    correct = sum(p["correct"] for p in preds)
    return {"n": len(preds), "correct": correct, "accuracy": round(correct / max(1, len(preds)), 4),
            "with_answer_marker": sum(p["pred"] is not None for p in preds),
            "decoding": ("spiffy.generate gen_length=256 block_length=32, greedy 1 token/step, cache='dual', "
                         "early_stop=True, batches of %d (left-padded)" % batch) if kind == "dllm" else
            "greedy generate, max_new_tokens=256, batches of %d (left-padded)" % batch,
            "predictions": preds}


def merge(files) -> dict:
    """Merge partial results (parts and GSM8K slices) into one eval.json object."""
    out, preds, wall = {}, [], 0.0
    for f in files:
        r = json.loads(Path(f).read_text())
        wall += r.pop("eval_wall_s", 0.0)
        g = r.pop("gsm8k", None)
        if g:
            preds += g["predictions"]
            out["_gsm8k_kind"] = r["kind"]
        out.update(r)
    if preds:
        preds.sort(key=lambda p: int(p["id"].split("/")[-1]))
        out["gsm8k"] = _gsm8k_summary(preds, out.pop("_gsm8k_kind"), 20)
    out["eval_cpu_process_s"] = round(wall, 1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n-gsm8k", type=int, default=200)
    ap.add_argument("--parts", default=",".join(PARTS), help="comma list of losses,samples,gsm8k")
    ap.add_argument("--gsm8k-range", default=None, help="START:STOP slice of the GSM8K questions")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON path (default: <model>/eval.json)")
    ap.add_argument("--merge", nargs="+", default=None, help="merge these partial JSON files into --out")
    a = ap.parse_args(argv)
    out = Path(a.out or Path(a.model) / "eval.json")
    if a.merge:
        out.write_text(json.dumps(merge(a.merge), indent=2))
        print(f"wrote {out}")
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    rng = tuple(int(x) for x in a.gsm8k_range.split(":")) if a.gsm8k_range else None
    res = evaluate(a.model, a.data_dir, a.n_gsm8k, parts=tuple(a.parts.split(",")), gsm8k_range=rng)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
