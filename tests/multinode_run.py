"""A short loop on a three-node Ray cluster (ray.cluster_utils.Cluster), one worker removed mid-run.

    python tests/multinode_run.py MODEL_DIR OUT_DIR      (tests/test_multinode.py runs it)

The head holds the driver, the store and the LLM; two workers each offer two `trainer_slot`s (standing for
GPUs) and the two trainers need one each. Once a trainer on the second worker is training a candidate,
that worker is removed. Prints one JSON line: where the trainers were, which candidate was in training on
the removed node, and how the run ended.
"""

import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from conftest import tiny_loop_settings
from nngpt_ray.actors import actor_name
from nngpt_ray.actors.driver import execute
from nngpt_ray.config import Config
from nngpt_ray.rundir import RunDir
from nngpt_ray.store import Store

model, out = sys.argv[1], Path(sys.argv[2])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
cluster.connect(namespace="nngpt")  # before the workers exist: the driver attaches to the head (one IP for all)
workers = [cluster.add_node(num_cpus=1, resources={"trainer_slot": 2}) for _ in range(2)]
cluster.wait_for_nodes()
cfg = Config.model_validate({
    "run": {"out_dir": str(out), "name": "multi", "final_test": 0},
    **tiny_loop_settings(Path(model)),
    "data": {"max_train": None},  # all of digits: a longer training is a wider window to remove a worker in
    "train": {"epochs": 2},
    "trainers": {"count": 2, "num_cpus": 0.5, "resources": {"trainer_slot": 1}, "max_retries": 2},
    "learner": {"every_k": 2, "accept_threshold": 0.3, "epochs": 2, "batch_size": 4, "gate_prompts": 0},
    "loop": {"cycles": 1, "candidates_per_cycle": 6, "queue_size": 2},
    "ray": {"address": cluster.address},
})
run = RunDir.new(cfg.run.out_dir, cfg.run.name)
run.config.write_text(cfg.to_yaml())
report: dict = {"workers": [w.node_id for w in workers], "head": cluster.head_node.node_id}
done = threading.Event()


def remove_a_worker_mid_candidate() -> None:
    while "placement" not in report and not done.is_set():  # asked once: a trainer answers between candidates
        time.sleep(0.3)
        try:
            trainers = [ray.get_actor(actor_name(f"trainer-{i}", "multi")) for i in range(2)]
            report["placement"] = {i: ray.get(t.node.remote(), timeout=60) for i, t in enumerate(trainers)}
        except Exception:
            continue
    on_second = [i for i, node in report.get("placement", {}).items() if node == workers[1].node_id]
    while on_second and not done.is_set():
        time.sleep(0.2)
        if not run.store.exists():
            continue
        with Store(run.store, readonly=True) as store:
            busy = [a["candidate_id"] for a in store.table("attempts")
                    if a["ended"] is None and a["trainer"] == f"trainer-{on_second[0]}"]
        if busy:
            report["victim"] = busy[0]
            cluster.remove_node(workers[1])
            report["removed"] = time.time()
            return


watcher = threading.Thread(target=remove_a_worker_mid_candidate, daemon=True)
watcher.start()
outcome = execute(cfg, run)
done.set()
watcher.join()
report.update(ended=outcome.ended, error=outcome.error, run=str(run.root))
print(json.dumps(report), flush=True)
ray.shutdown()
cluster.shutdown()
