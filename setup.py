"""Build hook: a wheel carries the bundled models/ and calibration/ inside the package
(spiffy/_bundled/), where spiffy.resources finds them once installed. Everything else is in pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLE = ("models", "calibration")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


class BuildWithBundle(build_py):
    def run(self):
        super().run()
        if self.editable_mode:   # an editable install reads the checkout's folders directly
            return
        root = Path(__file__).resolve().parent
        for name in BUNDLE:
            dst = Path(self.build_lib) / "spiffy" / "_bundled" / name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(root / name, dst, ignore=SKIP)


setup(cmdclass={"build_py": BuildWithBundle})
