"""Command line: serve MCP (default), or run one analysis for a human (`tail`, `metrics`, `classify`, `gpu`).

The human commands call the same core functions and the same summary wording as the tools, so a
person at a shell sees what an agent sees.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ml_debug_mcp.server.config import ENV_PREFIX, ConfigError, build_parser, config_from_args

HUMAN_COMMANDS = ("tail", "metrics", "classify", "gpu", "eval")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn and the SDK log every request at INFO; keep stderr readable.
    for noisy in ("mcp", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def main(argv: list[str]) -> int:
    if argv and argv[0] in HUMAN_COMMANDS:
        return _human(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"ml-debug-mcp: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_level)
    from ml_debug_mcp.core.model.sandbox import harden_server
    from ml_debug_mcp.server.app import create_server

    # The token is in config now; user code must not find it in our environment or our /proc/<pid>/environ.
    os.environ.pop(ENV_PREFIX + "TOKEN", None)
    harden_server()

    mcp = create_server(config)
    try:
        if config.transport == "http":
            from ml_debug_mcp.server.http import serve_http

            serve_http(mcp, config)
        else:
            mcp.run("stdio")
    except ConfigError as exc:
        print(f"ml-debug-mcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _human(command: str, argv: list[str]) -> int:
    """One analysis, printed: the tool's summary, or its structured result with --json."""
    from ml_debug_mcp.server import human

    p = argparse.ArgumentParser(prog=f"ml-debug-mcp {command}")
    human.add_arguments(command, p)
    p.add_argument("--json", action="store_true", help="print the structured result as JSON")
    args = p.parse_args(argv)
    _setup_logging("WARNING")
    try:
        model, summary = human.run(command, args)
    except (ValueError, OSError) as exc:
        print(f"ml-debug-mcp {command}: {exc}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(model.model_dump(mode="json"), indent=2) if args.json else summary)
        sys.stdout.flush()
    except BrokenPipeError:  # `ml-debug-mcp tail x.log | head` closed the pipe early: not an error
        sys.stdout = open(os.devnull, "w")
    return 0
