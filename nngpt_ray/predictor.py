"""Should a training run go on? The early-stop gate between epochs, and the models behind it.

Every model answers the same question from the same input (`PredictorInput`: the network's measured
features, its hyperparameters, transform and dataset, and the validation accuracies so far) with a
`Decision`: go or stop, the predicted final (best) accuracy, an upper estimate, and the reason.

- `CurvePredictor` ("curve"): the hand-written learning-curve rule, kept as the baseline: stop near
  chance, or when a halving-gain projection falls far below the best finished run on the dataset;
- `LearnedPredictor` ("learned"): scikit-learn gradient boosting over the features plus the accuracies
  seen so far (missing later epochs are missing values, so one model serves every epoch), a point
  prediction of the final accuracy and an upper quantile; it stops a run whose *upper* estimate falls
  below `margin` times the best finished run, so it stops only what is unlikely to matter. Fitted from one
  or more run stores, saved as a file, refitted during a run.

What a decision saves and what it costs is measured by bench/predictor_savings.py; how well a model
predicts, on families it never saw, by `nngpt predictor eval`.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from nngpt_ray import modelfile, outcomes
from nngpt_ray.config import PredictorConfig
from nngpt_ray.failures import UserError
from nngpt_ray.spec import EpochResult

MAX_EPOCHS = 10  # accuracies after epoch 1..MAX_EPOCHS are features; later epochs are not looked at
LAYER_GROUPS = {"conv": ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d"), "linear": ("Linear",),
                "norm": ("BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm2d"),
                "pool": ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"),
                "act": ("ReLU", "ReLU6", "GELU", "SiLU", "LeakyReLU", "ELU", "Hardswish", "Mish", "Sigmoid", "Tanh"),
                "dropout": ("Dropout", "Dropout2d")}
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")


class PredictorInput(BaseModel):
    code: str
    hyperparameters: dict[str, Any]
    dataset: str
    classes: int
    epochs: list[EpochResult]  # the epochs measured so far, in order
    total_epochs: int
    features: dict[str, Any] = {}  # measured in the sandbox: flops, depth, layers by type
    params: int | None = None
    transform: dict[str, Any] = {}


class Decision(BaseModel):
    go: bool
    projected: float | None = None  # the predicted final (best) accuracy
    upper: float | None = None  # an upper estimate of it (the learned model's quantile)
    reason: str = ""
    model: str = "curve"


class CurvePredictor:
    """Rule-based learning-curve extrapolation; `observe` feeds it finished results."""

    name = "curve"

    def __init__(self, cfg: PredictorConfig) -> None:
        self.cfg = cfg
        self.finals: dict[str, list[float]] = defaultdict(list)

    def observe(self, dataset: str, final_accuracy: float) -> None:
        self.finals[dataset].append(final_accuracy)

    def decide(self, x: PredictorInput) -> Decision:
        done = len(x.epochs)
        if self.cfg.kind == "none" or done >= x.total_epochs:
            return Decision(go=True, reason="no gate" if self.cfg.kind == "none" else "finished", model=self.name)
        accuracy = x.epochs[-1].val_accuracy
        projected = self.project(x)
        early = self._early(x, done, accuracy, projected)
        if early is not None:
            return early
        finals = self.finals.get(x.dataset, [])
        if len(finals) >= 5:
            best = max(finals)
            if projected < best * self.cfg.margin:
                return Decision(go=False, projected=projected, upper=projected, model=self.name,
                                reason=f"projected {projected:.3f} < {self.cfg.margin:g} x best {best:.3f}")
        return Decision(go=True, projected=projected, upper=projected, reason="on track", model=self.name)

    def _early(self, x: PredictorInput, done: int, accuracy: float, projected: float) -> Decision | None:
        """The checks every model shares: too early to judge, or near chance."""
        if done < self.cfg.min_epochs:
            return Decision(go=True, projected=projected, reason=f"fewer than {self.cfg.min_epochs} epochs",
                            model=self.name)
        floor = self.cfg.chance_factor / x.classes
        if accuracy < floor:
            return Decision(go=False, projected=projected, model=self.name,
                            reason=f"accuracy {accuracy:.3f} after epoch {done} is below {floor:.3f} "
                                   f"({self.cfg.chance_factor:g}x chance)")
        return None

    @staticmethod
    def project(x: PredictorInput) -> float:
        """Final accuracy if the last gain keeps halving each remaining epoch."""
        accs = [e.val_accuracy for e in x.epochs]
        remaining = x.total_epochs - len(accs)
        gain = accs[-1] - accs[-2] if len(accs) >= 2 else (1.0 - accs[-1]) * 0.5
        projected = accs[-1] + max(0.0, gain) * sum(0.5 ** k for k in range(1, remaining + 1))
        return min(1.0, projected)


# ---------------------------------------------------------------- the learned model


def network_features(x: PredictorInput) -> dict[str, float]:
    """What is known before training: the built network's measured size and layers, its hyperparameters
    and input transform (NaN where a value is missing, as for runs recorded before features existed)."""
    layers = x.features.get("layers", {})
    prm = x.hyperparameters
    row = {
        "log_params": math.log10(x.params) if x.params else math.nan,
        "log_flops": math.log10(x.features["flops"]) if x.features.get("flops") else math.nan,
        "depth": float(x.features.get("depth", math.nan)),
        "log_lr": math.log10(prm["lr"]) if prm.get("lr") else math.nan,
        "momentum": float(prm.get("momentum", math.nan)),
        "log_batch": math.log2(prm["batch"]) if prm.get("batch") else math.nan,
        "dropout": float(prm.get("dropout", math.nan)),
        "resize": float(x.transform.get("resize") or 0),
        "hflip": float(bool(x.transform.get("hflip"))),
    }
    for group, names in LAYER_GROUPS.items():
        row[f"layers_{group}"] = float(sum(layers.get(n, 0) for n in names))
    return row


def feature_row(x: PredictorInput, seen: int | None = None) -> dict[str, float]:
    """The model's input for `x` after its first `seen` epochs (all it has, by default)."""
    seen = len(x.epochs) if seen is None else seen
    row = network_features(x) | {"classes": float(x.classes), "total_epochs": float(x.total_epochs),
                                 "seen": float(seen)}
    for name in DATASETS:
        row[f"dataset_{name}"] = float(x.dataset == name)
    for k in range(1, MAX_EPOCHS + 1):
        row[f"acc_{k}"] = x.epochs[k - 1].val_accuracy if k <= seen else math.nan
        loss = x.epochs[k - 1].train_loss if k <= seen else None
        row[f"loss_{k}"] = loss if loss is not None else math.nan
    last = x.epochs[seen - 1].val_accuracy if seen else math.nan
    row["acc_last"] = last
    row["gain_last"] = last - x.epochs[seen - 2].val_accuracy if seen >= 2 else math.nan
    return row


