"""`spiffy serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over a dLLM or an AR target."""
from __future__ import annotations

import signal
import sys

import click

from . import main
from .options import dataclass_options
from .sample import fail


PER_REQUEST = ("gen_length", "temperature", "seed", "steps")   # set by each request (max_tokens, temperature, seed)


def server_decode_options(f):
    """The sampler's options, generated from GenerationConfig, except those each request sets."""
    from ..sampling.config import GenerationConfig

    for o in reversed(dataclass_options(GenerationConfig, exclude=PER_REQUEST)):
        f = o(f)
    return f


@main.command()
@click.option("--model", default=None, help="dLLM to serve [default: the bundled reference dLLM].")
@click.option("--target", default=None, help="Serve this AR target instead (checkpoint, hub id or a named model such "
                                              "as smollm2-135m-instruct), accelerated by --drafter.")
@click.option("--drafter", default=None, help="With --target: `ngram`, a dLLM or a small causal LM [default: the best "
                                              "drafter for a named target, else the bundled dLLM].")
@click.option("--strategy", type=click.Choice(["plain", "chain", "tree", "adaptive", "path"]), default="chain",
              show_default=True, help="With --target: the default AR strategy (a request may choose another).")
@click.option("--budget", type=click.IntRange(min=0), default=None,
              help="dLLM: default Spiffy draft budget D, 0 = the plain baseline [default: 8 on CUDA, 0 on CPU, "
                   "where every draft costs full compute]. A request may set spiffy.budget.")
@server_decode_options
@click.option("--max-tokens-limit", default=512, show_default=True, type=click.IntRange(min=1),
              help="Largest max_tokens a request may ask for.")
@click.option("--default-max-tokens", default=None, type=click.IntRange(min=1),
              help="max_tokens of a request that gives none [default: 128, or --max-tokens-limit if smaller].")
@click.option("--max-budget", default=16, show_default=True, type=click.IntRange(min=0),
              help="Largest spiffy.budget a request may ask for.")
@click.option("--max-queue", default=64, show_default=True, type=click.IntRange(min=1),
              help="Requests that may wait; more get 429 with Retry-After.")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(min=1),
              help="dLLM: requests with equal settings decoded together.")
@click.option("--batching/--no-batching", default=True, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads [default: torch's].")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(model, target, drafter, strategy, budget, max_tokens_limit, default_max_tokens, max_budget, max_queue,
          max_batch, batching, host, port, device, dtype, threads, log_level, **kw):
    """Serve POST /v1/chat/completions and /v1/completions (streaming included), GET /v1/models, /health and
    /metrics. Every answer equals the offline API's for the same prompt, settings and seed, whatever else
    is being served; requests with equal settings are decoded as one batch."""
    import torch

    try:
        import uvicorn
    except ImportError:
        fail("spiffy serve needs FastAPI and uvicorn: pip install 'spiffy[serve]' (or -e '.[serve]')")
    from ..errors import SpiffyError
    from ..serve.app import create_app
    from ..serve.engines import AREngine, DLLMEngine, ServeLimits

    if threads:
        torch.set_num_threads(threads)
    if default_max_tokens is None:
        default_max_tokens = min(128, max_tokens_limit)
    if default_max_tokens > max_tokens_limit:
        fail(f"--default-max-tokens {default_max_tokens} is over --max-tokens-limit {max_tokens_limit}")
    limits = ServeLimits(max_tokens=max_tokens_limit, default_max_tokens=default_max_tokens, max_budget=max_budget)
    try:
        if target is not None:
            if model is not None or budget is not None or kw.get("threshold") is not None:
                raise SpiffyError("--model, --budget and --threshold set a dLLM server; with --target give --drafter")
            from ..ar.decode import ARDecodeConfig
            from ..ar.pair import default_drafter_name, load_drafter_model
            from ..ar.target import load_causal_lm

            tgt = load_causal_lm(target, device=device, dtype=dtype)
            dsrc = drafter or default_drafter_name(target)
            if dsrc is None:
                from ..backends.loader import default_model_path

                dsrc = str(default_model_path())
            engine = AREngine(tgt, load_drafter_model(dsrc, device, dtype), ARDecodeConfig(), strategy, limits)
        else:
            if drafter is not None:
                raise SpiffyError("--drafter drafts for an AR --target")
            from ..backends import load_backend
            from ..sampling.config import GenerationConfig

            backend = load_backend(model, device=device, dtype=dtype)
            base = GenerationConfig(**kw, gen_length=kw["block_length"])   # a request sets its own length
            if budget is None:
                budget = 8 if backend.device.type == "cuda" else 0
            if budget > max_budget:
                raise SpiffyError(f"--budget {budget} is over --max-budget {max_budget}")
            engine = DLLMEngine(backend, base, budget, limits)
    except SpiffyError as e:
        fail(str(e))
    app = create_app(engine, max_queue=max_queue, max_batch=max_batch, batching=batching)
    click.echo(f"spiffy serve: {engine.kind} model {engine.name!r} on http://{host}:{port}/v1 "
               f"(batching {'on' if app.state.scheduler.batching else 'off'})", err=True)
    # uvicorn drains on SIGTERM, then raises the signal again under the handler it found: make that a
    # clean exit (status 0) rather than death by signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=None)
