import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run so CI is repeatable; a counterexample found while exploring
# (HYPOTHESIS_PROFILE=explore draws fresh ones) is pinned with @example next to its test.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# Test helpers (mcp_harness, fake_nvml, training_runs, ...) live next to the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
