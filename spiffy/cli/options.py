"""Click options generated from the config dataclasses: one source of names, types, defaults and help.

A field ``tokens_per_step: Optional[int] = field(default=None, metadata={"help": ...})`` becomes
``--tokens-per-step INTEGER``; ``metadata["choices"]`` makes a choice, a bool a ``--x/--no-x`` switch;
``metadata["type"]`` names the command line's type of a field that also takes objects (a graph, a pruner).
"""
from __future__ import annotations

import dataclasses
import sys
import typing

import click

_TYPES = {int: int, float: float, str: str}


def _base_type(tp):
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def dataclass_options(cls, exclude=()) -> list:
    """click options for the fields of ``cls`` (in field order), except ``exclude``."""
    where = vars(sys.modules[cls.__module__])
    opts = []
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        meta = dict(f.metadata)
        tp = meta.get("type") or _base_type(eval(f.type, where) if isinstance(f.type, str) else f.type)
        if tp is bool:
            opts.append(click.option(f"{flag}/--no-{flag[2:]}", f.name, default=f.default, show_default=True,
                                     help=meta.get("help")))
            continue
        if tp not in _TYPES:
            raise TypeError(f"{cls.__name__}.{f.name}: no click type for {f.type}")
        kind = click.Choice(list(meta["choices"])) if "choices" in meta else _TYPES[tp]
        opts.append(click.option(flag, f.name, type=kind, default=f.default, show_default=f.default is not None,
                                 help=meta.get("help")))
    return opts


def field_names(cls) -> tuple:
    return tuple(f.name for f in dataclasses.fields(cls))


def config_from_kwargs(cls, kw: dict):
    """Build ``cls`` from the command's keyword arguments, removing the fields it takes from ``kw``."""
    return cls(**{k: kw.pop(k) for k in field_names(cls) if k in kw})
