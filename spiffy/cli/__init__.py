"""The ``spiffy`` command line. Each subcommand lives in its own module and only calls the library."""
import sys

import click

from .. import __version__


class SpiffyGroup(click.Group):
    """Usage errors end in one line on stderr (``error: …``) instead of click's usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            click.echo(f"error: {e.format_message()}{where}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=SpiffyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spiffy")
def main():
    """Spiffy: make diffusion LMs (LLaDA, Dream, the bundled reference model) generate faster without
    changing what they generate."""


from . import sample  # noqa: E402,F401  (registers `spiffy sample`)
from . import train  # noqa: E402,F401  (registers `spiffy train`)
from . import bench  # noqa: E402,F401  (registers `spiffy bench`)
from . import calibrate  # noqa: E402,F401  (registers `spiffy calibrate`)
from . import models  # noqa: E402,F401  (registers `spiffy models`)
from . import serve  # noqa: E402,F401  (registers `spiffy serve`)
