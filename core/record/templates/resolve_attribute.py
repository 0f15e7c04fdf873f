"""Dotted attribute lookup shared by the two entrypoint loaders.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

from typing import Any

# ---------------------------------------- body ----------------------------------------

def resolve_attribute(module: Any, dotted: str) -> Any:
    target = module
    for part in dotted.split("."):
        target = getattr(target, part)
    return target
