"""`spiffy bench`: measure decoders on real prompts.

``--mode spiffy`` (default): baseline vs Spiffy on the same prompts (:mod:`spiffy.bench.dllm`).
``--mode batch``: Spiffy on batches of prompts vs the same prompts one at a time (:mod:`spiffy.bench.batch`).
``--mode static``: static shapes and compiled steps, baseline and Spiffy, eager and compiled (:mod:`spiffy.bench.static`).
``--mode ar``: the dLLM-drafter / AR-target benchmark, implemented in ``spiffy.bench.ar.run_ar_bench``
(imported only in that mode). Its own options go in :data:`AR_OPTIONS` below; every option of the
command is passed to ``run_ar_bench`` as a keyword argument.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import main
from .parallel import PARALLEL_PARAMS, joined, parallel_options
from .sample import decode_options, fail, reject_given

# ---- options of `--mode ar` (owned by the AR benchmark; add click.option(...) entries here) ----------
from .bench_ar import ar_click_options  # noqa: E402

AR_OPTIONS: list = ar_click_options()
AR_BENCH_ONLY = tuple(o(lambda: None).__click_params__[0].name for o in AR_OPTIONS)   # their parameter names
DLLM_BENCH_ONLY = ("budgets", "graph_file", "use_calibration", "prune", "verify", "caches", "thresholds", "ks", "predict",
                   "cost_model",
                   "ceiling", "vanilla", "allow_mismatch", "block_length", "cfg_scale", "remasking", "sampler", "top_p",
                   "top_k", "early_stop", "alg_temp", "logits_eos_inf", "confidence_eos_eot_inf")


def ar_options(f):
    for o in reversed(AR_OPTIONS):
        f = o(f)
    return f


SERVE_OPTIONS = [
    click.option("--clients", default="1,4,16", show_default=True,
                 help="[serve] Comma-separated numbers of concurrent clients."),
    click.option("--requests-per-client", default=4, show_default=True, type=click.IntRange(min=1),
                 help="[serve] Requests each client sends, one after another."),
    click.option("--max-tokens", "serve_max_tokens", default=64, show_default=True, type=click.IntRange(min=1),
                 help="[serve] max_tokens of each request."),
    click.option("--serve-budget", default=8, show_default=True, type=click.IntRange(min=1),
                 help="[serve] Spiffy budget D of the accelerated dLLM configurations."),
    click.option("--serve-strategy", type=click.Choice(["chain", "tree", "adaptive", "path"]), default="chain",
                 show_default=True, help="[serve] AR strategy of the accelerated configuration (with --target)."),
]
SERVE_ONLY = ("clients", "requests_per_client", "serve_max_tokens", "serve_budget", "serve_strategy")
SERVE_SHARED = ("ar_target", "ar_drafter")   # --target/--ar-drafter also pick the served AR target


def serve_options(f):
    for o in reversed(SERVE_OPTIONS):
        f = o(f)
    return f


SETTING_PARAMS = ("cache", "threshold", "tokens_per_step", "steps")


def bench_defaults(f):
    """Gen 256, block 32 by default (the paper's setting). The single-valued --cache, --threshold,
    --tokens-per-step and --steps of the shared decode options are replaced by the bench's setting lists."""
    f.__click_params__ = [p for p in f.__click_params__ if p.name not in SETTING_PARAMS]
    for p in f.__click_params__:
        if p.name == "gen_length":
            p.default = 256
    return f


@main.command()
@bench_defaults
@click.option("--mode", type=click.Choice(["spiffy", "batch", "static", "ar", "serve"]), default="spiffy", show_default=True,
              help="spiffy: baseline vs Spiffy on a dLLM; batch: Spiffy on batches vs one prompt at a time "
                   "(spiffy.bench.batch); static: static shapes and compiled steps, eager vs compiled "
                   "(spiffy.bench.static); ar: dLLM drafters for an AR target (spiffy.bench.ar); "
                   "serve: `spiffy serve` under 1..N concurrent clients (spiffy.bench.serve).")
@click.option("--batch-sizes", default="1,4,8", show_default=True, help="[batch] Comma-separated batch sizes.")
@click.option("--model", default=None, help="dLLM checkpoint [default: the bundled reference dLLM].")
@click.option("--dataset", "datasets", multiple=True, default=("gsm8k", "humaneval"), show_default=True,
              help="Prompt set(s): gsm8k, humaneval, mbpp, ... or a JSONL/text file. Repeatable.")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(min=1), help="Prompts per dataset.")
