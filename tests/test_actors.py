"""Each actor on real local Ray: the store writer, dedup (and its rebuild after a crash), the predictor
gate, and a trainer running the sandboxed harness with the gate in the loop."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nngpt_ray.config import Config, DedupConfig, PredictorConfig
from nngpt_ray.corpus import seed_entries
from nngpt_ray.failures import FailureKind
from nngpt_ray.predictor import PredictorInput
from nngpt_ray.spec import CandidateSpec, EpochResult, Hyperparameters, Origin

SEEDS = {s.name: s for s in seed_entries()}


def spec_of(name: str, epochs: int = 2, sample: str = "") -> CandidateSpec:
    seed = SEEDS[name]
    return CandidateSpec(code=seed.code, hyperparameters=Hyperparameters(**seed.hyperparameters, epochs=epochs),
                         origin=Origin(task="manual", sample=sample))


@pytest.fixture
def store_actor(ray_session, tmp_path):
    from nngpt_ray.actors import actor_name
    from nngpt_ray.actors.store import StoreActor

    path = tmp_path / "store.sqlite"
    actor = StoreActor.options(name=actor_name("store", tmp_path.name)).remote(str(path), create=True)
    assert ray_session.get(actor.meta.remote("application")) == "nngpt-ray"  # typed calls on the Store itself
    yield actor, path
    ray_session.kill(actor)


def test_dedup_actor_verdicts_and_rebuild_after_a_crash(ray_session, store_actor):
    """Dedup knows the seed corpus and the store's new candidates; after a crash it knows exactly that again."""
    import random

    from nngpt_ray.actors.dedup import DedupActor
    from nngpt_ray.surgery import mutate

    store, path = store_actor
    variants = {name: CandidateSpec(code=mutate(SEEDS[name].code, random.Random(i), steps=3),
                                    origin=Origin(task="manual", sample=name)) for i, name in ((1, "resnet"), (2, "vit"))}
    for spec in variants.values():
        ray_session.get(store.add_candidate.remote(spec.id, task="manual", spec=spec))
    expected = [f"seed:{name}" for name in sorted(SEEDS)] + [variants["resnet"].id, variants["vit"].id]
    dedup = DedupActor.remote(DedupConfig(threshold=0.9, num_perm=128).model_dump(), str(path))
    assert ray_session.get(dedup.known.remote()) == expected
    exact = ray_session.get(dedup.check.remote("x1", variants["resnet"].code + "\n# only a comment\n"))
    assert (exact.kind, exact.similar_to, exact.similarity) == ("duplicate", variants["resnet"].id, 1.0)
    near_code = variants["vit"].code.replace("nn.Linear(dim, out_shape[0])", "nn.Linear(dim, out_shape[0], bias=True)")
    near = ray_session.get(dedup.check.remote("x2", near_code))
    assert near.kind == "near_duplicate" and near.similar_to == variants["vit"].id and near.similarity >= 0.9
    seed = ray_session.get(dedup.check.remote("x3", SEEDS["senet"].code))
    assert (seed.kind, seed.similar_to) == ("duplicate", "seed:senet")  # a seed written out again is not new
    lemur = (Path(__file__).parent / "data" / "lemur_convbn.py").read_text()
    new = ray_session.get(dedup.check.remote("x4", lemur))
    assert new.kind == "new" and new.similar_to.startswith("seed:")

    before = ray_session.get(dedup.pid.remote())
    ray_session.kill(dedup, no_restart=False)  # crash: Ray restarts it, and it rebuilds from the store
    deadline = time.time() + 60
    while True:  # the kill is asynchronous: wait for the restarted process, not a last answer from the old one
        assert time.time() < deadline, "the dedup actor did not come back"
        try:
            if ray_session.get(dedup.pid.remote(), timeout=30) != before:
                break
        except ray_session.exceptions.RayActorError:
            pass
        time.sleep(0.5)
    assert ray_session.get(dedup.known.remote()) == expected  # x4 was never recorded in the store
    assert ray_session.get(dedup.check.remote("x5", variants["resnet"].code)).kind == "duplicate"


def test_predictor_actor(ray_session, tmp_path):
    from nngpt_ray.actors.predictor import PredictorActor
    from nngpt_ray.store import Store

    Store(tmp_path / "s.sqlite", create=True).close()
    predictor = PredictorActor.remote(PredictorConfig().model_dump(), str(tmp_path / "s.sqlite"))
    x = PredictorInput(code="", hyperparameters={}, dataset="digits", classes=10, total_epochs=3,
                       epochs=[EpochResult(epoch=1, val_accuracy=0.1, seconds=1)])
    assert not ray_session.get(predictor.decide.remote(x)).go
    x.epochs[0].val_accuracy = 0.7
    assert ray_session.get(predictor.decide.remote(x)).go


def test_trainer_actor_records_epochs_obeys_the_gate_and_finishes_in_one_write(ray_session, store_actor):
    from nngpt_ray.actors import actor_name
    from nngpt_ray.actors.predictor import PredictorActor
    from nngpt_ray.actors.trainer import TrainerActor

    store, path = store_actor
    run = path.parent.name
    # chance factor 10 on 10 classes: anything below 100% after epoch 1 is "hopeless", so the gate must stop it
    predictor = PredictorActor.options(name=actor_name("predictor", run)).remote(
        PredictorConfig(chance_factor=10).model_dump(), str(path))
    trainer = TrainerActor.remote(Config().model_dump(mode="json"), "trainer-test", run)
    spec = spec_of("plain_cnn", epochs=3)
    ray_session.get(store.add_candidate.remote(spec.id, task="manual", spec=spec))
    completion = ray_session.get(trainer.train.remote(spec))
    result = completion.result
    assert completion.recorded and result.failure == FailureKind.STOPPED_EARLY and len(result.epochs) == 1
    assert result.epochs[0].val_accuracy > 0.5
    row = ray_session.get(store.candidate.remote(spec.id))
    assert (row["stage"], row["status"], row["epochs_done"]) == ("finished", "stopped_early", 1)
    attempts = ray_session.get(store.attempts.remote(spec.id))
    assert [(a["trainer"], a["outcome"]) for a in attempts] == [("trainer-test", "completed")]
    decisions = ray_session.get(store.table.remote("decisions"))  # the stop is accountable: what, why, by whom
    assert [(d["candidate_id"], d["epoch"], d["go"], d["model"]) for d in decisions] == [(spec.id, 1, 0, "curve")]
    assert "chance" in decisions[0]["reason"]
    again = ray_session.get(trainer.train.remote(spec))  # a second result for a finished candidate is dropped
    assert not again.recorded and ray_session.get(store.candidate.remote(spec.id))["status"] == "stopped_early"
    ray_session.kill(predictor)
    ray_session.kill(trainer)
