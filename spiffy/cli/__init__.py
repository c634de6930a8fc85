"""The ``spiffy`` command line. Each subcommand lives in its own module and only calls the library."""
import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spiffy")
def main():
    """Spiffy: make diffusion LMs (LLaDA, Dream, the bundled reference model) generate faster without
    changing what they generate."""


from . import sample  # noqa: E402,F401  (registers `spiffy sample`)
from . import train  # noqa: E402,F401  (registers `spiffy train`)
from . import bench  # noqa: E402,F401  (registers `spiffy bench`)
from . import calibrate  # noqa: E402,F401  (registers `spiffy calibrate`)
from . import models  # noqa: E402,F401  (registers `spiffy models`)
