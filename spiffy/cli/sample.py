"""`spiffy sample`: decode one prompt and print the text (or one JSON object)."""
from __future__ import annotations

import json
import sys

import click

from . import main
from .ar_sample import AR_SAMPLE_PARAMS, ar_sample_options, run_ar_sample
from .options import config_from_kwargs, dataclass_options, field_names


def decode_options(f):
    """The baseline sampler's options (every field of GenerationConfig), shared by every command that decodes."""
    from ..sampling.config import GenerationConfig

    for o in reversed(dataclass_options(GenerationConfig)):
        f = o(f)
    return f


def speculative_options(f):
    """Spiffy's options (every field of SpeculativeConfig)."""
    from ..speculative.config import SpeculativeConfig

    for o in reversed(dataclass_options(SpeculativeConfig)):
        f = o(f)
    return f


def config_from(kw: dict):
    from ..sampling.config import GenerationConfig

    return config_from_kwargs(GenerationConfig, kw)


def fail(msg: str):
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def given_options(ctx: click.Context, names) -> list:
    """The flags of the parameters ``names`` that were given on the command line."""
    from click.core import ParameterSource

    flags = {p.name: p.opts[0] for p in ctx.command.params}
    return [flags[n] for n in names if n in flags and ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]


def reject_given(ctx: click.Context, names, why: str):
    """Fail when any of the parameters ``names`` was given on the command line (they do not apply)."""
    given = given_options(ctx, names)
    if given:
        fail(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply {why}")


def _spiffy_fields() -> tuple:
    from ..speculative.config import SpeculativeConfig

    return field_names(SpeculativeConfig)


def _dllm_only() -> tuple:
    from ..sampling.config import GenerationConfig

    shared = ("gen_length", "temperature", "seed")   # AR mode uses these too
    return tuple(n for n in field_names(GenerationConfig) if n not in shared) + SPIFFY_FIELDS + (
        "use_spiffy", "compile_mode")


SPIFFY_FIELDS = _spiffy_fields()
DLLM_ONLY = _dllm_only()
# the default dLLM of `spiffy sample`: its answers read better than the 2.5M reference's (models/spiffy-smollm2-dlm
# card shows both); it needs the SmolLM2 base in the cache
DEFAULT_MODEL = "spiffy-smollm2-dlm"


@main.command()
@click.option("--model", "model", default=None,
              help="Checkpoint directory, hub id, a bundled model (spiffy-smollm2-dlm, spiffy-dllm-ref) or "
                   "tiny-llada/tiny-dream [default: spiffy-smollm2-dlm, SmolLM2-135M-Instruct adapted to diffusion, "
                   "whose base `spiffy models fetch smollm2-135m-instruct` prepares; with --target: the drafter].")
@click.option("--prompt", required=True, help="Prompt text.")
@decode_options
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 …")
@click.option("--dtype", default="auto", show_default=True, help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32, fp64.")
@click.option("--raw", is_flag=True, help="Do not apply the chat template.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the text.")
@click.option("--spiffy", "use_spiffy", is_flag=True, help="Decode with Spiffy (same output, fewer model calls).")
@speculative_options
@click.option("--compile", "compile_mode", type=click.Choice(["off", "on", "auto"]), default="auto", show_default=True,
              help="torch.compile the model's forward (fullgraph, one graph per shape; CUDA graphs on a GPU). auto: on "
                   "for CUDA when every call has a static shape (--spiffy --static, or --static-drafts), else off.")
@ar_sample_options
def sample(model, prompt, device, dtype, raw, as_json, use_spiffy, compile_mode, **kw):
    """Generate a continuation of PROMPT with the baseline sampler (or Spiffy with --spiffy; or, with
    --target, let the dLLM draft for an autoregressive target whose output is unchanged)."""
    ar = {k: kw.pop(k) for k in AR_SAMPLE_PARAMS}
    spiffy_kw = {k: kw.pop(k) for k in SPIFFY_FIELDS}
    ctx = click.get_current_context()
    if ar["target"] is not None:
        reject_given(ctx, DLLM_ONLY, "to AR-verifier mode (--target): they are dLLM sampler and Spiffy options")
        return run_ar_sample(model=model, prompt=prompt, device=device, dtype=dtype, raw=raw, as_json=as_json,
                             **ar, **kw)
    reject_given(ctx, [k for k in AR_SAMPLE_PARAMS if k != "target"], "without --target (AR-verifier mode)")
    from ..errors import ConfigError, SpiffyError
    from ..generation import generate
    from ..backends import load_backend

    try:
        cfg = config_from(kw)
        spec = None
        given = given_options(ctx, SPIFFY_FIELDS)
        if use_spiffy:
            from ..speculative.config import SpeculativeConfig

            if {"--budget", "--graph"} <= set(given):
                raise ConfigError("give --budget or --graph, not both")
            spec = SpeculativeConfig(**spiffy_kw).validate()
        elif given:
            raise ConfigError(f"Spiffy's options need --spiffy (given: {', '.join(given)})")
        try:
            backend = load_backend(model or DEFAULT_MODEL, device=device, dtype=dtype)
        except SpiffyError as e:
            if model is None:   # the default needs its base: say how to get it, or how to do without
                raise type(e)(f"{e} (the default model {DEFAULT_MODEL} adapts that base; or pass --model "
                              "spiffy-dllm-ref, the bundled 2.5M reference dLLM, nothing to download)") from None
            raise
        if compile_mode == "on" or (compile_mode == "auto" and backend.device.type == "cuda"
                                    and (cfg.static_drafts or (spec is not None and spec.static))):
            backend.compile()
        res = generate(backend, prompt, cfg, chat=not raw, speculative=spec)
    except SpiffyError as e:
        fail(str(e))
    if as_json:
        out = {"model": backend.name, "prompt_ids": res.prompt_ids[0], "token_ids": res.token_ids[0],
               "text": res.text[0], "nfe": res.nfe, "wall_s": round(res.wall_s, 4),
               "tokens_processed": res.tokens_processed, "block_steps": res.block_steps,
               "tokens_per_s": round(len(res.token_ids[0]) / res.wall_s, 3), "config": res.config}
        if res.stats is not None:
            out["stats"] = res.stats.to_dict()
        click.echo(json.dumps(out))
    else:
        click.echo(res.text[0])
