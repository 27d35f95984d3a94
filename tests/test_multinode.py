"""The loop on a three-node Ray cluster: trainers placed on both workers (custom resources standing for
GPUs), a worker removed while it trains a candidate, nothing lost and nothing trained twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nngpt_ray.store import Store


@pytest.fixture(scope="module")
def multinode(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("multinode")
    script = Path(__file__).with_name("multinode_run.py")
    proc = subprocess.run([sys.executable, str(script), str(tiny_model), str(out)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_trainers_were_placed_on_both_workers(multinode):
    assert sorted(multinode["placement"].values()) == sorted(multinode["workers"])
    assert multinode["head"] not in multinode["placement"].values()


def test_removing_a_worker_mid_run_loses_nothing(multinode):
    assert "removed" in multinode, "no candidate was ever in training on the second worker"
    assert multinode["ended"] == "done", multinode["error"]
    store = Store(Path(multinode["run"]) / "store.sqlite", readonly=True)
    assert all(r["stage"] == "finished" for r in store.table("candidates"))
    assert store.totals()["trained_twice"] == 0
    outcomes = [a["outcome"] for a in store.attempts(multinode["victim"])]
    assert outcomes[0] == "trainer lost" and outcomes.count("completed") == 1  # re-queued, trained once elsewhere
    assert store.candidate(multinode["victim"])["stage"] == "finished"