@click.option("--data-dir", default=None, help="Data directory [default: $SPIFFY_DATA or ../shared/data].")
@click.option("--budgets", default="1,3,5,8,10", show_default=True, help="Comma-separated draft budgets D.")
@click.option("--graph", "graph_file", default=None, type=click.Path(dir_okay=False),
              help="Use this draft graph file instead of budgets (reported as one budget).")
@click.option("--calibration/--no-calibration", "use_calibration", default=True, show_default=True,
              help="Use a calibrated draft graph when calibration/ has one for the model and setting.")
@click.option("--allow-mismatch", is_flag=True,
              help="Use a calibrated graph even when it was calibrated for another model (experiments only).")
@click.option("--prune", default=None, help="Runtime pruning: N (the best N nodes per round) or cost:TABLE (per "
              "round, the drafts worth their cost under a cost table).")
@click.option("--verify", type=click.Choice(["batch", "packed"]), default="batch", show_default=True,
              help="Verification: batch copies (exact) or packed (exact only with cache dual).")
@click.option("--cache", "caches", multiple=True, default=("none",), show_default=True,
              type=click.Choice(["none", "prefix", "dual"]), help="Cache mode setting(s) to benchmark. Repeatable.")
@click.option("--threshold", "thresholds", multiple=True, type=float,
              help="Also benchmark threshold decoding at these thresholds. Repeatable.")
@click.option("--tokens-per-step", "ks", multiple=True, type=int, default=(1,), show_default=True,
              help="Tokens per step setting(s) for fixed-count decoding. Repeatable; 0 = none (threshold only).")
@click.option("--predict", is_flag=True,
              help="Also replay the baseline's traces with the same graph and print the predicted NFE.")
@click.option("--ceiling", is_flag=True, help="Also report the NFE ceiling any graph of each budget could reach.")
@click.option("--cost-model", "cost_model", multiple=True,
              help="Also project each row's wall-clock ratio on another machine from the run's call shapes priced by a "
                   "cost table (a JSON file, or a bundled name in models/device/costs/, e.g. h100-llada8b-bf16); "
                   "labelled projected. Repeatable.")
@click.option("--vanilla/--no-vanilla", default=True, show_default=True,
              help="Time the vanilla baseline (cache none, 1 token/step) for the combined tokens/s gain.")
