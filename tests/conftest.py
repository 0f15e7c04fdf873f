import sys
from pathlib import Path

import pytest

# Test helpers (mcp_harness, fake_nvml, training_runs, ...) live next to the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
