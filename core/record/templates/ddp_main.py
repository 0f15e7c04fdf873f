"""The __main__ block of the ddp_steps check: the child process that runs the DDP steps.

Template source for create_smoke_test (see __init__.py). Only the part below the body marker is
rendered; the lines above it let this file parse and lint on its own.
"""

from __future__ import annotations

import sys

from ml_debug_mcp.core.record.templates.check_ddp_steps import ddp_steps

DDP_FLAG = '--ddp-steps'

# ---------------------------------------- body ----------------------------------------

if __name__ == "__main__" and sys.argv[1:] == [DDP_FLAG]:
    ddp_steps()
