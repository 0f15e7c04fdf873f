"""Factory loader for a `path/to/file.py:factory` entrypoint.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from ml_debug_mcp.core.record.templates.resolve_attribute import resolve_attribute

FACTORY_FILE = 'model.py'
FACTORY_NAME = 'make_model'
PROJECT_ROOT = Path(__file__).resolve().parent

# ---------------------------------------- body ----------------------------------------

def load_factory() -> Callable[[], Any]:
    """Load the factory's file by path (relative to PROJECT_ROOT), as `python file.py` would."""
    path = PROJECT_ROOT / FACTORY_FILE
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"_smoke_target_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return resolve_attribute(module, FACTORY_NAME)