@click.option("--out", "out_dir", default=None, help="Output folder [default: runs/bench-<time>].")
@click.option("--threads", type=int, default=None, help="torch CPU threads [default: torch's].")
@click.option("--raw", is_flag=True, help="Do not apply the chat template.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@parallel_options
@decode_options
@ar_options
@serve_options
def bench(mode, **kw):
    """Benchmark decoders. Default: baseline vs Spiffy per setting and budget (NFE ratio, wall-clock ratio,
    tokens/s, identical-output rate, accepted drafts per round); writes JSON, a markdown table and a plot."""
    from ..memory import pin_mmap_threshold

    pin_mmap_threshold()   # long decode loops (spiffy.memory)
    ctx = click.get_current_context()
    if mode == "ar":
        reject_given(ctx, DLLM_BENCH_ONLY + PARALLEL_PARAMS + SERVE_ONLY, "to --mode ar (they set the dLLM benchmark)")
    elif mode == "serve":
        reject_given(ctx, DLLM_BENCH_ONLY + PARALLEL_PARAMS + tuple(n for n in AR_BENCH_ONLY if n not in SERVE_SHARED),
                     "to --mode serve")
        return run_serve_mode(**kw)
    else:
        reject_given(ctx, AR_BENCH_ONLY + SERVE_ONLY, f"to --mode {mode} (they set the AR-verifier benchmark: add --mode ar)")
    if mode != "batch":
        reject_given(ctx, ("batch_sizes",), "without --mode batch")
    if mode in ("batch", "static"):
        reject_given(ctx, ("predict", "ceiling", "vanilla", "cost_model") + PARALLEL_PARAMS, f"to --mode {mode}")
    if mode == "ar":
        from ..bench.ar import run_ar_bench
        from ..errors import SpiffyError

        try:
            run_ar_bench(**kw)
        except SpiffyError as e:
            fail(str(e))
        return
    run_spiffy_bench(bench_mode=mode, **kw)


def run_spiffy_bench(model, datasets, limit, data_dir, budgets, graph_file, use_calibration, prune, verify, caches, thresholds, ks,
                     predict, ceiling, vanilla, out_dir, threads, raw, device, dtype, allow_mismatch=False, resume=False,
                     cost_model=(),
                     shard_size=4, dist_timeout=120.0, bench_mode="spiffy", batch_sizes="1", **kw):
    import torch

    from ..backends import load_backend
    from ..bench.dllm import Setting, markdown_table, run_dllm_bench, timestamp, write_outputs
    from ..bench.machine import machine_info
    from ..datasets import load_prompts
    from ..errors import SpiffyError
    from ..speculative.config import MAX_BUDGET, SpeculativeConfig
    from ..parse import int_list
    from .sample import config_from

    if threads:
        torch.set_num_threads(threads)
    with joined(device, resume, shard_size, dist_timeout) as sharding:
        world = sharding.world
        base_cfg = config_from({**kw, "cache": "none", "threshold": None, "tokens_per_step": None, "steps": None})
        budget_list = int_list(budgets, "--budgets", 0, MAX_BUDGET)
        prune = SpeculativeConfig(prune=prune).validate().prune     # "3" -> 3; a missing cost table fails here
        if graph_file:
            from ..speculative import load_graph
            from ..speculative.graph import budget_of

            budget_list = [budget_of(load_graph(graph_file))]
        settings = [Setting(c, None, k) for c in caches for k in ks if k > 0]
        settings += [Setting(c, t, 1) for c in caches for t in thresholds]
        if not settings:
            raise SpiffyError("no setting to benchmark: give --tokens-per-step and/or --threshold")
        sets = {name: load_prompts(name, limit, data_dir) for name in datasets}   # bad files fail before the model loads
        from ..costs import CostTable

        costs = [CostTable.load(c) for c in cost_model]
        if bench_mode != "spiffy" and world.distributed:
            raise SpiffyError(f"--mode {bench_mode} runs in one process (it compares decodes on one device): "
                              "not under torchrun")
        if bench_mode == "batch":
            sizes = int_list(batch_sizes, "--batch-sizes", 1, 256)    # before the model loads
        device = world.device(device)
        backend = load_backend(model, device=device, dtype=dtype)
        if bench_mode != "spiffy":
            return run_one_process_mode(bench_mode, backend, sets, settings, budget_list, base_cfg,
                                        sizes if bench_mode == "batch" else None, verify, graph_file, prune,
                                        use_calibration, allow_mismatch, raw, out_dir, device)
        result = {"machine": {**machine_info(device), "ranks": world.size}, "model": backend.name,
                  "args": {"datasets": list(datasets), "limit": limit, "budgets": budget_list, "verify": verify,
                           "graph": graph_file, "use_calibration": use_calibration, "prune": prune,
                           "settings": [s.name for s in settings], "generation": base_cfg.to_dict(),
                           "cost_models": [{"name": c.name, "device": c.device} for c in costs]},
                  "rows": [], "vanilla": {}, "outputs": []}
        who = f"rank {world.rank} " if world.distributed else ""
        for name, rows in sets.items():
            prompts = [backend.encode_prompt(r["prompt"], chat=not raw) for r in rows]
            if world.main:
                click.echo(f"[{name}] {len(prompts)} prompts" + (f" on {world.size} ranks" if world.distributed else ""),
                           err=True)
            try:
                res = run_dllm_bench(backend, prompts, settings, budget_list, base_cfg, verify=verify, predict=predict,
                                     ceiling=ceiling, vanilla=vanilla, graph=graph_file, prune=prune,
                                     use_calibration=use_calibration, allow_mismatch=allow_mismatch,
                                     progress=lambda s: click.echo(f"  {who}{name}: {s}", err=True), sharding=sharding,
                                     costs=costs)
            except SpiffyError as e:
                raise SpiffyError(f"{name}: {e}") from None
            if res is None:   # another rank of a torchrun job: rank 0 aggregates and writes
                continue
            for r in res["rows"]:
                r["dataset"] = name
            result["rows"] += res["rows"]
            result["outputs"] += [{"dataset": name, **o} for o in res["outputs"]]
            if "vanilla" in res:
                result["vanilla"][name] = res["vanilla"]
        if not world.main:
            return
        out = Path(out_dir) if out_dir else Path("runs") / f"bench-{timestamp()}"
        paths = write_outputs(result, out, predict, ceiling)
        sharding.finished()
    click.echo(markdown_table(result, predict, ceiling))
    click.echo(json.dumps({"outputs": paths, "machine": result["machine"]}))


def run_one_process_mode(mode, backend, sets, settings, budgets, base_cfg, sizes, verify, graph, prune,
                         use_calibration, allow_mismatch, raw, out_dir, device):
    """``--mode batch`` (:mod:`spiffy.bench.batch`) and ``--mode static`` (:mod:`spiffy.bench.static`)."""
    from ..atomic import atomic_write_json, atomic_write_text
    from ..bench.dllm import resolve_specs, timestamp
    from ..bench.machine import machine_info

    plan = []
    for st in settings:
        cfg = st.config(base_cfg)
        specs = resolve_specs(backend, cfg, budgets, verify, graph, prune, use_calibration, allow_mismatch)
        plan.append((st.name, cfg, {D: spec for D, (spec, _) in specs.items()}))
    prompts = [backend.encode_prompt(r["prompt"], chat=not raw) for rows in sets.values() for r in rows]
    say = lambda s: click.echo(f"  {s}", err=True)   # noqa: E731
    if mode == "batch":
        from ..bench.batch import markdown, run_batch_bench

        rows = run_batch_bench(backend, prompts, plan, sizes, progress=say)
    else:
        from ..bench.static import markdown, run_static_bench

        rows = run_static_bench(backend, prompts, plan, progress=say)
    res = {"machine": machine_info(device), "model": backend.name, "datasets": list(sets), "prompts": len(prompts),
           "generation": base_cfg.to_dict(), "verify": verify, "rows": rows}
    out = Path(out_dir) if out_dir else Path("runs") / f"bench-{mode}-{timestamp()}"
    atomic_write_json(out / f"bench_{mode}.json", res)
    atomic_write_text(out / f"bench_{mode}.md", markdown(rows) + "\n")
    click.echo(markdown(rows))
    click.echo(json.dumps({"outputs": [str(out / f"bench_{mode}.json"), str(out / f"bench_{mode}.md")],
                           "machine": res["machine"]}))


def run_serve_mode(model, datasets, limit, data_dir, out_dir, threads, device, dtype, ar_target, ar_drafter, clients,
                   requests_per_client, serve_max_tokens, serve_budget, serve_strategy, **_):
    from ..bench.dllm import timestamp
    from ..bench.machine import machine_info
    from ..bench.serve import default_configs, markdown, run_serve_bench, write
    from ..datasets import load_prompts
    from ..errors import SpiffyError
    from ..parse import int_list

    try:
        counts = int_list(clients, "--clients", 1, 256)
        prompts = [r["prompt"] for name in datasets for r in load_prompts(name, limit, data_dir)]
        server_args = ["--device", device, "--dtype", dtype, "--max-queue", str(max(64, 2 * max(counts))),
                       "--max-batch", str(max(8, max(counts))), "--max-tokens-limit", str(serve_max_tokens)]
        if ar_target:
            server_args += ["--target", ar_target] + (["--drafter", ar_drafter] if ar_drafter else [])
        elif model:
            server_args += ["--model", model]
        configs = default_configs("ar" if ar_target else "dllm", serve_budget, serve_strategy)
        res = run_serve_bench(prompts, server_args, configs, counts, requests_per_client, serve_max_tokens,
                              threads or 1, say=lambda m: click.echo(f"  {m}", err=True))
    except SpiffyError as e:
        fail(str(e))
    res.update(machine=machine_info(device), args={"model": model, "target": ar_target, "drafter": ar_drafter,
                                                    "datasets": list(datasets), "limit": limit, "clients": counts,
                                                    "requests_per_client": requests_per_client,
                                                    "max_tokens": serve_max_tokens, "threads_per_server": threads or 1})
    out = Path(out_dir) if out_dir else Path("runs") / f"bench-serve-{timestamp()}"
    paths = write(res, out)
    click.echo(markdown(res))
    click.echo(json.dumps({"outputs": paths, "machine": res["machine"]}))
