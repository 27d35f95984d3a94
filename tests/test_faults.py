"""Faults injected into a running loop on real Ray, at named points (nngpt_ray.faults), not by racing
sleeps: a trainer process killed mid-candidate, an ordinary exception inside a trainer task and inside
the learner, the learner killed mid-update, the LLM replica killed. The run finishes; nothing recorded
is lost and nothing is trained twice."""

from __future__ import annotations

import os
import threading
import time

import pytest

from conftest import tiny_loop_settings
from nngpt_ray.config import Config
from nngpt_ray.rundir import RunDir
from nngpt_ray.store import Store

FAULTS = ("trainer.epoch_recorded=kill@1,"  # the first epoch recorded anywhere: that trainer's process dies
          "trainer.attempt_started=raise@4,"  # the fourth trainer task raises an ordinary exception
          "learner.trained=raise@1,"  # the first update raises once its adapter is written
          "learner.trained=kill@2")  # the second update's learner process dies at the same moment


def loop_config(tiny_model, out, name, **loop) -> Config:
    return Config.model_validate({
        "run": {"out_dir": str(out), "name": name, "final_test": 0},
        **tiny_loop_settings(tiny_model),
        "train": {"epochs": 2},
        "trainers": {"count": 2, "max_retries": 2},
        "learner": {"every_k": 2, "accept_threshold": 0.3, "epochs": 2, "batch_size": 4, "gate_prompts": 0},
        "loop": {"cycles": 4, "candidates_per_cycle": 6, "queue_size": 2, "max_generations_per_cycle": 60} | loop,
        "sandbox": {"timeout_s": 120},
    })


class ReplicaKiller:
    """Kills the LLM replica once an adapter is active (read from the store: no controller internals)."""

    def __init__(self, store_path, run_name) -> None:
        self.store_path, self.run_name = store_path, run_name
        self.log: dict[str, float | int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self) -> None:
        import ray

        while not self.stop.is_set() and "llm" not in self.log:
            time.sleep(0.3)
            try:
                store = Store(self.store_path, readonly=True)
                active = [c["adapter"] for c in store.cycles() if c["adapter"]]
                store.close()
            except Exception:
                continue
            replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                        if "SERVE_REPLICA" in a["name"] and self.run_name in a["name"]]
            if active and replicas:
                handle = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
                ray.kill(handle, no_restart=True)  # Serve's controller must notice and start a new replica
                self.log.update(llm=time.time(), adapter=active[-1])


@pytest.fixture(scope="module")
def faulty_run(ray_session, tiny_model, tmp_path_factory):
    from nngpt_ray.actors.driver import execute

    out = tmp_path_factory.mktemp("faults")
    cfg = loop_config(tiny_model, out, "faults")
    run = RunDir.new(cfg.run.out_dir, cfg.run.name)
    run.config.write_text(cfg.to_yaml())
    os.environ.update(NNGPT_FAULTS=FAULTS, NNGPT_FAULTS_STATE=str(out / "fault-counters"))
    killer = ReplicaKiller(run.store, "faults")
    killer.thread.start()
    try:
        outcome = execute(cfg, run)
    finally:
        killer.stop.set()
        for key in ("NNGPT_FAULTS", "NNGPT_FAULTS_STATE"):
            os.environ.pop(key)
    return run, outcome, killer.log


def _attempt_outcomes(store: Store) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a in sorted(store.table("attempts"), key=lambda a: (a["candidate_id"], a["attempt"])):
        out.setdefault(a["candidate_id"], []).append(a["outcome"])
    return out


def test_the_run_finishes_despite_every_fault(faulty_run):
    run, outcome, _ = faulty_run
    assert outcome.ended == "done", outcome.error
    store = Store(run.store, readonly=True)
    assert outcome.summary["totals"]["trained_twice"] == 0
    assert all(r["stage"] == "finished" for r in store.table("candidates"))  # nothing left behind
    assert [c["cycle"] for c in store.cycles()] == [0, 1, 2, 3]


def test_a_trainer_killed_mid_candidate_loses_nothing(faulty_run):
    run, _, _ = faulty_run
    store = Store(run.store, readonly=True)
    lost = {cid: o for cid, o in _attempt_outcomes(store).items() if "trainer lost" in o}
    assert len(lost) == 1, lost
    (victim, outcomes), = lost.items()
    assert outcomes[0] == "trainer lost" and outcomes[-1] == "completed" and outcomes.count("completed") == 1
    assert store.candidate(victim)["stage"] == "finished"
    assert sum("trainer lost" in e for e in _events(run)) == 1  # the re-queued candidate did not meet the restart


def test_an_exception_in_a_trainer_task_is_retried(faulty_run):
    run, outcome, _ = faulty_run
    store = Store(run.store, readonly=True)
    failed = {cid: o for cid, o in _attempt_outcomes(store).items() if "trainer error" in o}
    assert len(failed) == 1, failed  # (it may be the candidate whose first trainer was killed, too)
    (outcomes,) = failed.values()
    assert outcomes[-1] == "completed" and outcomes.count("completed") == 1
    assert any("trainer error" in e and "injected fault at trainer.attempt_started" in e
               for e in outcome.summary["run"]["events"])


def test_learner_failures_keep_the_last_good_adapter_and_learning_goes_on(faulty_run):
    run, outcome, _ = faulty_run
    events = outcome.summary["run"]["events"]
    assert any("update v1 failed: " in e and "injected fault at learner.trained" in e for e in events), events
    assert any("update v2 failed: learner lost" in e for e in events), events
    assert sum("update v1 failed" in e for e in events) == 1  # reported once
    store = Store(run.store, readonly=True)
    versions = [a["version"] for a in store.adapters()]
    assert 1 not in versions and 2 not in versions and versions  # the failed updates left no adapter
    assert all((run.adapter(v) / "adapter_config.json").exists() for v in versions)
    assert not any(".partial" in p.name for p in run.adapters.iterdir())  # half-written adapters were cleared
    assert {c["adapter"] for c in store.cycles()} <= {0, *versions}
    assert outcome.summary["run"]["adapters_applied"] >= 1


def test_llm_replica_killed_generation_resumes_with_the_active_adapter(faulty_run):
    run, outcome, log = faulty_run
    assert "llm" in log, "no adapter became active, so no replica was killed"
    store = Store(run.store, readonly=True)
    after = [r for r in store.table("candidates") if r["created"] > log["llm"]]
    assert after, "nothing was generated after the replica was killed"
    assert {r["adapter"] for r in after} >= {log["adapter"]}
    assert outcome.summary["totals"]["trained_twice"] == 0


def _events(run) -> list[str]:
    return [e["message"] for e in Store(run.store, readonly=True).events()]
