"""Trainer busy fraction of the default `nngpt run`, with 1 and with 2 trainers, measured in one invocation.

    python bench/busy_fraction.py [--cycles 4] [--set KEY=VALUE ...]

Busy fraction = seconds trainers spent evaluating candidates / (loop wall time x trainers); the loop's
wall time runs from its first generation request to its last result, so LLM start-up gaps and the
learner's updates count against it. The target is above 0.8. Both runs share one local Ray and one
embedded model, so the two figures are comparable; the ratio between them is printed too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from nngpt_ray.config import load_config
from nngpt_ray.rundir import RunDir
from nngpt_ray.run import execute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", default=None, help="where the two runs go (default: a temp folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="nngpt-bench-"))
    rows = []
    for trainers in (1, 2):
        cfg = load_config(None, [*args.set, f"trainers.count={trainers}", f"loop.cycles={args.cycles}",
                                 f"run.out_dir={out}", f"run.name=busy-{trainers}"])
        run = RunDir.new(cfg.run.out_dir, cfg.run.name)
        run.config.write_text(cfg.to_yaml())
        summary = execute(cfg, run, show_progress=False)
        info = summary["run"]
        rows.append({"trainers": trainers, "busy_fraction": info["trainer_busy_fraction"],
                     "wall_s": info["wall_seconds"], "trained": summary["totals"]["trained"],
                     "trained_per_minute": round(60 * summary["totals"]["trained"] / info["wall_seconds"], 2)})
    print(json.dumps(rows, indent=2))
    one, two = rows
    print(f"busy fraction: 1 trainer {one['busy_fraction']:.3f}, 2 trainers {two['busy_fraction']:.3f}; "
          f"throughput 2 vs 1 trainers: {two['trained_per_minute'] / one['trained_per_minute']:.2f}x")


if __name__ == "__main__":
    main()
