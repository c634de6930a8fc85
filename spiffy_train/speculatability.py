"""How much a chain of top-1 drafts saves on a dLLM's greedy 1-token/step trajectory.

Traces ``spiffy.generate(backend, prompt, gen_length=256, block_length=32)`` (greedy, one token per
step; no cache by default, ``--cache dual`` when CPU time is short) with the library's
``trace_baseline``, then, for each depth D, runs Spiffy's own decode loop over the traces
(``spiffy.speculative.replay``) with the top-1 chain graph of depth D: the draft d steps ahead fills
the d most confident masked positions with their top-1 tokens. The ratio is baseline calls / the calls
that replay makes, which the decoder then measures exactly (tested). Also reports the mean
probability of the committed token per step and how many steps commit EOS.

    python -m spiffy_train.speculatability models/spiffy-dllm-ref [--n 24] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

MAX_DEPTH = 10


def chain_graph(depth: int):
    """The top-1 chain of ``depth`` drafts: {0:0}, {0:0,1:0}, ... (one token per step)."""
    from spiffy.speculative.graph import formula, make_graph

    return make_graph([formula([(i, 0) for i in range(d)]) for d in range(1, depth + 1)], "fixed", [1] * depth)


def trace(backend, prompt_ids: list[int], gen_length: int = 256, block_length: int = 32, cache: str = "none"):
    """Greedy 1-token/step decode, traced (top-1 draft sources). Returns (generated ids, Trace)."""
    from spiffy.sampling.config import GenerationConfig
    from spiffy.speculative.replay import trace_baseline

    cfg = GenerationConfig(gen_length=gen_length, block_length=block_length, cache=cache)
    res, tr = trace_baseline(backend, list(prompt_ids), cfg, k=1)
    return res.token_ids[0], tr


def trace_to_json(tr) -> dict:
    return {"cfg": tr.cfg.to_dict(), "ids": [tr.mask_id, tr.eos_id, tr.eot_id],
            "blocks": [{"states": [list(s) for s in bt.states], "schedule": bt.schedule,
                        "sources": [[s.top1.tolist(), s.tokens.tolist(), s.probs.tolist()] for s in bt.sources]}
                       for bt in tr.blocks]}


def trace_from_json(d: dict):
    from spiffy.sampling.config import GenerationConfig
    from spiffy.speculative.proposer import DraftSource
    from spiffy.speculative.replay import BlockTrace, Trace

    blocks = [BlockTrace([tuple(s) for s in b["states"]],
                         [DraftSource(torch.tensor(a, dtype=torch.float64), torch.tensor(t), torch.tensor(p, dtype=torch.float64))
                          for a, t, p in b["sources"]], b["schedule"]) for b in d["blocks"]]
    return Trace(blocks, GenerationConfig(**d["cfg"]), *d["ids"])


def calls_for_depth(traces: list, depth: int) -> int:
    """Spiffy's calls on ``traces`` with the top-1 chain of ``depth`` drafts (the decode loop over them)."""
    from spiffy.speculative.config import SpeculativeConfig
    from spiffy.speculative.replay import replay_nfe
    from spiffy.speculative.walk import GraphProvider

    spec = SpeculativeConfig(graph=chain_graph(depth), use_calibration=False)
    return replay_nfe(traces, GraphProvider(spec, None, traces[0].cfg, "llada"))["nfe"]


def record(backend, prompts: list[str], log=print, cache: str = "none") -> list[dict]:
    t0 = time.time()
    traces = []
    for i, p in enumerate(prompts):
        ids = backend.encode_prompt(p, chat=True)
        gen, tr = trace(backend, ids, cache=cache)
        traces.append({"prompt": p, "generated_ids": gen, "text": backend.decode(gen), "trace": trace_to_json(tr)})
        log(f"trace {i + 1}/{len(prompts)} {time.time() - t0:.0f}s")
    return traces


def summarise(records: list[dict], eos_id: int, cache: str, max_depth: int = MAX_DEPTH) -> dict:
    traces = [trace_from_json(r["trace"]) for r in records]
    probs, eos_steps = [], 0
    for tr in traces:
        for bt in tr.blocks:
            for t, src in enumerate(bt.sources):
                for pos, (a, b) in enumerate(zip(bt.states[t], bt.states[t + 1])):
                    if a != b:
                        probs.append(float(src.probs[pos, 0]) if int(src.tokens[pos, 0]) == b else float("nan"))
                        eos_steps += b == eos_id
    total_steps = sum(len(bt.states) - 1 for tr in traces for bt in tr.blocks)
    table = {}
    for d in range(1, max_depth + 1):
        calls = calls_for_depth(traces, d)
        table[str(d)] = {"baseline_calls": total_steps, "spiffy_calls": calls, "ratio": round(total_steps / calls, 3)}
    known = [p for p in probs if p == p]
    return {"n_prompts": len(traces), "gen_length": 256, "block_length": 32, "cache": cache, "steps": total_steps,
            "mean_top1_prob_committed": round(sum(known) / len(known), 4),
            "fraction_steps_committing_eos": round(eos_steps / total_steps, 4),
            "ratio_by_depth": table, "outputs": [r["text"] for r in records]}


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