FEATURES = tuple(feature_row(PredictorInput(code="", hyperparameters={}, dataset="digits", classes=10,
                                            epochs=[], total_epochs=1)))


def trained_inputs(store, min_epochs: int = 1) -> list[tuple[PredictorInput, float, str]]:
    """(input with all its epochs, best accuracy, seed family) for every trained candidate of a store with
    at least `min_epochs` epochs and its features recorded, in the order they finished."""
    from nngpt_ray.datasets import dataset_info

    rows = store.db.execute(
        f"SELECT id, spec, params, features, best_accuracy FROM candidates WHERE stage='finished' AND "
        f"{outcomes.sql_trained()} AND epochs_done >= ? AND features IS NOT NULL AND features != '{{}}' "
        f"ORDER BY finished, id", (min_epochs,)).fetchall()
    out = []
    for row in rows:
        spec = json.loads(row["spec"])
        x = PredictorInput(code=spec["code"], hyperparameters=spec["hyperparameters"], dataset=spec["dataset"],
                           classes=dataset_info(spec["dataset"]).classes, epochs=store.epochs(row["id"]),
                           total_epochs=spec["hyperparameters"]["epochs"], features=json.loads(row["features"]),
                           params=row["params"], transform=spec["transform"])
        out.append((x, row["best_accuracy"], spec["origin"].get("family") or _family(spec["code"])))
    return out


