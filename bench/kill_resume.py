"""Kill -9 the driver of a default `nngpt run` at five moments, resuming after each; check exactly-once.

    python bench/kill_resume.py [--out DIR] [--set KEY=VALUE ...]

No fault injection: the driver is a real `nngpt run` process, watched from outside through its store and
killed with SIGKILL when each moment comes (start-up, a candidate in training, a learner update in
progress, just after a cycle boundary, the final test evaluation), then `nngpt run --resume` continues
it. After every kill and at the end: every recorded result unchanged, trained twice 0. Prints one line
per kill and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nngpt_ray.store import Store

EXE = str(Path(sys.executable).with_name("nngpt"))


def snapshot(path: Path) -> dict:
    store = Store(path, readonly=True)
    try:
        rows = store.table("candidates")
        return {
            "finished": {r["id"]: (r["status"], r["best_accuracy"], r["epochs_done"]) for r in rows
                         if r["stage"] == "finished"},
            "epochs": {r["id"]: [e.model_dump() for e in store.epochs(r["id"])] for r in rows if r["stage"] == "finished"},
            "open": sum(1 for a in store.table("attempts") if a["ended"] is None),
            "cycles": len(store.cycles()), "trained_twice": store.totals()["trained_twice"],
            "events": [e["message"] for e in store.events()], "generated": len(rows),
        }
    finally:
        store.close()


def moments(start: dict) -> list[tuple[str, callable]]:
    """(name, condition on a snapshot) in the order they come in a run."""
    return [
        ("start-up, store created, nothing generated", lambda s: True),
        ("a candidate in training", lambda s: s["open"] > 0 and len(s["finished"]) > len(start["finished"])),
        ("a learner update in progress", lambda s: _updating(s["events"])),
        ("just after a cycle boundary", lambda s: s["cycles"] > start["cycles"] + 1),
        ("the final test evaluation", lambda s: any(e.startswith("final evaluation") for e in s["events"])),
    ]


def _updating(events: list[str]) -> bool:
    started = [e.split()[1] for e in events if e.startswith("update v") and " started " in e]
    return bool(started) and not any(e.startswith(f"adapter {started[-1]} trained") or
                                     e.startswith(f"update {started[-1]} failed") for e in events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="nngpt-kill-"))
    run_dir, store = out / "killed", out / "killed" / "store.sqlite"
    env = {**os.environ, "COLUMNS": "120"}
    sets = [x for s in args.set for x in ("--set", s)]
    before = {"finished": {}, "epochs": {}, "cycles": 0}
    kills = []
    for i, (name, _) in enumerate(moments(before)):
        cmd = [EXE, "run", "--out", str(out), "--name", "killed", *sets] if i == 0 else [EXE, "run", "--resume", str(run_dir)]
        driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = snapshot(store) if store.exists() else before
        condition = moments(start)[i][1]
        while True:
            if driver.poll() is not None:
                raise SystemExit(f"the run ended before '{name}' came")
            if store.exists():
                try:
                    snap = snapshot(store)
                except Exception:  # the store is being created
                    snap = None
                if snap is not None and condition(snap):
                    break
            time.sleep(0.2)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        after = snapshot(store)
        unchanged = all(after["finished"].get(k) == v and after["epochs"].get(k) == start["epochs"][k]
                        for k, v in start["finished"].items())
        kills.append({"moment": name, "finished": len(after["finished"]), "open_attempts": after["open"],
                      "trained_twice": after["trained_twice"], "earlier_results_unchanged": unchanged})
        print(json.dumps(kills[-1]), flush=True)
        before = after
    final = subprocess.run([EXE, "run", "--resume", str(run_dir)], env=env, capture_output=True, text=True)
    end = snapshot(store)
    unchanged = all(end["finished"].get(k) == v for k, v in before["finished"].items())
    summary = {"kills": kills, "final_exit": final.returncode, "finished": len(end["finished"]),
               "trained_twice": end["trained_twice"], "earlier_results_unchanged": unchanged, "run": str(run_dir)}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
