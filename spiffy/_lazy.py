"""Package attributes imported on first use (PEP 562): importing a package, and so ``spiffy --help``,
does not load torch or transformers until a name that needs them is touched."""
from importlib import import_module


def lazy_attributes(package: str, table: dict, namespace: dict):
    """Return ``(__getattr__, __dir__)`` for ``package``; ``table`` maps each public name to its submodule."""

    def __getattr__(name):
        if name in table:
            value = getattr(import_module(table[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
