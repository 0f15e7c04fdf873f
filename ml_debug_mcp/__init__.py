"""ml-debug-mcp: debug machine-learning training runs through the Model Context Protocol."""

__version__ = "0.1.0"
__all__ = ["TrainingProbe", "__version__"]


def __getattr__(name: str):
    """`from ml_debug_mcp import TrainingProbe`, imported on first use so the server never loads torch for it."""
    if name == "TrainingProbe":
        from ml_debug_mcp.core.model.probe import TrainingProbe

        return TrainingProbe
    raise AttributeError(f"module 'ml_debug_mcp' has no attribute {name!r}")
