"""Should a training run go on? The early-stop gate between epochs.

The interface already carries what a learned predictor needs (code, hyperparameters, dataset, the
accuracies so far; NNGPT's accuracy predictor reads exactly these). The first model is a
learning-curve rule: stop a run that is near chance, or whose projected final accuracy falls far
below the best finished run on the same dataset.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel

from nngpt_ray.config import PredictorConfig
from nngpt_ray.spec import EpochResult


class PredictorInput(BaseModel):
    code: str
    hyperparameters: dict[str, Any]
    dataset: str
    classes: int
    epochs: list[EpochResult]  # the epochs measured so far, in order
    total_epochs: int


class Decision(BaseModel):
    go: bool
    projected: float | None = None  # the predicted final accuracy
    reason: str = ""


class CurvePredictor:
    """Rule-based learning-curve extrapolation; `observe` feeds it finished results."""

    def __init__(self, cfg: PredictorConfig) -> None:
        self.cfg = cfg
        self.finals: dict[str, list[float]] = defaultdict(list)

    def observe(self, dataset: str, final_accuracy: float) -> None:
        self.finals[dataset].append(final_accuracy)

    def decide(self, x: PredictorInput) -> Decision:
        done = len(x.epochs)
        if self.cfg.kind == "none" or done >= x.total_epochs:
            return Decision(go=True, reason="no gate" if self.cfg.kind == "none" else "finished")
        accuracy = x.epochs[-1].val_accuracy
        projected = self.project(x)
        if done < self.cfg.min_epochs:
            return Decision(go=True, projected=projected, reason=f"fewer than {self.cfg.min_epochs} epochs")
        floor = self.cfg.chance_factor / x.classes
        if accuracy < floor:
            return Decision(go=False, projected=projected,
                            reason=f"accuracy {accuracy:.3f} after epoch {done} is below {floor:.3f} "
                                   f"({self.cfg.chance_factor:g}x chance)")
        finals = self.finals.get(x.dataset, [])
        if len(finals) >= 5:
            best = max(finals)
            if projected < best * self.cfg.margin:
                return Decision(go=False, projected=projected,
                                reason=f"projected {projected:.3f} < {self.cfg.margin:g} x best {best:.3f}")
        return Decision(go=True, projected=projected, reason="on track")

    @staticmethod
    def project(x: PredictorInput) -> float:
        """Final accuracy if the last gain keeps halving each remaining epoch."""
        accs = [e.val_accuracy for e in x.epochs]
        remaining = x.total_epochs - len(accs)
        gain = accs[-1] - accs[-2] if len(accs) >= 2 else (1.0 - accs[-1]) * 0.5
        projected = accs[-1] + max(0.0, gain) * sum(0.5 ** k for k in range(1, remaining + 1))
        return min(1.0, projected)