def training_examples(store) -> list[tuple[PredictorInput, float, str]]:
    """The predictor's examples: trained candidates with two or more epochs (one to see, one to predict)."""
    return trained_inputs(store, min_epochs=2)


def _family(code: str) -> str:
    from nngpt_ray.corpus import family_of

    return family_of(code)


def _matrix(examples: list[tuple[PredictorInput, float, str]], seen: int | None):
    """Rows for fitting: each example after every number of epochs from 1 to all-but-one (or `seen`)."""
    import numpy as np

    xs, ys, groups = [], [], []
    for x, target, family in examples:
        ks = [seen] if seen is not None else range(1, len(x.epochs))
        for k in ks:
            if 1 <= k < len(x.epochs) or (seen is not None and k <= len(x.epochs)):
                row = feature_row(x, k)
                xs.append([row[f] for f in FEATURES])
                ys.append(target)
                groups.append(family)
    return np.array(xs, dtype=float), np.array(ys, dtype=float), np.array(groups)


def one_openmp_thread() -> None:
    """Call before scikit-learn or torch is first imported, in a process that fits or evaluates these models
    (the CLI commands, the benchmark): they fit in milliseconds on one thread, while OpenMP's threads
    spin-wait for cores. Measured on 2 cores busy with trainers: `predictor eval` took 4 to 10 minutes
    with OpenMP's default threads (threadpoolctl's runtime limit did not change that) and 17 s with one.
    OpenMP reads the setting once, when it loads. Ray gives the predictor actor one thread already."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


class LearnedModel:
    """Gradient boosting: the final accuracy (squared error) and an upper quantile of it."""

    def __init__(self, quantile: float = 0.9, seed: int = 0) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.quantile = quantile
        common = dict(max_iter=200, learning_rate=0.06, max_leaf_nodes=15, min_samples_leaf=8, random_state=seed)
        self.point = HistGradientBoostingRegressor(**common)
        self.upper = HistGradientBoostingRegressor(loss="quantile", quantile=quantile, **common)
        self.examples = 0
        self.columns = None  # which FEATURES the fitted model reads

    def fit(self, examples: list[tuple[PredictorInput, float, str]]) -> LearnedModel:
        import numpy as np

        xs, ys, _ = _matrix(examples, None)
        self.columns = ~np.isnan(xs).all(axis=0)  # a feature no example has (e.g. later epochs) is left out
        self.point.fit(xs[:, self.columns], ys)
        self.upper.fit(xs[:, self.columns], ys)
        self.examples = len(examples)
        return self

    def predict(self, x: PredictorInput, seen: int | None = None) -> tuple[float, float]:
        import numpy as np

        row = feature_row(x, seen)
        values = np.array([[row[f] for f in FEATURES]], dtype=float)[:, self.columns]
        point = float(np.clip(self.point.predict(values)[0], 0.0, 1.0))
        return point, max(point, float(np.clip(self.upper.predict(values)[0], 0.0, 1.0)))

    def save(self, path: Path) -> Path:
        return modelfile.save(path, "predictor", FEATURES, {"quantile": self.quantile, "examples": self.examples,
                                                            "point": self.point, "upper": self.upper,
                                                            "columns": self.columns})

    @classmethod
    def load(cls, path: Path) -> LearnedModel:
        """Raises UserError for a file that is not a predictor model of this version."""
        saved = modelfile.load(path, "predictor", FEATURES, "nngpt predictor fit RUN_DIR...")
        model = cls(saved["quantile"])
        model.point, model.upper, model.examples = saved["point"], saved["upper"], saved["examples"]
        model.columns = saved["columns"]
        return model


class LearnedPredictor(CurvePredictor):
    """The learned model behind the gate; the curve rule's checks (too early, near chance) still apply."""

    name = "learned"

    def __init__(self, cfg: PredictorConfig, model: LearnedModel) -> None:
        super().__init__(cfg)
        self.model = model

    def decide(self, x: PredictorInput) -> Decision:
        done = len(x.epochs)
        if done >= x.total_epochs:
            return Decision(go=True, reason="finished", model=self.name)
        point, upper = self.model.predict(x)
        early = self._early(x, done, x.epochs[-1].val_accuracy, point)
        if early is not None:
            return early.model_copy(update={"upper": upper})
        finals = self.finals.get(x.dataset, [])
        if len(finals) >= 5:
            best = max(finals)
            if upper < best * self.cfg.margin:
                return Decision(go=False, projected=point, upper=upper, model=self.name,
                                reason=f"predicted {point:.3f} (q{self.model.quantile:g} {upper:.3f}) < "
                                       f"{self.cfg.margin:g} x best {best:.3f}")
        return Decision(go=True, projected=point, upper=upper, reason="on track", model=self.name)


