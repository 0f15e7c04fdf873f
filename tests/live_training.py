"""A training run as a background process: `python live_training.py RUN OUT [--delay S] [--trackio PROJECT]`.

Trains run RUN of training_runs (a real PyTorch loop) and writes each record the moment it is logged: a JSON
line to OUT (flushed), or with --trackio a trackio.log call into the store folder OUT. `--delay` slows each
step down so that a watcher sees the run while it trains.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import training_runs as tr  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run", choices=sorted(tr.RUNS))
    p.add_argument("out")
    p.add_argument("--delay", type=float, default=0.02)
    p.add_argument("--trackio", metavar="PROJECT")
    args = p.parse_args()
    if args.trackio:
        os.environ["TRACKIO_DIR"] = args.out
        import trackio

        trackio.init(project=args.trackio, name=args.run)

        def sink(record: dict) -> None:
            rec = dict(record)
            trackio.log(rec, step=int(rec.pop("step")))
            time.sleep(args.delay)
    else:
        out = open(args.out, "a", buffering=1)

        def sink(record: dict) -> None:
            out.write(json.dumps(record) + "\n")
            out.flush()
            time.sleep(args.delay)

    tr.RECORD_SINK.append(sink)
    tr.run(args.run)
    if args.trackio:
        trackio.finish()


if __name__ == "__main__":
    main()
