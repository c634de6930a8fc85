"""spiffy.memory: pinning glibc's mmap threshold (keeps long decode loops from growing the heap)."""
import subprocess
import sys

import pytest


def test_pin_mmap_threshold_applies_on_glibc_and_is_idempotent():
    code = ("from spiffy.memory import pin_mmap_threshold as p; a = p(); b = p(); "
            "import platform; print(a, b, platform.libc_ver()[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if out[2] != "glibc":
        pytest.skip("not a glibc platform: the call is a no-op there")
    assert out[:2] == ["True", "True"]


def test_cli_pins_the_threshold(monkeypatch):
    import spiffy.memory as m
    from click.testing import CliRunner
    from spiffy.cli import main

    calls = []
    monkeypatch.setattr(m, "pin_mmap_threshold", lambda *a, **k: calls.append(1) or True)
    res = CliRunner().invoke(main, ["sample", "--help"])
    assert res.exit_code == 0 and calls == [1]
