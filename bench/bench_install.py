"""The README's first command on a fresh venv: install time, download and installed size, time to tools/list.

    python bench/bench_install.py [--quick] [--no-cache]

Builds the wheel of this checkout, then for each target makes a fresh venv and times `pip install`:
the light install (`ml-debug-mcp`), and as the baseline the bare MCP SDK (`mcp`), which every MCP
server pulls anyway. Reports seconds, the wheels downloaded (`pip download`, MB) and the venv's
site-packages growth (`du`, MB: what the install added beyond the fresh venv's pip), plus the
ratio against the baseline. With pip's cache (the default) a re-run measures install, not network;
--no-cache measures a first download (slower, needs PyPI). Finally the installed server is started
over stdio and timed to a completed tools/list.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters
from summary import row  # noqa: E402  (bench/ is on sys.path when a script runs)

REPO = Path(__file__).resolve().parents[1]


def _mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def _site(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _install(target: str, work: Path, name: str, no_cache: bool) -> dict[str, float]:
    venv = work / name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    before = _mb(_site(venv))
    flags = ["--no-cache-dir"] if no_cache else []
    t0 = time.perf_counter()
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *flags, target], check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    dl = work / f"{name}-dl"
    subprocess.run([str(venv / "bin" / "pip"), "download", "-q", "-d", str(dl), target], check=True,
                   stderr=subprocess.DEVNULL)
    return {"seconds": seconds, "download_mb": _mb(dl), "added_mb": _mb(_site(venv)) - before,
            "site_packages_mb": _mb(_site(venv))}


async def _tools_list_seconds(exe: Path, root: str) -> float:
    t0 = time.perf_counter()
    params = StdioServerParameters(command=str(exe), args=["--root", root], env=dict(os.environ), cwd=root)
    async with Client(params) as client:
        tools = await client.list_tools()
    assert len(tools.tools) >= 9
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="accepted for bench/run.py; the run is already one pass")
    ap.add_argument("--no-cache", action="store_true", help="bypass pip's cache (a true first download)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(work / "dist"), str(REPO)], check=True, stderr=subprocess.DEVNULL)
        wheel = next((work / "dist").glob("ml_debug_mcp-*.whl"))
        ours = _install(str(wheel), work, "light", args.no_cache)
        base = _install("mcp>=2.3,<3", work, "mcp-only", args.no_cache)
        listed = anyio.run(_tools_list_seconds, work / "light" / "bin" / "ml-debug-mcp", tmp)
        torch = subprocess.run([str(work / "light" / "bin" / "python"), "-c", "import torch"],
                               capture_output=True).returncode == 0
    print(f"{'':16}{'pip install s':>14}{'download MB':>13}{'added MB':>10}{'site-pkgs MB':>14}")
    for label, r in (("ml-debug-mcp", ours), ("mcp (baseline)", base)):
        print(f"{label:16}{r['seconds']:14.1f}{r['download_mb']:13.1f}{r['added_mb']:10.1f}{r['site_packages_mb']:14.1f}")
    print(f"ratio vs bare mcp: time {ours['seconds'] / base['seconds']:.2f}x, download "
          f"{ours['download_mb'] / base['download_mb']:.2f}x, added {ours['added_mb'] / base['added_mb']:.2f}x")
    print(f"installed server start to tools/list: {listed:.2f} s; torch importable in the light venv: {torch}")
    row("light install download", ours["download_mb"], base["download_mb"], "MB", "< 150 MB", baseline_name="bare mcp")
    print(f"cache: {'off (first download)' if args.no_cache else 'pip cache (re-install)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
