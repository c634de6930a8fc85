"""The target's own greedy answers to training prompts: what a drafter trained for that target learns to say.

DFlash trains its drafter on the target's regenerated responses rather than on the data set's reference
answers, so that the drafter learns what the target will accept. Here: GSM8K-train questions, MBPP-train
tasks and Python-stdlib function stubs (all from ``../shared/data``), in the target's chat template, decoded
greedily by the target in batches (left padding, transformers ``generate``). Rows are appended to a JSONL
file as each batch finishes, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from spiffy.errors import ConfigError

from .data import gsm8k_rows, mbpp_prompt, mbpp_train_rows, stdlib_function_pairs


def training_prompts(data_dir, sources: dict, seed: int = 0) -> list[dict]:
    """{"source", "id", "text"} rows: ``sources`` = {"gsm8k": n, "mbpp": n, "stdlib": n} (how many of each)."""
    d = Path(data_dir)
    out = []
    if sources.get("gsm8k"):
        out += [{"source": "gsm8k", "id": f"gsm8k-train/{i}", "text": r["question"]}
                for i, r in enumerate(gsm8k_rows(d, "train"))]
    if sources.get("mbpp"):
        out += [{"source": "mbpp", "id": f"mbpp/{r['task_id']}", "text": mbpp_prompt(r)} for r in mbpp_train_rows(d)]
    if sources.get("stdlib"):
        pairs = stdlib_function_pairs(d, limit=4 * int(sources["stdlib"]), seed=seed)
        out += [{"source": "stdlib", "id": f"stdlib/{i}", "text": p} for i, (p, _) in enumerate(pairs)]
    rng = random.Random(seed)
    picked = []
    for name, n in sources.items():
        rows = [r for r in out if r["source"] == name]
        rng.shuffle(rows)
        picked += rows[: int(n)]
    if not picked:
        raise ConfigError(f"no training prompts from sources {sources}")
    rng.shuffle(picked)
    return picked


def chat_ids(tok, text: str) -> list:
    """The prompt as the target sees it in decoding: its chat template (plain text without one)."""
    if not getattr(tok, "chat_template", None):
        return tok(text, add_special_tokens=False)["input_ids"]
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@torch.no_grad()
def generate_answers(model, tok, prompts: list, out_path: Path, max_prompt: int, max_new: int, batch: int,
                     stop_ids: list, log=print) -> list:
    """Greedy answers for ``prompts`` appended to ``out_path`` (JSONL); rows already there are kept.
    Returns every row: {"source", "id", "prompt", "answer"} (token ids; the answer ends with a stop
    token unless it hit ``max_new``)."""
    out_path = Path(out_path)
    done = {}
    if out_path.exists():
        for line in out_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["id"]] = r
    todo = []
    for p in prompts:
        if p["id"] in done:
            continue
        ids = chat_ids(tok, p["text"])
        if len(ids) <= max_prompt:
            todo.append({**p, "prompt": ids})
    todo.sort(key=lambda r: len(r["prompt"]))    # similar lengths share a batch: little padding
    pad = tok.pad_token_id if tok.pad_token_id is not None else stop_ids[0]
    dev = next(model.parameters()).device
    t0, n0 = time.time(), len(done)
    with out_path.open("a") as f:
        for s in range(0, len(todo), batch):
            rows = todo[s: s + batch]
            P = max(len(r["prompt"]) for r in rows)
            x = torch.full((len(rows), P), pad, dtype=torch.long)
            att = torch.zeros(len(rows), P, dtype=torch.long)
            for i, r in enumerate(rows):
                x[i, P - len(r["prompt"]):] = torch.tensor(r["prompt"])
                att[i, P - len(r["prompt"]):] = 1
            y = model.generate(x.to(dev), attention_mask=att.to(dev), max_new_tokens=max_new, do_sample=False,
                               eos_token_id=stop_ids, pad_token_id=pad)
            for i, r in enumerate(rows):
                ans = []
                for t in y[i, P:].tolist():
                    ans.append(int(t))
                    if t in stop_ids:
                        break
                rec = {"source": r["source"], "id": r["id"], "prompt": r["prompt"], "answer": ans}
                done[r["id"]] = rec
                f.write(json.dumps(rec) + "\n")
            f.flush()
            log(f"target answers: {len(done) - n0}/{len(todo)} new in {time.time() - t0:.0f} s")
    order = {p["id"]: k for k, p in enumerate(prompts)}
    return sorted((r for r in done.values() if r["id"] in order), key=lambda r: order[r["id"]])
