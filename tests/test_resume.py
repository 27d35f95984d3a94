"""The driver killed with SIGKILL at every moment of a candidate's life, each time followed by
`nngpt run --resume`: no recorded result lost or changed, nothing trained twice, dedup state and cycle
numbering continuous, random streams continued rather than replayed. Real Ray, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import NNGPT, run_cli, tiny_loop_settings
from nngpt_ray.config import Config
from nngpt_ray.source import code_hash
from nngpt_ray.store import Store

# Where the driver dies, in order: each step resumes the run the previous one left. "kill" is the driver
# killing itself at a driver-side point; "kill-driver" is an actor killing the driver at its own point
# and waiting to die with it, so nothing after the point runs anywhere.
KILLS = [
    "controller.admitted=kill",  # a new candidate is recorded as queued; no trainer has it yet
    "trainer.attempt_started=kill-driver",  # a trainer opened its attempt
    "trainer.epoch_recorded=kill-driver",  # an epoch is recorded, the candidate still training
    "trainer.completed=kill-driver",  # the completion transaction committed, the trainer not yet returned
    "controller.trainer_returned=kill",  # between the trainer's return and the controller's record
    "controller.recorded=kill",  # the controller recorded the result in the loop
    "learner.trained=kill-driver",  # an update is written, not yet published
    "controller.advanced=kill",  # a cycle boundary was recorded
]


def _snapshot(store_path: Path) -> dict:
    store = Store(store_path, readonly=True)
    rows = {r["id"]: r for r in store.table("candidates")}
    snap = {
        "finished": {i: (r["status"], r["best_accuracy"], r["epochs_done"]) for i, r in rows.items()
                     if r["stage"] == "finished"},
        "epochs": {i: [e.model_dump() for e in store.epochs(i)] for i, r in rows.items() if r["stage"] == "finished"},
        "unique": [i for i, _ in store.unique_codes()],
        "open": [a["candidate_id"] for a in store.table("attempts") if a["ended"] is None],
        "cycles": [c["cycle"] for c in store.cycles()],
        "trained_twice": store.totals()["trained_twice"],
        "samples": [json.loads(r["spec"])["origin"]["sample"] for r in rows.values() if r["spec"]],
        "generated": len(rows),
    }
    store.close()
    return snap


def _replica_started(app: str) -> float | None:
    """When the LLM replica serving `app` started (None: the application is gone)."""
    from ray import serve

    if app not in serve.status().applications:
        return None
    return serve.get_app_handle(app).status.remote().result(timeout_s=60)["started"]


@pytest.fixture(scope="module")
def kill_chain(ray_session, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume")
    cfg = Config.model_validate({
        **tiny_loop_settings(tiny_model),
        "run": {"final_test": 0},
        "train": {"epochs": 2},
        "learner": {"every_k": 2, "accept_threshold": 0.3, "epochs": 2, "batch_size": 4},
        "loop": {"cycles": 50, "candidates_per_cycle": 4, "queue_size": 2,  # never ends before a kill
                 "max_generations_per_cycle": 40},
    })
    config = out / "config.yaml"
    config.write_text(cfg.to_yaml())
    exe = str(NNGPT)
    run_dir = out / "resume"
    base = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "COLUMNS": "200"}
    snapshots, steps = [], []
    for i, kill in enumerate(KILLS):
        args = ["run", "--config", str(config), "--out", str(out), "--name", "resume"] if i == 0 else \
            ["run", "--resume", str(run_dir)]
        env = base | {"NNGPT_FAULTS": f"{kill}@1", "NNGPT_FAULTS_STATE": str(out / f"faults-{i}")}
        proc = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=600)
        steps.append((kill, proc))
        assert proc.returncode == -signal.SIGKILL, f"{kill}: the driver was not killed there\n{proc.stderr[-3000:]}"
        snapshots.append(_snapshot(run_dir / "store.sqlite") | {"replica": _replica_started("nngpt-llm-resume")})
    generated = snapshots[-1]["generated"]
    final = subprocess.run([exe, "run", "--resume", str(run_dir), "--set", f"loop.max_candidates={generated + 2}"],
                           env=base, capture_output=True, text=True, timeout=600)
    return run_dir, snapshots, steps, final


def test_every_kill_landed_and_the_last_resume_completes(kill_chain):
    run_dir, snapshots, steps, final = kill_chain
    assert final.returncode == 0, final.stderr[-3000:]
    assert "Traceback" not in final.stderr
    assert [kill for kill, _ in steps] == KILLS


def test_each_resume_kept_the_replica_the_killed_driver_left_and_the_end_removed_it(kill_chain):
    _, snapshots, _, _ = kill_chain
    started = [s["replica"] for s in snapshots]
    assert started[0] is not None and started == [started[0]] * len(KILLS)  # no model load after the first
    assert _replica_started("nngpt-llm-resume") is None


def test_no_recorded_result_is_lost_or_changed_by_any_kill(kill_chain):
    run_dir, snapshots, _, _ = kill_chain
    after = _snapshot(run_dir / "store.sqlite")
    for earlier, later in zip(snapshots, [*snapshots[1:], after], strict=True):
        for candidate_id, final in earlier["finished"].items():
            assert later["finished"][candidate_id] == final
            assert later["epochs"][candidate_id] == earlier["epochs"][candidate_id]
    assert not after["open"]
    store = Store(run_dir / "store.sqlite", readonly=True)
    assert all(r["stage"] == "finished" for r in store.table("candidates"))
    assert len(after["finished"]) > len(snapshots[0]["finished"])  # the chain made progress


def test_nothing_is_trained_twice_after_any_kill(kill_chain):
    run_dir, snapshots, _, _ = kill_chain
    assert [s["trained_twice"] for s in snapshots] == [0] * len(KILLS)
    proc = run_cli("status", str(run_dir), "--json")
    assert json.loads(proc.stdout)["totals"]["trained_twice"] == 0
    store = Store(run_dir / "store.sqlite", readonly=True)
    interrupted = 0
    for snap in snapshots:  # in training when the driver died: interrupted, then trained once
        for candidate_id in snap["open"]:
            outcomes = [a["outcome"] for a in store.attempts(candidate_id)]
            assert "interrupted" in outcomes and outcomes.count("completed") <= 1
            interrupted += 1
    assert interrupted >= 2  # the attempt-started and epoch-recorded kills left one open each


def test_a_completed_attempt_is_never_retrained(kill_chain):
    """The kill right after the completion transaction (and the one between the trainer's return and the
    controller's record) must not make the resume train that candidate again."""
    run_dir, snapshots, _, _ = kill_chain
    store = Store(run_dir / "store.sqlite", readonly=True)
    for a in store.table("attempts"):
        if a["outcome"] == "completed":
            outcomes = [x["outcome"] for x in store.attempts(a["candidate_id"])]
            assert outcomes[-1] == "completed" and outcomes.count("completed") == 1


def test_dedup_state_cycles_and_random_streams_continue(kill_chain):
    run_dir, snapshots, _, _ = kill_chain
    after = _snapshot(run_dir / "store.sqlite")
    for snap in snapshots:
        assert after["unique"][:len(snap["unique"])] == snap["unique"]  # the same memory, then more
        assert after["cycles"][:len(snap["cycles"])] == snap["cycles"]
    store = Store(run_dir / "store.sqlite", readonly=True)
    hashes = [code_hash(code) for _, code in store.unique_codes()]
    assert len(hashes) == len(set(hashes))  # nothing admitted twice across the restarts
    assert after["cycles"] == list(range(len(after["cycles"]))) and len(after["cycles"]) >= 2
    samples = after["samples"]
    assert len(samples) == len(set(samples))  # every completion has its own place in the run's stream


def test_resume_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "store.sqlite").write_bytes(b"not a database" * 100)
    proc = run_cli("run", "--resume", str(tmp_path))
    assert proc.returncode == 2 and "not an nngpt-ray run store" in proc.stderr and "Traceback" not in proc.stderr
