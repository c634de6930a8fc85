"""Options and set-up shared by the commands that can run data-parallel under ``torchrun``
(`spiffy calibrate`, `spiffy bench`): see :mod:`spiffy.distributed`."""
from __future__ import annotations

from contextlib import contextmanager

import click

from .sample import fail

PARALLEL_PARAMS = ("resume", "shard_size", "dist_timeout")


def parallel_options(f):
    for o in reversed([
        click.option("--resume", is_flag=True,
                     help="Reuse the prompts' shards that an interrupted run of the same job finished (saved under "
                          "$SPIFFY_CACHE/work) instead of decoding them again."),
        click.option("--shard-size", default=4, show_default=True, type=click.IntRange(min=1),
                     help="Prompts per shard: the unit dealt to ranks and saved for --resume."),
        click.option("--dist-timeout", default=120.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
                     help="Under torchrun: seconds without a heartbeat after which a rank counts as dead and the "
                          "job stops."),
    ]):
        f = o(f)
    return f


@contextmanager
def joined(device: str, resume: bool, shard_size: int, dist_timeout: float):
    """Join the torchrun job if there is one; yields a :class:`spiffy.distributed.Sharding`. A
    :class:`~spiffy.errors.SpiffyError` on any rank ends the command with one line naming the rank."""
    from ..distributed import Sharding, init_world
    from ..errors import SpiffyError

    try:
        world = init_world(device, dist_timeout)
    except SpiffyError as e:
        fail(str(e))
    try:
        yield Sharding(world, shard_size, resume)
    except SpiffyError as e:
        world.report_failure(str(e))
        fail(f"rank {world.rank}: {e}" if world.distributed and not str(e).startswith("rank ") else str(e))
    finally:
        world.close()
