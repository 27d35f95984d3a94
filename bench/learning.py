"""How each learner keeps the model inventive: the default `nngpt run`, 6 cycles, two seeds, per mode.

    python bench/learning.py [--cycles 6] [--seeds 2] [--modes before,sft,grpo,sft+grpo] [--out DIR] [--set K=V]

Modes (everything else is the default config; one local Ray and the embedded model serve all runs):

- none:     no learning (nothing reaches the acceptance threshold): the base model throughout, the
            control for how novelty falls on its own as the store fills with known networks;
- before:   the learner as it was: SFT on the most recent accepted results, continued from the last
            adapter, no replay, no gate;
- sft:      SFT on the best distinct accepted results weighted by rank, half the examples replayed from
            the bootstrap set, a fresh adapter per update, the activation gate;
- grpo:     GRPO on groups rewarded by the pipeline (from the adapter that sampled them), the gate;
- sft+grpo: SFT then GRPO in each update, the gate (the default);
- sft+grpo-t-bandit: the same, each batch's temperature chosen among 0.4, 0.6 and 0.8 by Thompson
            sampling on novel yield (the other modes sample at llm.temperature, 0.6).

All modes count the seed networks as known to dedup (a seed written out again is not new).

Per mode and cycle (mean over the seeds): valid %, novel yield (unique / generated), distinct seed
families among the unique, mean first-epoch validation accuracy of the unique. Also the adapters the gate
let through. Prints one table per mode and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from nngpt_ray.config import load_config
from nngpt_ray.report import status
from nngpt_ray.rundir import RunDir
from nngpt_ray.store import Store

MODES = {
    "none": ["learner.accept_threshold=1.0"],  # nothing is accepted, so no update ever starts: the base model
    "before": ["learner.kind=sft", "learner.selection=recent", "learner.replay_ratio=0", "learner.continue_adapter=true",
               "learner.gate_prompts=0"],
    "sft": ["learner.kind=sft"],
    "grpo": ["learner.kind=grpo"],
    "sft+grpo": ["learner.kind=sft+grpo"],
    "sft+grpo-t-bandit": ["learner.kind=sft+grpo", "loop.temperatures=[0.4,0.6,0.8]"],
}


def run_mode(mode: str, seed: int, cycles: int, out: Path, extra: list[str]) -> dict:
    from nngpt_ray.actors.driver import execute

    cfg = load_config(None, [*MODES[mode], *extra, f"run.seed={seed}", f"loop.cycles={cycles}", f"run.out_dir={out}",
                             f"run.name={mode}-s{seed}", "run.final_test=0"])
    run = RunDir.new(cfg.run.out_dir, cfg.run.name)
    if not (run.root / "summary.json").exists():
        run.config.write_text(cfg.to_yaml())
        execute(cfg, run)
    with Store(run.store, readonly=True) as store:
        summary = status(store)
        adapters = [(a["version"], a["status"]) for a in store.adapters()]
    return {"cycles": summary["cycles"], "adapters": adapters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", default=None)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="nngpt-learning-"))
    modes = args.modes.split(",")
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for seed in range(args.seeds):  # seed by seed, so a busy machine slows every mode alike
        for mode in modes:
            results[mode].append(run_mode(mode, seed, args.cycles, out, args.set))
    summary = {}
    for mode in modes:
        rows = []
        for cycle in range(args.cycles):
            per_seed = [r["cycles"][cycle] for r in results[mode] if len(r["cycles"]) > cycle]
            rows.append({
                "cycle": cycle,
                "valid_pct": _mean(100 * c["valid"] / c["generated"] for c in per_seed if c["generated"]),
                "novel_yield_pct": _mean(100 * c["novel_yield"] for c in per_seed if c.get("novel_yield") is not None),
                "families": _mean(c["families"] for c in per_seed),
                "first_epoch_pct": _mean(100 * c["first_epoch_accuracy"] for c in per_seed
                                         if c.get("first_epoch_accuracy") is not None),
                "generated": _mean(c["generated"] for c in per_seed),
            })
        summary[mode] = {"cycles": rows, "adapters": [r["adapters"] for r in results[mode]]}
        print(f"\n{mode} ({args.seeds} seeds, mean per cycle)")
        print(f"{'cycle':>5} {'generated':>9} {'valid%':>7} {'novel%':>7} {'families':>8} {'1st-ep%':>8}")
        for r in rows:
            print(f"{r['cycle']:>5} {_f(r['generated'], 0):>9} {_f(r['valid_pct'])} {_f(r['novel_yield_pct'])} "
                  f"{_f(r['families'], 1):>8} {_f(r['first_epoch_pct']):>8}")
        print("adapters (version, gate):", summary[mode]["adapters"])
    print(json.dumps({"out": str(out), "modes": summary}))


def _mean(values) -> float | None:
    values = list(values)
    return round(statistics.fmean(values), 2) if values else None


def _f(value: float | None, digits: int = 0) -> str:
    return "      -" if value is None else f"{value:7.{digits}f}"


if __name__ == "__main__":
    main()
