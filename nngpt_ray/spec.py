"""The records that flow through the system: a candidate network, and what training it produced."""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nngpt_ray.failures import FailureKind
from nngpt_ray.source import code_hash, short_hash

#: Values used when a network declares a hyperparameter that the completion did not set.
DEFAULT_HYPERPARAMETERS: dict[str, float] = {"lr": 0.01, "momentum": 0.9, "dropout": 0.2}


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(BaseModel):
    """lr, momentum, batch and epochs, plus any numeric value the network declares (e.g. dropout)."""

    model_config = ConfigDict(extra="allow")

    lr: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    batch: int = Field(64, ge=1, le=4096)
    epochs: int = Field(2, ge=1, le=1000)

    @model_validator(mode="after")
    def _extras_are_numbers(self) -> Hyperparameters:
        for key, value in (self.model_extra or {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"hyperparameter '{key}' must be a finite number, got {value!r}")
        return self

    def as_prm(self) -> dict[str, Any]:
        return self.model_dump()


class Transform(Record):
    """Input pipeline: resize (square side, None = native), per-channel normalization, random h-flip."""

    resize: int | None = Field(None, ge=4, le=512)
    normalize: bool = True
    hflip: bool = False


class Origin(Record):
    task: str = "manual"  # fill | code | seed | manual
    prompt_id: str | None = None
    parents: list[str] = []
    adapter: int = 0  # adapter version that generated it; 0 = the base model
    cycle: int | None = None
    sample: str = ""  # unique generation key inside a run (keeps ids of identical completions apart)
    attempt: int = 1  # 2 = the re-prompt after a parse failure
    family: str = ""  # the seed family it descends from (its reference's, or the most similar seed's)
    blocks: list[str] = []  # NN-RAG blocks its prompt showed (targets), when retrieval is on


class CandidateSpec(Record):
    """A network plus everything needed to train it reproducibly."""

    id: str = ""
    code: str
    code_hash: str = ""
    hyperparameters: Hyperparameters = Hyperparameters()
    transform: Transform = Transform()
    dataset: str = "digits"
    origin: Origin = Origin()

    @model_validator(mode="after")
    def _derive_ids(self) -> CandidateSpec:
        if not self.code_hash:
            self.code_hash = code_hash(self.code)
        if not self.id:
            payload = json.dumps(
                [self.code_hash, self.hyperparameters.as_prm(), self.transform.model_dump(), self.dataset,
                 self.origin.prompt_id, self.origin.sample, self.origin.attempt],
                sort_keys=True,
            )
            self.id = short_hash(payload)
        return self


class EpochResult(Record):
    epoch: int
    train_loss: float | None = None
    val_accuracy: float
    seconds: float
    peak_memory_mb: float | None = None

    @field_validator("train_loss")
    @classmethod
    def _finite_or_none(cls, v: float | None) -> float | None:
        return v if v is None or math.isfinite(v) else None


class EvalResult(Record):
    """What the harness measured. `failure` is None when every requested epoch completed.

    Per-epoch accuracies are on the validation split (carved from the training split); `test_accuracy`
    is set only by a final evaluation that asked for the test split."""

    candidate_id: str
    failure: FailureKind | None = None
    error: str | None = None
    epochs: list[EpochResult] = []
    params: int | None = None
    duration_s: float = 0.0
    protections: dict[str, Any] = {}
    test_accuracy: float | None = None
    features: dict[str, Any] = {}  # measured on the built network: flops, depth, layers by type

    @property
    def status(self) -> Literal["ok", "failed"]:
        return "ok" if self.failure is None else "failed"

    @property
    def final_status(self) -> str:
        """The status a store records: "ok" or the failure kind."""
        return "ok" if self.failure is None else self.failure.value

    @property
    def trained(self) -> bool:
        from nngpt_ray.outcomes import is_trained

        return is_trained(self.final_status)

    @property
    def best_accuracy(self) -> float | None:
        return max((e.val_accuracy for e in self.epochs), default=None)

    def summary(self) -> dict[str, Any]:
        """The stable JSON shape printed by `nngpt eval --json`."""
        return {
            "candidate_id": self.candidate_id,
            "status": self.status,
            "failure": self.failure.value if self.failure else None,
            "error": self.error,
            "epochs": [e.model_dump() for e in self.epochs],
            "best_accuracy": self.best_accuracy,
            "test_accuracy": self.test_accuracy,
            "features": self.features,
            "params": self.params,
            "duration_s": round(self.duration_s, 3),
            "protections": self.protections,
        }
