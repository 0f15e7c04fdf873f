"""Factory loader when there is no entrypoint: the stand-in at the end of the file.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any



def tiny_model_factory() -> Any:
    raise NotImplementedError  # the stand-in model defines it

# ---------------------------------------- body ----------------------------------------

def load_factory() -> Callable[[], Any]:
    """TODO: return your factory instead of the tiny stand-in at the end of this file."""
    return tiny_model_factory
