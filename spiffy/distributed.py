"""Data parallelism over prompts with ``torch.distributed`` (launched by ``torchrun``).

Each rank loads the model on its own device, decodes a deterministic share of the prompts and sends
what it computed to rank 0, which alone aggregates, selects and writes artifacts. The prompts are cut
into fixed shards of ``shard_size`` (independent of the number of ranks) dealt round-robin. With a
:class:`ShardFiles` folder every finished shard is saved atomically, so ``--resume`` skips the shards
an interrupted run finished, whatever the number of ranks then and now. Results are returned in prompt
order, so an N-rank run hands rank 0 exactly what one process computes.

Liveness does not rest on collective timeouts (a rank busy with a long shard looks like a hung one
there): every rank bumps a counter in the rendezvous store each ``BEAT_S`` seconds; rank 0 watches
them all, the others watch rank 0. A rank that stops beating for ``timeout_s`` (killed, out of
memory) or reports an error stops the job with a message naming it. Data moves with
``gather_object`` only after every rank has finished its share, so the gather itself is short.
Without ``WORLD_SIZE`` > 1 in the environment everything runs in-process (:class:`World` of size 1).
"""
from __future__ import annotations

import _thread
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import SpiffyError

BEAT_S = 0.5
DEFAULT_TIMEOUT_S = 120.0


class DistributedError(SpiffyError):
    """A rank failed, vanished or was launched without the environment torchrun provides."""


@dataclass
class World:
    """This process's place in the job. ``World()`` is the single-process job."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    store: object = None
    prefix: str = "spiffy"
    fault: Optional[str] = None
    _calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _bar: object = None
    _bar_key: Optional[str] = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, requested: str) -> str:
        """The device this rank loads the model on: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
        if self.distributed and str(requested).startswith("cuda"):
            if ":" in str(requested):
                raise DistributedError(f"--device {requested} names one GPU; under torchrun give --device cuda and "
                                       "each rank takes cuda:LOCAL_RANK")
            return f"cuda:{self.local_rank}"
        return requested

    # ---- the rendezvous store -------------------------------------------------------------------
    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def _add(self, name: str, n: int = 0) -> int:
        with self._lock:
            return int(self.store.add(self._key(name), n))

    def next_tag(self) -> str:
        self._calls += 1
        return f"map{self._calls}"

    def progressed(self, tag: str, n: int):
        if self.distributed:
            self._add(f"{tag}/progress", n)

    def report_failure(self, what: str):
        """Tell every rank that this one failed (they stop with this message)."""
        if not self.distributed or self.fault:
            return
        self.fault = f"rank {self.rank} failed: {what}"
        self._stop.set()   # this rank stops watching: it is on its way out
        try:
            with self._lock:
                self.store.set(self._key("abort"), f"rank {self.rank} failed: {what}")
            self._add("aborted", 1)
        except Exception:   # the store is gone too: the launcher is tearing the job down anyway
            pass

    def _check(self, beats: dict) -> tuple:
        """(message, whether it is news that only this rank has) or (None, False)."""
        if self._add("aborted") > 0:
            with self._lock:
                return self.store.get(self._key("abort")).decode(), False
        now = time.monotonic()
        peers = range(self.size) if self.main else [0]
        for r in peers:
            if r == self.rank or self._add(f"left/{r}") > 0:
                continue
            b = self._add(f"beat/{r}")
            last = beats.get(r)
            if last is None or b != last[0]:
                beats[r] = (b, now)
            elif now - last[1] > self.timeout_s:
                return (f"rank {r} stopped responding ({now - last[1]:.0f} s without a heartbeat: killed, out of "
                        "memory or hung); the job stops and no artifact is written"), True
        return None, False

    def _watch(self):
        beats: dict = {}
        while not self._stop.wait(BEAT_S):
            try:
                self._add(f"beat/{self.rank}", 1)
                msg, news = self._check(beats)
                if self._bar is not None and self._bar_key is not None:
                    n = self._add(self._bar_key)
                    self._bar.update(n - self._bar.n)
            except Exception as e:   # the store (rank 0 or the launcher) is gone
                msg, news = f"lost the rendezvous store ({type(e).__name__}): rank 0 or the launcher has stopped", False
            if self._stop.is_set():
                return
            if msg:
                if news:
                    try:   # pass the news on to the ranks that only watch rank 0
                        with self._lock:
                            self.store.set(self._key("abort"), msg)
                        self._add("aborted", 1)
                    except Exception:
                        pass
                self.fault = msg
                _thread.interrupt_main()
                return

    def raise_fault(self):
        if self.fault:
            raise DistributedError(self.fault)

    def arrive(self, tag: str):
        """Wait until every rank has finished ``tag`` (raising as soon as one fails or vanishes)."""
        self._add(f"{tag}/done", 1)
        while self._add(f"{tag}/done") < self.size:
            self.raise_fault()
            time.sleep(0.05)
        self.raise_fault()

    def close(self):
        """Leave the job: the others stop watching this rank (rank 0 may still be writing artifacts)."""
        if self.distributed and not self._stop.is_set():
            try:
                self._add(f"left/{self.rank}", 1)
            except Exception:
                pass
        self._stop.set()
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)   # unwinds, so temporary files are removed on the way out


