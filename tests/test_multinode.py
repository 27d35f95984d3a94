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


def test_a_request_that_no_node_can_hold_is_named_with_what_the_nodes_have():
    from nngpt_ray.actors.launcher import requests, unplaceable
    from nngpt_ray.config import Config

    cfg = Config.model_validate({"trainers": {"num_gpus": 1, "resources": {"fast": 1}},
                                 "llm": {"num_gpus": 1, "tensor_parallel": 2}})
    asked = requests(cfg)
    assert asked == {"trainers": {"CPU": 0.5, "GPU": 1, "fast": 1}, "learner": {"CPU": 0.5},
                     "llm": {"CPU": 0.5, "GPU": 2}}
    two_gpu_nodes = [{"CPU": 8, "GPU": 1, "fast": 1, "memory": 1e9}, {"CPU": 8, "GPU": 1}]
    assert unplaceable(asked, two_gpu_nodes) == [  # vLLM's tensor-parallel group needs both GPUs on one node
        "llm: each asks one node for CPU 0.5, GPU 2, and its nodes have CPU 8, GPU 1"]
    assert unplaceable(asked, [{"CPU": 8, "GPU": 2, "fast": 1}]) == []
    assert unplaceable(requests(cfg, ("trainers", "learner")), [{"CPU": 2}]) == [
        "trainers: each asks one node for CPU 0.5, GPU 1, fast 1, and its node has CPU 2, GPU 0, fast 0"]
