"""The driver killed with SIGKILL mid-run, then `nngpt run --resume`: no recorded result lost, no candidate
trained twice, dedup state identical, cycle numbering continuous. Real Ray, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli, tiny_loop_settings
from nngpt_ray.config import Config
from nngpt_ray.failures import StoreError
from nngpt_ray.source import code_hash
from nngpt_ray.store import Store


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
    }
    store.close()
    return snap


@pytest.fixture(scope="module")
def killed_and_resumed(ray_session, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume")
    cfg = Config.model_validate({
        **tiny_loop_settings(tiny_model),
        "train": {"epochs": 3},
        "learner": {"every_k": 2, "accept_threshold": 0.3, "epochs": 2, "batch_size": 4},
        "loop": {"cycles": 50, "candidates_per_cycle": 6, "queue_size": 2,  # never ends before the kill
                 "max_generations_per_cycle": 40},
    })
    config = out / "config.yaml"
    config.write_text(cfg.to_yaml())
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "COLUMNS": "200"}
    exe = str(Path(sys.executable).with_name("nngpt"))
    run_dir = out / "resume"
    driver = subprocess.Popen([exe, "run", "--config", str(config), "--out", str(out), "--name", "resume"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while True:  # kill it while something is being trained and something is already recorded
        assert time.time() < deadline and driver.poll() is None, "the run ended before the kill"
        time.sleep(0.5)
        if not (run_dir / "store.sqlite").exists():
            continue
        try:
            snap = _snapshot(run_dir / "store.sqlite")
        except StoreError:
            continue
        trained = [i for i, (status, _, epochs) in snap["finished"].items() if epochs]
        if trained and snap["open"]:
            break
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = _snapshot(run_dir / "store.sqlite")
    last = max(before["cycles"])  # finish the cycle in progress and one more
    resumed = subprocess.run([exe, "run", "--resume", str(run_dir), "--cycles", str(last + 2)], env=env,
                             capture_output=True, text=True, timeout=900)
    return run_dir, before, resumed


def test_resume_completes(killed_and_resumed):
    run_dir, before, resumed = killed_and_resumed
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr


def test_no_recorded_result_is_lost_or_changed(killed_and_resumed):
    run_dir, before, _ = killed_and_resumed
    after = _snapshot(run_dir / "store.sqlite")
    for candidate_id, final in before["finished"].items():
        assert after["finished"][candidate_id] == final
        assert after["epochs"][candidate_id] == before["epochs"][candidate_id]
    assert not after["open"]
    store = Store(run_dir / "store.sqlite", readonly=True)
    assert all(r["stage"] == "finished" for r in store.table("candidates"))


def test_nothing_is_trained_twice(killed_and_resumed):
    run_dir, before, _ = killed_and_resumed
    proc = run_cli("status", str(run_dir), "--json")
    assert json.loads(proc.stdout)["totals"]["trained_twice"] == 0
    store = Store(run_dir / "store.sqlite", readonly=True)
    for candidate_id in before["open"]:  # in training when the driver died: interrupted, then trained once
        outcomes = [a["outcome"] for a in store.attempts(candidate_id)]
        assert outcomes[0] == "interrupted" and outcomes.count("completed") <= 1


def test_dedup_state_and_cycles_continue(killed_and_resumed):
    run_dir, before, _ = killed_and_resumed
    after = _snapshot(run_dir / "store.sqlite")
    assert after["unique"][:len(before["unique"])] == before["unique"]  # the same memory, then more
    store = Store(run_dir / "store.sqlite", readonly=True)
    hashes = [code_hash(code) for _, code in store.unique_codes()]
    assert len(hashes) == len(set(hashes))  # nothing admitted twice across the restart
    assert after["cycles"] == list(range(len(after["cycles"])))
    assert after["cycles"][:len(before["cycles"])] == before["cycles"]


def test_resume_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "store.sqlite").write_bytes(b"not a database" * 100)
    proc = run_cli("run", "--resume", str(tmp_path))
    assert proc.returncode == 2 and "not an nngpt-ray run store" in proc.stderr and "Traceback" not in proc.stderr