MIN_FIT_EXAMPLES = 30


def fit(stores, quantile: float = 0.9) -> LearnedModel:
    """A learned model from one or more stores. Raises UserError when they hold too few examples."""
    examples = [e for store in stores for e in training_examples(store)]
    if len(examples) < MIN_FIT_EXAMPLES:
        raise UserError(f"the stores hold {len(examples)} trained candidates with two or more epochs and recorded "
                        f"features{_without_features(stores)}; fitting needs at least {MIN_FIT_EXAMPLES} (run more, "
                        f"or with more epochs)")
    return LearnedModel(quantile).fit(examples)


def evaluate(stores, model: LearnedModel | None = None, seen: int = 2, folds: int = 5,
             quantile: float = 0.9) -> dict[str, Any]:
    """How well each model predicts the final accuracy from the first `seen` epochs, on families it never
    saw: a grouped K-fold split by seed family (no family on both sides). With `model`, that one model is
    judged on every example instead (it must not have been fitted on these families). Raises UserError
    when the stores are too small. JSON: {"n", "groups", "models": {name: {rmse, pearson, within_5, within_10}}}."""
    import numpy as np
    from sklearn.model_selection import GroupKFold

    examples = [e for store in stores for e in training_examples(store) if len(e[0].epochs) > seen]
    families = sorted({f for _, _, f in examples})
    if len(examples) < MIN_FIT_EXAMPLES or len(families) < 2:
        raise UserError(f"the stores hold {len(examples)} trained candidates with more than {seen} epochs and recorded "
                        f"features, over {len(families)} families{_without_features(stores)}; an evaluation needs at "
                        f"least {MIN_FIT_EXAMPLES} over two families")
    truth = np.array([t for _, t, _ in examples])
    predictions: dict[str, np.ndarray] = {
        "curve": np.array([CurvePredictor.project(x.model_copy(update={"epochs": x.epochs[:seen]}))
                           for x, _, _ in examples]),
        "last_accuracy": np.array([x.epochs[seen - 1].val_accuracy for x, _, _ in examples]),
    }
    learned = np.zeros(len(examples))
    if model is not None:
        learned = np.array([model.predict(x, seen)[0] for x, _, _ in examples])
    else:
        groups = np.array([f for _, _, f in examples])
        for train, test in GroupKFold(n_splits=min(folds, len(families))).split(examples, groups=groups):
            fold = LearnedModel(quantile).fit([examples[i] for i in train])
            for i in test:
                learned[i] = fold.predict(examples[i][0], seen)[0]
    predictions["learned"] = learned
    return {"n": len(examples), "groups": len(families), "seen_epochs": seen,
            "models": {name: _metrics(p, truth) for name, p in predictions.items()}}


def _without_features(stores) -> str:
    """", and N more without features (recorded before features existed)" where there are such."""
    missing = sum(store.db.execute(f"SELECT COUNT(*) FROM candidates WHERE stage='finished' AND {outcomes.sql_trained()} "
                                   "AND (features IS NULL OR features = '{}')").fetchone()[0] for store in stores)
    return f" ({missing} more were recorded without features, by an older version)" if missing else ""


def _metrics(predicted, truth) -> dict[str, float]:
    import numpy as np

    error = predicted - truth
    pearson = float(np.corrcoef(predicted, truth)[0, 1]) if np.std(predicted) > 0 and np.std(truth) > 0 else 0.0
    return {"rmse": round(float(np.sqrt(np.mean(error ** 2))), 4), "pearson": round(pearson, 4),
            "within_5": round(float(np.mean(np.abs(error) <= 0.05)), 4),
            "within_10": round(float(np.mean(np.abs(error) <= 0.10)), 4)}
