"""Faults with real Ray, injected into a running loop: a trainer killed mid-candidate, the LLM replica
killed, the learner killed mid-update. Nothing recorded is lost and nothing is trained twice."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conftest import tiny_loop_settings
from nngpt_ray.config import Config
from nngpt_ray.rundir import RunDir
from nngpt_ray.store import Store


def loop_config(tiny_model, out, name, **loop) -> Config:
    return Config.model_validate({
        "run": {"out_dir": str(out), "name": name},
        **tiny_loop_settings(tiny_model),
        "train": {"epochs": 2},
        "trainers": {"count": 2, "max_retries": 2},
        "learner": {"every_k": 2, "accept_threshold": 0.3, "epochs": 30, "batch_size": 2},
        "loop": {"cycles": 3, "candidates_per_cycle": 6, "queue_size": 2, "max_generations_per_cycle": 40} | loop,
        "sandbox": {"timeout_s": 120},
    })


class Injector:
    """Watches the controller from a thread and injects each fault once, when its moment comes."""

    def __init__(self, controller, store_path) -> None:
        self.controller, self.store_path = controller, store_path
        self.log: dict[str, object] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self) -> None:
        import ray

        c = self.controller
        while not self.stop.is_set():
            time.sleep(0.3)
            if "trainer" not in self.log and c.training_now:
                store = Store(self.store_path, readonly=True)
                open_attempts = [a for a in store.table("attempts") if a["ended"] is None]
                store.close()
                if open_attempts:
                    a = open_attempts[0]
                    ray.kill(ray.get_actor(f"nngpt-{a['trainer']}/{c.name}"), no_restart=False)
                    self.log["trainer"] = a["candidate_id"]
            if "learner" not in self.log and c.learning:
                time.sleep(1.0)  # well inside a 30-epoch update
                ray.kill(c.learner, no_restart=False)
                self.log["learner"] = c.adapter.version if c.adapter else 0
            if "llm" not in self.log and "learner" in self.log and c.adapter is not None:
                replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                            if "SERVE_REPLICA" in a["name"] and c.name in a["name"]]
                if replicas:
                    handle = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
                    ray.kill(handle, no_restart=True)  # Serve's controller must notice and start a new replica
                    self.log["llm"] = time.time()
                    self.log["adapter_at_llm_kill"] = c.adapter.version


@pytest.fixture(scope="module")
def faulty_run(ray_session, tiny_model, tmp_path_factory):
    from nngpt_ray.actors.controller import Controller
    from nngpt_ray.run import _shutdown

    out = tmp_path_factory.mktemp("faults")
    cfg = loop_config(tiny_model, out, "faults")
    run = RunDir.new(cfg.run.out_dir, cfg.run.name)
    run.config.write_text(cfg.to_yaml())
    controller = Controller(cfg, run)
    controller.start_actors()
    injector = Injector(controller, run.store)
    injector.thread.start()
    try:
        summary = asyncio.run(controller.run())
    finally:
        injector.stop.set()
        _shutdown(controller)
    return run, summary, injector.log, controller


def test_trainer_killed_mid_candidate_is_requeued_and_recorded_once(faulty_run):
    run, summary, log, _ = faulty_run
    assert "trainer" in log, "no trainer was killed: the loop never trained"
    store = Store(run.store, readonly=True)
    victim = store.candidate(log["trainer"])
    attempts = store.attempts(log["trainer"])
    assert [a["outcome"] for a in attempts][0] == "trainer lost"
    assert victim["stage"] == "finished" and victim["status"] is not None
    assert sum(a["outcome"] == "completed" for a in attempts) <= 1
    assert summary["totals"]["trained_twice"] == 0
    assert all(r["stage"] == "finished" for r in store.table("candidates"))  # nothing left behind


def test_learner_killed_mid_update_keeps_the_last_good_adapter(faulty_run):
    run, summary, log, controller = faulty_run
    assert "learner" in log, "the learner never ran"
    lost_version = log["learner"] + 1
    store = Store(run.store, readonly=True)
    assert any(f"learner lost during update v{lost_version}" in e for e in summary["run"]["events"])
    adapters = store.adapters()
    # the lost update left no adapter behind; a later update (the learner restarted) may have made one
    versions = [a["version"] for a in adapters]
    assert versions == sorted(set(versions)) and all((run.adapter(v) / "adapter_config.json").exists() for v in versions)
    for cycle in store.cycles():
        assert cycle["adapter"] in [0, *versions]


def test_llm_replica_killed_generation_resumes_with_the_active_adapter(faulty_run):
    run, summary, log, _ = faulty_run
    assert "llm" in log, "the run ended before an adapter was active (no replica kill injected)"
    store = Store(run.store, readonly=True)
    after = [r for r in store.table("candidates") if r["created"] > log["llm"]]
    assert after, "nothing was generated after the replica was killed"
    assert {r["adapter"] for r in after} >= {log["adapter_at_llm_kill"]}
    assert summary["totals"]["trained_twice"] == 0
