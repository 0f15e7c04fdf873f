"""ml-debug-mcp: debug machine-learning training runs through the Model Context Protocol."""

__version__ = "0.1.0"
