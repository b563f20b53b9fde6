"""Lazy submodule attributes for packages (PEP 562): a submodule is imported on first access.

`attach(package, submodules, kind="submodules") -> (__getattr__, __dir__)`: assign both in the
package's `__init__`; `package.<name>` then imports `package.<name>` when `name` is one of
`submodules`, and any other missing name raises an `AttributeError` listing them. So
`import redundax` (and `import redundax.train`) stays light: no JAX, Flax or matplotlib until used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from types import ModuleType


def attach(
    package: str, submodules: Sequence[str], kind: str = "submodules"
) -> tuple[Callable[[str], ModuleType], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package` (module docstring)."""
    names = tuple(submodules)

    def __getattr__(name: str) -> ModuleType:
        if name in names:
            module = importlib.import_module(f"{package}.{name}")
            setattr(sys.modules[package], name, module)
            return module
        raise AttributeError(
            f"module {package!r} has no attribute {name!r}; public {kind}: {', '.join(names)}"
        )

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
