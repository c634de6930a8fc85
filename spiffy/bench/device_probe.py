"""One-call device measurement for a GPU session (``models/device/gpu_probe.sh``; a CPU dry run with ``--small``).

No network and no checkpoints are needed beyond the bundled reference dLLM. In one process, within a time
budget, it measures and writes one JSON:

1. **Per-call cost curves** of random-weight models with LLaDA-8B and Dream-7B shapes in bf16: a forward of
   ``rows`` x ``block`` query tokens over a cached context (what one baseline step, or one Spiffy
   verification of ``rows - 1`` drafts, costs), eager and ``torch.compile``-d, timed with CUDA events
   (median of repeats), and the peak memory.
2. **Identical-output rate on the device**: the bundled reference dLLM decodes the bundled calibration
   prompts with the baseline and with Spiffy (batch and packed verification, dual cache), greedy; the rate of
   prompts whose tokens are identical, and Spiffy's call shapes (rounds, drafts per round, block starts).
3. **A projection** of Spiffy's wall-clock ratio on the 8B shapes: the reference model's call counts and
   shapes from (2), each call priced from the cost curve of (1), against the NFE ratio.
4. **Replayed acceptance at 8B shapes, timed** (:mod:`spiffy.bench.replayed`): the random LLaDA-8B-shaped model
   decodes with Spiffy's real calls (verification forwards, walk on the device, one copy per call) following
   the reference dLLM's recorded traces, against the baseline on the same model; eager (plain shapes), and
   compiled (Spiffy at its static shape vs the compiled plain baseline).

Every section records its own seconds; a section that would run past the budget is skipped and says so.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

SHAPES = {
    "llada-8b": dict(family="llada", d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288,
                     vocab_size=126464),
    "dream-7b": dict(family="dream", hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
                     num_hidden_layers=28, intermediate_size=18944, vocab_size=152064),
}
SMALL = {   # CPU dry run: the same code at toy sizes (a vocabulary that holds the reference dLLM's 8192 ids)
    "llada-8b": dict(family="llada", d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128,
                     vocab_size=8200, mask_token_id=8199),
    "dream-7b": dict(family="dream", hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                     num_hidden_layers=2, intermediate_size=128, vocab_size=8200, mask_token_id=8199),
}


class Clock:
    """Seconds of a callable: CUDA events on a GPU (one sync per measurement), perf_counter on the CPU."""

    def __init__(self, device):
        import torch

        self.cuda = torch.device(device).type == "cuda"

    def time(self, fn, repeats: int, warmup: int = 2) -> float:
        import torch

        for _ in range(warmup):
            fn()
        out = []
        for _ in range(repeats):
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                out.append(a.elapsed_time(b) / 1000)
            else:
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        return statistics.median(out)


def random_model(spec: dict, device: str, dtype):
    """A random-weight model of the given shape, built directly on the device."""
    import torch

    from ..backends.dream import DreamConfig, DreamModel
    from ..backends.llada import LLaDAConfig, LLaDAModelLM

    kw = {k: v for k, v in spec.items() if k != "family"}
    with torch.device(device):
        model = LLaDAModelLM(LLaDAConfig(**kw)) if spec["family"] == "llada" else DreamModel(DreamConfig(**kw))
    return model.to(dtype).eval()


def cost_curves(name: str, spec: dict, device: str, context: int, block: int, rows: list, compiled_rows: list,
                repeats: int, deadline: float) -> dict:
    """Seconds per forward of ``rows`` x ``block`` tokens over a ``context``-token cached context."""
    import torch

    from ..backends.core import ContextKV

    t0 = time.time()
    dt = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    model = random_model(spec, device, dt)
    V = spec["vocab_size"]
    clock = Clock(device)
    out = {"model": name, "dtype": str(dt), "context": context, "block": block, "eager": {}, "compiled": {},
           "skipped": []}
    with torch.no_grad():
        x = torch.randint(0, V - 10, (1, context), device=device)
        pos = torch.arange(context, device=device)[None]
        o = model(x, position_ids=pos, return_kv=True, logits_index=torch.zeros(1, 1, dtype=torch.long, device=device))
        ctx = ContextKV([(k, v) for k, v in o.kv], torch.ones(1, context, dtype=torch.bool, device=device), pos)
        out["prefill_s"] = clock.time(lambda: model(x, position_ids=pos, return_kv=True), repeats=2, warmup=1)

        def step_fn(fwd, r):
            q = torch.randint(0, V - 10, (r, block), device=device)
            qp = (context + torch.arange(block, device=device))[None].expand(r, -1)
            c = ctx.repeat(r)
            return lambda: fwd(q, position_ids=qp, context=c)

        for r in rows:
            if time.time() > deadline:
                out["skipped"].append(f"eager rows={r}: budget")
                continue
            out["eager"][str(r)] = clock.time(step_fn(model, r), repeats)
        if compiled_rows:
            try:
                fast = torch.compile(model, mode="reduce-overhead" if clock.cuda else "default", dynamic=False)
                for r in compiled_rows:
                    if time.time() > deadline:
                        out["skipped"].append(f"compiled rows={r}: budget")
                        continue
                    t1 = time.time()
                    out["compiled"][str(r)] = clock.time(step_fn(fast, r), repeats, warmup=3)
                    out.setdefault("compile_s", {})[str(r)] = round(time.time() - t1, 1)
            except Exception as e:   # a compile failure is a result too
                out["compile_error"] = f"{type(e).__name__}: {e}"[:500]
    if clock.cuda:
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        torch.cuda.reset_peak_memory_stats()
    model = None
    if clock.cuda:
        torch.cuda.empty_cache()
    out["seconds"] = round(time.time() - t0, 1)
    return out


def probe_prompts(n: int) -> list:
    """The first ``n`` prompts of the first bundled calibration prompt set (two fixed ones when none ships)."""
    from ..resources import resource_dir

    texts = []
    for p in sorted((resource_dir("calibration") / "prompts").glob("*.jsonl"))[:1]:
        texts = [json.loads(line).get("prompt") or json.loads(line).get("question") for line in
                 p.read_text().splitlines() if line.strip()]
    return (texts or ["What is 12 times 7?", "Write a Python function that adds two numbers."])[:n]


def identical_rate(device: str, prompts: int, gen_length: int, budgets: list, deadline: float) -> dict:
    """Baseline vs Spiffy on the bundled reference dLLM on ``device`` (greedy, dual cache)."""
    from ..backends import load_backend
    from ..generation import generate
    from ..speculative import SpeculativeConfig

    t0 = time.time()
    be = load_backend("spiffy-dllm-ref", device=device, dtype="float32")
    texts = probe_prompts(prompts)
    common = dict(gen_length=gen_length, block_length=32, cache="dual", early_stop=True)
    out = {"model": be.name, "prompts": len(texts), "gen_length": gen_length, "runs": {}}
    plain = {}
    for static, verify in [(s, v) for s in (False, True) for v in ("batch", "packed")]:
        for D in budgets:
            key = f"{'static-' if static else ''}{verify}/D{D}"
            if time.time() > deadline:
                out["runs"][key] = "skipped: budget"
                continue
            same, same_plain, nfe_b, nfe_s = 0, 0, 0, 0
            shapes = {"block_starts": 0, "rounds": 0, "drafts_verified": 0, "steps": 0}
            for t in texts:
                if t not in plain:
                    plain[t] = generate(be, t, **common)
                # static: compared with the baseline run at the same static shape (bit for bit by construction)
                a = generate(be, t, static_drafts=D, static_layout=verify, **common) if static else plain[t]
                b = generate(be, t, speculative=SpeculativeConfig(budget=D, verify=verify, static=static), **common)
                same += int(a.token_ids == b.token_ids)
                same_plain += int(plain[t].token_ids == b.token_ids)
                nfe_b += a.nfe
                nfe_s += b.nfe
                for k in shapes:
                    shapes[k] += int(getattr(b.stats, k))
            out["runs"][key] = {"identical_rate": same / len(texts), "identical_to_plain_baseline": same_plain / len(texts),
                                "nfe_baseline": nfe_b, "nfe_spiffy": nfe_s,
                                "nfe_ratio": round(nfe_b / max(1, nfe_s), 3), **shapes}
    out["compiled"] = {}
    for D in budgets:
        if texts and time.time() < deadline:
            out["compiled"][f"D{D}"] = compiled_static(be, texts[0], D, common)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def compiled_static(be, text: str, D: int, common: dict) -> dict:
    """One prompt at one budget, static shapes, eager then compiled (``backend.compile``: CUDA graphs on a GPU):
    median seconds of 3 decodes of each after a warm-up (compiled: after the decodes that compile), and whether
    compiled Spiffy equals the compiled static baseline and the eager decode."""
    from ..generation import generate
    from ..speculative import SpeculativeConfig

    spec = SpeculativeConfig(budget=D, static=True)
    runs = {"baseline": lambda: generate(be, text, static_drafts=D, **common),
            "spiffy": lambda: generate(be, text, speculative=spec, **common)}
    clock = Clock(be.device)
    res, tokens = {"budget": D}, {}
    try:
        for phase in ("eager", "compiled"):
            if phase == "compiled":
                t = time.time()
                be.compile()
                for f in runs.values():   # compiles the shapes
                    f()
                res["compile_s"] = round(time.time() - t, 1)
            for name, f in runs.items():
                def decode(phase=phase, name=name, f=f):
                    tokens[phase, name] = f().token_ids[0]

                res[f"{phase}_{name}_s"] = round(clock.time(decode, repeats=3, warmup=1 if phase == "eager" else 0), 4)
        res["compiled_spiffy_equals_compiled_baseline"] = tokens["compiled", "spiffy"] == tokens["compiled", "baseline"]
        res["compiled_equals_eager"] = tokens["compiled", "spiffy"] == tokens["eager", "spiffy"]
    except Exception as e:   # a compile failure is a result too
        res["error"] = f"{type(e).__name__}: {e}"[:500]
    finally:
        be._call, be.compiled = None, None
    return res


def replayed_section(spec: dict, device: str, context: int, gen_length: int, prompts: int, budgets: list,
                     compiled: bool, deadline: float) -> dict:
    """Spiffy with the reference dLLM's acceptance on a random model of ``spec``'s shape (section 4): per budget,
    summed seconds of the baseline and of Spiffy over ``prompts`` traced prompts (each after a
    ``context``-token random prefix), eager and, with ``compiled``, compiled (Spiffy static)."""
    import random

    import torch

    from ..backends import load_backend
    from ..backends.backend import DiffusionBackend
    from ..sampling.baseline import generate_baseline
    from ..sampling.config import GenerationConfig
    from ..speculative import SpeculativeConfig
    from ..speculative.replay import provider_for, trace_baseline
    from .replayed import replayed_decode

    t0 = time.time()
    ref = load_backend("spiffy-dllm-ref", device=device, dtype="float32")
    cfg = GenerationConfig(gen_length=gen_length, block_length=32, cache="dual")
    texts = probe_prompts(prompts)
    traced = [trace_baseline(ref, ref.encode_prompt(t), cfg) for t in texts]
    dt = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    backend = DiffusionBackend(random_model(spec, device, dt), spec["family"], name="random-" + spec["family"])
    rng = random.Random(0)
    full = [[rng.randrange(8, 8000) for _ in range(max(0, context - len(r.prompt_ids[0])))] + r.prompt_ids[0]
            for r, _ in traced]
    clock = Clock(device)
    out = {"model": spec, "dtype": str(dt), "context": context, "gen_length": gen_length, "prompts": len(texts),
           "runs": {}}
    phases = ("eager", "compiled") if compiled else ("eager",)
    try:
        for phase in phases:
            if phase == "compiled":
                backend.compile()
            for D in budgets:
                if time.time() > deadline:
                    out["runs"][f"{phase}/D{D}"] = "skipped: budget"
                    continue
                spec_cfg = SpeculativeConfig(budget=D, static=phase == "compiled")
                provider, _ = provider_for(ref, cfg, spec_cfg)
                run_cfg = spec_cfg.static_config(cfg, provider.budget) if phase == "compiled" else cfg
                row = {"baseline_s": 0.0, "spiffy_s": 0.0, "nfe_baseline": 0, "nfe_spiffy": 0, "rounds": 0}
                for prompt, (_, tr) in zip(full, traced):
                    tr = dataclasses.replace(tr, cfg=run_cfg)
                    if phase == "compiled":      # the first decodes compile the shapes
                        generate_baseline(backend, [prompt], cfg)
                        replayed_decode(backend, prompt, tr, provider, spec_cfg)
                    base = {}
                    row["baseline_s"] += clock.time(lambda: base.update(r=generate_baseline(backend, [prompt], cfg)),
                                                    repeats=1, warmup=0)
                    got = {}
                    row["spiffy_s"] += clock.time(lambda: got.update(r=replayed_decode(backend, prompt, tr, provider,
                                                                                         spec_cfg)), repeats=1, warmup=0)
                    row["nfe_baseline"] += base["r"].nfe
                    row["nfe_spiffy"] += got["r"]["nfe"]
                    row["rounds"] += got["r"]["rounds"]
                    row["nfe_equals_replay"] = row.get("nfe_equals_replay", True) and \
                        got["r"]["nfe"] == got["r"]["replayed_nfe"]
                row["nfe_ratio"] = round(row["nfe_baseline"] / max(1, row["nfe_spiffy"]), 3)
                row["wall_ratio"] = round(row["baseline_s"] / row["spiffy_s"], 3) if row["spiffy_s"] else None
                row["fraction_of_nfe_ratio"] = round(row["wall_ratio"] / row["nfe_ratio"], 3) if row["wall_ratio"] else None
                out["runs"][f"{phase}/D{D}"] = row
    except Exception as e:   # a compile failure is a result too
        out["error"] = f"{type(e).__name__}: {e}"[:500]
    if clock.cuda:
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    backend = None   # free the weights before the next section
    if clock.cuda:
        torch.cuda.empty_cache()
    out["seconds"] = round(time.time() - t0, 1)
    return out


def _interp(curve: dict, r: float) -> float:
    """Linear interpolation of a cost curve {rows: seconds} at ``r`` rows (within the measured range)."""
    pts = sorted((int(k), v) for k, v in curve.items())
    if r <= pts[0][0]:
        return pts[0][1]
    for (r0, v0), (r1, v1) in zip(pts, pts[1:]):
        if r <= r1:
            return v0 + (v1 - v0) * (r - r0) / (r1 - r0)
    raise ValueError(f"{r} rows is past the measured curve")


def projection(curves: dict, ident: dict) -> dict:
    """Spiffy's projected wall ratio on each model's shapes from the reference model's call shapes (batch
    verification): baseline = block starts at the prefill cost + steps at the one-row cost; Spiffy = the same
    block starts + rounds at the cost of (1 + mean drafts per round) rows."""
    out = {}
    for name, c in curves.items():
        for mode in ("eager", "compiled"):
            curve = c.get(mode) or {}
            if "1" not in curve:
                continue
            for key, run in ident.get("runs", {}).items():
                if not isinstance(run, dict) or not key.startswith("batch/"):
                    continue
                starts = run["block_starts"]
                base_steps = run["nfe_baseline"] - starts
                d = run["drafts_verified"] / max(1, run["rounds"])
                if max(int(k) for k in curve) < 1 + d:
                    out[f"{name}/{mode}/{key}"] = f"not projected: no measured shape with {1 + d:.1f} rows"
                    continue
                t_base = starts * c["prefill_s"] + base_steps * curve["1"]
                t_spiffy = starts * c["prefill_s"] + run["rounds"] * _interp(curve, 1 + d)
                ratio = t_base / t_spiffy if t_spiffy > 0 else float("nan")
                out[f"{name}/{mode}/{key}"] = {"projected_wall_ratio": round(ratio, 3), "nfe_ratio": run["nfe_ratio"],
                                               "fraction_of_nfe_ratio": round(ratio / run["nfe_ratio"], 3),
                                               "mean_drafts_per_round": round(d, 2)}
    return out


def main(argv=None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="device-probe.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="toy shapes (a CPU dry run of the same code)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting new sections after this")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--rows", default="1,2,4,6,9,12,17")
    ap.add_argument("--compiled-rows", default="1,4,9")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--budgets", default="3,5,8")
    ap.add_argument("--no-cost", action="store_true", help="skip the cost curves (identical rate and compiled only)")
    ap.add_argument("--replayed-prompts", type=int, default=2, help="section 4: traced prompts (0: skip the section)")
    ap.add_argument("--replayed-budgets", default="5")
    ap.add_argument("--replayed-gen-length", type=int, default=128)
    ap.add_argument("--replayed-compiled", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--only-replayed", action="store_true", help="run section 4 alone")
    a = ap.parse_args(argv)
    t_start = time.time()
    deadline = t_start + a.budget_s
    from .machine import machine_info

    res = {"machine": machine_info(a.device), "torch": torch.__version__, "small": a.small, "args": vars(a)}
    rows = [int(x) for x in a.rows.split(",")]
    crow = [int(x) for x in a.compiled_rows.split(",") if x]
    shapes = SMALL if a.small else SHAPES
    res["cost"] = {}
    if a.only_replayed:
        a.no_cost = True
    for name, spec in ({} if a.no_cost else shapes).items():
        if time.time() > deadline:
            res["cost"][name] = "skipped: budget"
            continue
        try:
            res["cost"][name] = cost_curves(name, spec, a.device, a.context, a.block, rows, crow, a.repeats, deadline)
        except Exception as e:
            res["cost"][name] = {"error": f"{type(e).__name__}: {e}"[:500]}
        _write(a.out, res)
    if a.replayed_prompts and a.only_replayed:
        res["replayed"] = _replayed(a, shapes, deadline)
        _write(a.out, res)
    try:
        res["identical"] = {} if a.only_replayed else identical_rate(
            a.device, a.prompts, a.gen_length, [int(x) for x in a.budgets.split(",")], deadline + 120)
    except Exception as e:
        res["identical"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    if a.replayed_prompts and not a.only_replayed:
        _write(a.out, res)
        res["replayed"] = _replayed(a, shapes, deadline + 120)
    from .cost_model import table_from_probe

    res["cost_tables"] = {f"{m}/{mode}": table_from_probe(res, m, mode, f"{m}-{mode}") for m, c in res["cost"].items()
                          if isinstance(c, dict) for mode in ("eager", "compiled") if c.get(mode)}
    res["projection"] = projection({k: v for k, v in res["cost"].items() if isinstance(v, dict) and "eager" in v},
                                   res["identical"] if isinstance(res["identical"], dict) else {})
    res["seconds"] = round(time.time() - t_start, 1)
    _write(a.out, res)
    print(json.dumps({"out": a.out, "seconds": res["seconds"]}))
    return res


def _replayed(a, shapes: dict, deadline: float) -> dict:
    try:
        return replayed_section(shapes["llada-8b"], a.device, a.context, a.replayed_gen_length, a.replayed_prompts,
                                [int(x) for x in a.replayed_budgets.split(",")], a.replayed_compiled, deadline)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"[:500]}


def _write(path, obj):
    from ..atomic import atomic_write_json

    atomic_write_json(Path(path), obj)


if __name__ == "__main__":
    main()
