"""spiffy.memory: pinning glibc's mmap threshold (keeps long decode loops from growing the heap)."""
import subprocess
import sys


def test_pin_mmap_threshold_applies_on_glibc_only_and_is_idempotent():
    code = ("from spiffy.memory import pin_mmap_threshold as p; a = p(); b = p(); "
            "import platform, sys; print(a, b, sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc')")
    a, b, glibc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout.split()
    want = "True" if glibc == "True" else "False"   # applied on glibc, a no-op (False) elsewhere
    assert (a, b) == (want, want)


def test_decoding_commands_pin_the_threshold_and_train_does_not(monkeypatch, tmp_path):
    import spiffy.memory as m
    from click.testing import CliRunner
    from spiffy.cli import main

    calls = []
    monkeypatch.setattr(m, "pin_mmap_threshold", lambda *a, **k: calls.append(1) or True)
    # bench and calibrate pin before they fail on the missing model; train never does
    for cmd in (["bench", "--model", str(tmp_path / "missing"), "--limit", "1"],
                ["calibrate", "--model", str(tmp_path / "missing"), "--dataset", "gsm8k", "--limit", "1"]):
        calls.clear()
        CliRunner().invoke(main, cmd)
        assert calls == [1], cmd
    calls.clear()
    recipe = tmp_path / "r.json"
    recipe.write_text("{}")
    CliRunner().invoke(main, ["train", "--recipe", str(recipe)])
    assert calls == []
