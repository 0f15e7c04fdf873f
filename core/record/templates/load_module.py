"""Factory loader for a `package.module:factory` entrypoint.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from ml_debug_mcp.core.record.templates.resolve_attribute import resolve_attribute

FACTORY_MODULE = 'model'
FACTORY_NAME = 'make_model'
IMPORT_BASE = '.'
PROJECT_ROOT = Path(__file__).resolve().parent

# ---------------------------------------- body ----------------------------------------

def load_factory() -> Callable[[], Any]:
    """Import the factory's module with IMPORT_BASE (relative to PROJECT_ROOT) first on sys.path."""
    sys.path.insert(0, str((PROJECT_ROOT / IMPORT_BASE).resolve()))
    return resolve_attribute(importlib.import_module(FACTORY_MODULE), FACTORY_NAME)
