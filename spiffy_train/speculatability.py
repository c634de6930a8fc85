"""How much a chain of top-1 drafts could save on a dLLM's greedy 1-token/step trajectory.

Replays ``spiffy.generate(backend, prompt, gen_length=256, block_length=32)`` (greedy, one token per
step; no cache by default, ``--cache dual`` when CPU time is short) with the project's own ``DecodeSession`` + ``denoise_step`` (as the baseline sampler
does) and records, at every step, the masked positions ranked by top-1 probability with their top-1
tokens. Offline, for draft depth D:

* the draft k steps ahead (k = 1..D) is the current state plus the current top-(k+1) positions with
  their top-1 tokens; it is correct when it equals the true state k+1 steps later;
* a round costs one model call and advances 1 + (number of consecutive depths 1..k that match) steps
  (capped at the block's end); every block start costs one extra call;
* the ratio is baseline calls (one per step) / those calls.

Also reports the mean top-1 probability of the committed token per step.

    python -m spiffy_train.speculatability models/spiffy-dllm-ref [--n 24] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

MAX_DEPTH = 10


@torch.no_grad()
def trace(backend, prompt_ids: list[int], gen_length: int = 256, block_length: int = 32, keep: int = MAX_DEPTH + 1,
          cache: str = "none"):
    """Greedy 1-token/step decode; returns (generated ids, per-block list of steps). A step is
    (committed position, committed token, its probability, ranked [(pos, tok)] top ``keep``)."""
    from spiffy.sampling.baseline import generate_baseline
    from spiffy.sampling.config import GenerationConfig

    cfg = GenerationConfig(gen_length=gen_length, block_length=block_length, cache=cache)
    blocks = []

    def on_step(b, t, schedule, logits, before, out):
        if t == 0:
            blocks.append([])
        conf = out.confidence[0]
        k = min(keep, int((conf > float("-inf")).sum()))
        top = torch.topk(conf, k).indices.tolist()
        ranked = [(p, int(out.x0[0, p])) for p in top]
        pos = int(out.committed[0].nonzero()[0, 0])
        blocks[-1].append((pos, int(out.x0[0, pos]), float(conf[pos]), ranked))

    res = generate_baseline(backend, [list(prompt_ids)], cfg, observer=on_step)
    return res.token_ids[0], blocks


def calls_for_depth(blocks, depth: int) -> int:
    calls = 0
    for steps in blocks:
        n = len(steps)
        calls += 1  # block start
        t = 0
        while t < n:
            ranked = steps[t][3]
            adv = 1
            for k in range(1, depth + 1):
                if t + k >= n or k + 1 > len(ranked):
                    break
                draft = {tuple(x) for x in ranked[:k + 1]}
                truth = {(steps[j][0], steps[j][1]) for j in range(t, t + k + 1)}
                if draft != truth:
                    break
                adv += 1
            calls += 1
            t += adv
    return calls


def record(backend, prompts: list[str], log=print, cache: str = "none") -> list[dict]:
    t0 = time.time()
    traces = []
    for i, p in enumerate(prompts):
        ids = backend.encode_prompt(p, chat=True)
        gen, blocks = trace(backend, ids, cache=cache)
        traces.append({"prompt": p, "generated_ids": gen, "text": backend.decode(gen), "blocks": blocks})
        log(f"trace {i + 1}/{len(prompts)} {time.time() - t0:.0f}s")
    return traces


def summarise(traces: list[dict], eos_id: int, cache: str, max_depth: int = MAX_DEPTH) -> dict:
    probs = [st[2] for t in traces for bl in t["blocks"] for st in bl]
    total_steps = len(probs)
    table = {}
    for d in range(1, max_depth + 1):
        calls = sum(calls_for_depth(t["blocks"], d) for t in traces)
        table[str(d)] = {"baseline_calls": total_steps, "spiffy_calls": calls, "ratio": round(total_steps / calls, 3)}
    eos_steps = sum(st[1] == eos_id for t in traces for bl in t["blocks"] for st in bl)
    return {"n_prompts": len(traces), "gen_length": 256, "block_length": 32, "cache": cache, "steps": total_steps,
            "mean_top1_prob_committed": round(sum(probs) / len(probs), 4),
            "fraction_steps_committing_eos": round(eos_steps / total_steps, 4),
            "ratio_by_depth": table, "outputs": [t["text"] for t in traces]}


def report(backend, prompts: list[str], max_depth: int = MAX_DEPTH, log=print, cache: str = "none") -> dict:
    t0 = time.time()
    res = summarise(record(backend, prompts, log, cache), backend.eos_id, cache, max_depth)
    res["wall_s"] = round(time.time() - t0, 1)
    return res


def main(argv=None):
    from spiffy.backends.loader import load_backend
    from spiffy.datasets import load_prompts
    from spiffy.memory import pin_mmap_threshold

    pin_mmap_threshold()   # 24 prompts x 256 steps of large temporaries: see spiffy.memory

    ap = argparse.ArgumentParser(description="draft-chain speculatability of a dLLM's greedy traces")
    ap.add_argument("model")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--dataset", default="gsm8k")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--range", default=None, help="START:STOP: trace only these prompts and write raw traces "
                                                    "(combine the pieces with --merge)")
    ap.add_argument("--merge", nargs="+", default=None, help="raw trace files from --range runs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", default="none", help="none (the exact spiffy.generate default) | prefix | dual")
    ap.add_argument("--out", default=None, help="JSON path (default: <model>/speculatability.json)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out or Path(a.model) / "speculatability.json")
    cfg = json.loads((Path(a.model) / "config.json").read_text())
    if a.merge:
        parts = [json.loads(Path(f).read_text()) for f in a.merge]
        parts.sort(key=lambda p: p["start"])
        traces = [t for p in parts for t in p["traces"]]
        res = summarise(traces, cfg["eos_token_id"], parts[0]["cache"])
        res["dataset"] = parts[0]["dataset"]
        res["wall_s_sum"] = round(sum(p["wall_s"] for p in parts), 1)
    else:
        be = load_backend(a.model, device="cpu", dtype="float32")
        rows = load_prompts(a.dataset, a.n, a.data_dir)
        lo, hi = (int(x) for x in a.range.split(":")) if a.range else (0, len(rows))
        t0 = time.time()
        traces = record(be, [r["prompt"] for r in rows[lo:hi]], cache=a.cache)
        if a.range:
            out.write_text(json.dumps({"start": lo, "stop": hi, "cache": a.cache, "dataset": f"first {a.n} {a.dataset} "
                                       "questions", "wall_s": round(time.time() - t0, 1), "traces": traces}))
            print(f"wrote {out}")
            return
        res = summarise(traces, be.eos_id, a.cache)
        res["dataset"] = f"first {a.n} {a.dataset} questions"
        res["wall_s"] = round(time.time() - t0, 1)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "outputs"}, indent=1))


if __name__ == "__main__":
    main()
