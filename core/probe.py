"""Deprecated import path of `TrainingProbe`, kept because training loops in the wild import it here.

Use `from ml_debug_mcp import TrainingProbe` (or `ml_debug_mcp.core.model.probe`). This module will be
removed in a future major version.
"""

import warnings

from ml_debug_mcp.core.model.probe import TrainingProbe

warnings.warn("ml_debug_mcp.core.probe is deprecated: import TrainingProbe from ml_debug_mcp "
              "(or ml_debug_mcp.core.model.probe)", DeprecationWarning, stacklevel=2)

__all__ = ["TrainingProbe"]
