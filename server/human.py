"""The human command line: one core analysis, worded by the same summary functions the tools use."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import BaseModel


def add_arguments(command: str, p: argparse.ArgumentParser) -> None:
    if command in ("tail", "metrics", "classify"):
        p.add_argument("path", help="log file or run directory")
        p.add_argument("--format", help="force a log format id instead of auto-detection")
    if command == "tail":
        p.add_argument("-n", "--lines", type=int, default=50)
        p.add_argument("--grep", help="only lines matching this regex")
        p.add_argument("--around", type=int, default=0, help="context lines around grep matches")
    if command == "metrics":
        p.add_argument("--names", nargs="*", help="metric names to show")
    if command == "classify":
        p.add_argument("--code", help="training script to scan for anti-patterns")
    if command == "gpu":
        p.add_argument("--samples", type=int, default=1)
        p.add_argument("--interval", type=float, default=0.5)
        p.add_argument("--pid", type=int)
    if command == "eval":
        p.add_argument("--cases", help="evaluation set folder (default: the repository's tests/eval)")
        p.add_argument("--split", choices=("test", "dev", "regression"), default="test",
                       help="the sealed real-world test split (default), its dev split, or the regression set")


def run(command: str, args: argparse.Namespace) -> tuple[BaseModel, str]:
    if command == "tail":
        from ml_debug_mcp.core.logs.tail import tail_file
        from ml_debug_mcp.tools.tail_log import summarize

        result = tail_file(_existing(args.path), lines=args.lines, grep=args.grep, around=args.around,
                           fmt=args.format)
        return result, summarize(result)
    if command == "metrics":
        from ml_debug_mcp.core.logs.metrics import parse_metrics
        from ml_debug_mcp.tools.read_metrics import read_metrics_model, summarize

        model = read_metrics_model(parse_metrics(_existing(args.path), args.format), args.names, None)
        return model, summarize(model)
    if command == "classify":
        from ml_debug_mcp.tools.classify_failure import diagnose, summarize

        diagnosis = diagnose(log_path=_existing(args.path), fmt=args.format,
                             code_path=_existing(args.code) if args.code else None)
        return diagnosis, summarize(diagnosis)
    if command == "gpu":
        from ml_debug_mcp.core.host.snapshot import host_status
        from ml_debug_mcp.tools.gpu_status import summarize

        status = host_status(samples=args.samples, interval=args.interval, pid=args.pid)
        return status, summarize(status)
    if command == "eval":
        from ml_debug_mcp.core.diagnosis.evaluate import evaluate_split, format_split_report

        report = evaluate_split(Path(args.cases) if args.cases else Path.cwd() / "tests" / "eval", args.split)
        return report, format_split_report(report)
    raise ValueError(f"unknown command {command!r}")


def _existing(raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return path.resolve()