def init_world(device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """Join the job torchrun started (``WORLD_SIZE`` > 1 in the environment), else a single-process
    :class:`World`. Backend: ``nccl`` for CUDA, ``gloo`` otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World(timeout_s=timeout_s)
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise DistributedError(f"WORLD_SIZE={size} but {', '.join(missing)} is not set: launch with "
                               "torchrun --nproc-per-node N -m spiffy ...")
    if timeout_s <= 0:
        raise DistributedError(f"--dist-timeout must be positive, got {timeout_s:g}")
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
    join = timedelta(seconds=max(60.0, timeout_s))
    try:
        store, rank, size = next(dist.rendezvous("env://", rank, size, timeout=join))
        # collectives run only once every rank has finished its share (World.arrive): a long timeout
        # here covers a slow gather, not slow work
        dist.init_process_group("nccl" if cuda else "gloo", store=dist.PrefixStore("pg", store), rank=rank,
                                world_size=size, timeout=timedelta(seconds=max(600.0, 10 * timeout_s)))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"rank {rank} could not join the job: {e}") from None
    prefix = f"spiffy/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    world = World(rank, size, local, timeout_s, store, prefix)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    threading.Thread(target=world._watch, name="spiffy-heartbeat", daemon=True).start()
    return world


# ---- saved shards for --resume ---------------------------------------------------------------------
class ShardFiles:
    """Finished shards of one job, ``<folder>/shard-NNNNN.pt``, each written atomically by the one rank
    that computed it. ``key`` names what was computed (model, settings, prompts); a file with another
    key, another prompt range or unreadable bytes is ignored and computed again."""

    def __init__(self, folder, key: str):
        self.folder = Path(folder)
        self.key = key

    @classmethod
    def for_job(cls, kind: str, description: dict, root=None) -> "ShardFiles":
        from .named_models import cache_root

        key = hashlib.blake2b(json.dumps(description, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()
        files = cls(Path(root or cache_root() / "work") / f"{kind}-{key[:16]}", key)
        files.remove_stale()
        return files

    def _tmp_prefix(self) -> str:
        return f"tmp-{socket.gethostname()}-"

    def remove_stale(self):
        """Temporary files of writers on this host that no longer run (a rank killed mid-save)."""
        from .atomic import _alive

        for p in self.folder.glob(f".shard-*.pt.{self._tmp_prefix()}*"):
            try:
                pid = int(p.name.rsplit("-", 1)[1])
            except ValueError:
                continue
            if not _alive(pid):
                p.unlink(missing_ok=True)

    def path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.pt"

    def load(self, shard: int, span: tuple) -> Optional[list]:
        import torch

        try:
            d = torch.load(self.path(shard), map_location="cpu", weights_only=False)   # our own cache folder
        except FileNotFoundError:
            return None
        except Exception as e:   # a torn or foreign file: compute the shard again
            print(f"spiffy: ignoring unreadable {self.path(shard)} ({type(e).__name__})", file=sys.stderr)
            return None
        if not isinstance(d, dict) or d.get("key") != self.key or tuple(d.get("span", ())) != tuple(span):
            return None
        return d["results"]

    def save(self, shard: int, span: tuple, results: list):
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.path(shard)
        tmp = self.folder / f".{final.name}.{self._tmp_prefix()}{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                torch.save({"key": self.key, "span": list(span), "results": results}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def done(self) -> list:
        return sorted(int(p.stem.split("-")[1]) for p in self.folder.glob("shard-*.pt"))

    def clear(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def shard_spans(n: int, shard_size: int) -> list:
    if shard_size < 1:
        raise DistributedError(f"--shard-size must be at least 1, got {shard_size}")
    return [(a, min(a + shard_size, n)) for a in range(0, n, shard_size)]


def map_prompts(world: World, items: Sequence, fn: Callable, *, shard_size: int = 4,
                shards: Optional[ShardFiles] = None, resume: bool = False, desc: Optional[str] = None) -> Optional[list]:
    """``[fn(x) for x in items]`` spread over the ranks. Rank 0 gets the list in item order; the other
    ranks get None. ``fn``'s results must be picklable CPU objects. ``shards``: save each finished shard
    (and with ``resume`` reuse saved ones). ``desc``: a progress bar on rank 0 counting every rank's
    items."""
    spans = shard_spans(len(items), shard_size)
    mine = range(world.rank, len(spans), world.size)
    tag = world.next_tag()
    bar = None
    if desc and world.main:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=desc, unit="prompt")
        if world.distributed:
            world._bar, world._bar_key = bar, f"{tag}/progress"

    def step(n):
        if world.distributed:
            world.progressed(tag, n)
        elif bar is not None:
            bar.update(n)

    out = {}
    reused = 0
    t0 = time.perf_counter()
    try:
        for s in mine:
            a, b = spans[s]
            got = shards.load(s, (a, b)) if (shards is not None and resume) else None
            reused += got is not None
            if got is None:
                got = []
                for j in range(a, b):
                    got.append(fn(items[j]))
                    step(1)
                if shards is not None:
                    shards.save(s, (a, b), got)
            else:
                step(b - a)
            out[s] = got
        if reused:
            who = f"rank {world.rank}: " if world.distributed else ""
            print(f"spiffy: {who}reused {reused} of {len(mine)} shards saved in {shards.folder}", file=sys.stderr)
        if world.distributed:
            world.arrive(tag)
    except KeyboardInterrupt:
        if world.fault:
            raise DistributedError(world.fault) from None
        raise
    except DistributedError:
        raise
    except Exception as e:
        world.report_failure(f"{type(e).__name__}: {e}")
        raise
    finally:
        if bar is not None:
            if world.distributed and world.fault is None:
                bar.update(world._add(f"{tag}/progress") - bar.n)
            world._bar = world._bar_key = None
            bar.close()
    if world.distributed:
        import pickle

        import torch.distributed as dist

        busy = time.perf_counter() - t0
        nbytes = len(pickle.dumps(out)) if desc else 0
        t1 = time.perf_counter()
        gathered = [None] * world.size if world.main else None
        dist.gather_object((out, busy, nbytes), gathered, dst=0)
        if not world.main:
            return None
        for d, _, _ in gathered:
            out.update(d)
        if desc:
            print(f"spiffy: {desc}: {world.size} ranks busy " + " / ".join(f"{b:.1f}" for _, b, _ in gathered)
                  + f" s; gather {time.perf_counter() - t1:.2f} s for {sum(n for _, _, n in gathered) / 1e6:.1f} MB",
                  file=sys.stderr)
    return [x for s in range(len(spans)) for x in out[s]]


@dataclass
class Sharding:
    """How a command spreads its prompts: the job's :class:`World`, the shard size, whether to reuse
    saved shards (``resume``) and where they are saved (``work_root``, default
    ``$SPIFFY_CACHE/work``; ``None`` with ``save=False``: nothing is saved)."""
    world: World = field(default_factory=World)
    shard_size: int = 4
    resume: bool = False
    save: bool = True
    work_root: Optional[Path] = None
    used: list = field(default_factory=list)   # the ShardFiles of this command's maps (cleared on success)

    def map(self, items: Sequence, fn: Callable, kind: str, job: dict, desc: Optional[str] = None) -> Optional[list]:
        """:func:`map_prompts` with this command's settings; ``kind`` and ``job`` (a JSON-able
        description of the model, settings and prompts) name the saved shards."""
        shards = None
        if self.save:
            shards = ShardFiles.for_job(kind, {**job, "shard_size": self.shard_size}, self.work_root)
            self.used.append(shards)
        return map_prompts(self.world, items, fn, shard_size=self.shard_size, shards=shards, resume=self.resume,
                           desc=desc)

    def finished(self):
        """The command's artifacts are written: its saved shards are no longer needed."""
        if self.world.main:
            for s in self.used:
                s.clear()
