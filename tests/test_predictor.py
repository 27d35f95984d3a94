"""The learning-curve gate."""

from __future__ import annotations

from nngpt_ray.config import PredictorConfig
from nngpt_ray.predictor import CurvePredictor, PredictorInput
from nngpt_ray.spec import EpochResult


def x(accs, total=3):
    return PredictorInput(code="", hyperparameters={"lr": 0.1}, dataset="digits", classes=10, total_epochs=total,
                          epochs=[EpochResult(epoch=i + 1, val_accuracy=a, seconds=1) for i, a in enumerate(accs)])


def test_near_chance_is_stopped():
    d = CurvePredictor(PredictorConfig()).decide(x([0.12]))
    assert not d.go and "chance" in d.reason


def test_promising_run_goes_on():
    assert CurvePredictor(PredictorConfig()).decide(x([0.6])).go


def test_far_below_the_best_is_stopped_once_there_is_history():
    p = CurvePredictor(PredictorConfig(margin=0.8))
    assert p.decide(x([0.3, 0.35], total=4)).go  # no history yet
    for acc in (0.95, 0.9, 0.97, 0.92, 0.96):
        p.observe("digits", acc)
    d = p.decide(x([0.3, 0.35], total=4))
    assert not d.go and d.projected < 0.8 * 0.97


def test_projection_is_bounded_and_monotone():
    assert CurvePredictor.project(x([0.5, 0.9], total=10)) == 1.0
    assert CurvePredictor.project(x([0.8, 0.7], total=3)) == 0.7


def test_gate_can_be_switched_off():
    assert CurvePredictor(PredictorConfig(kind="none")).decide(x([0.0])).go
