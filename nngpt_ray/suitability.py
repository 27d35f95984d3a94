"""On which of two datasets does a network do better? NNGPT's cross-dataset classifier, and the transfer
that gives it data.

- `transfer`: a run's trained networks trained again, same code, hyperparameters and transform, on a
  second dataset, into a run directory of their own (resumable: what is there is not trained again);
- a network's *suitability label* for datasets (A, B): A when it ranks higher among A's networks than
  among B's (percentile of its best accuracy among the networks evaluated on both), B otherwise;
- `SuitabilityModel`: gradient boosting from what is known before training (the measured size and layer
  counts, the hyperparameters; `predictor.network_features`) to that label. `evaluate` judges it on
  families it never saw (grouped folds by seed family) beside the majority baseline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nngpt_ray import modelfile, outcomes
from nngpt_ray.failures import UserError
from nngpt_ray.predictor import PredictorInput, network_features, trained_inputs

FEATURES = tuple(network_features(PredictorInput(code="", hyperparameters={}, dataset="digits", classes=10,
                                                 epochs=[], total_epochs=1)))
MIN_PAIRS = 20
NNGPT_ACCURACY = 0.80  # the paper's cross-dataset classifier, from code alone (REFERENCE.md)


def network_key(x: PredictorInput) -> str:
    """The same network on any dataset: its code, hyperparameters but the epoch count, and transform."""
    from nngpt_ray.spec import code_hash

    prm = {k: v for k, v in x.hyperparameters.items() if k != "epochs"}
    return json.dumps([code_hash(x.code), prm, x.transform], sort_keys=True)


# ---------------------------------------------------------------- data: a run's networks on another dataset


def transfer(source, dest_dir, cfg, dataset: str, *, epochs: int | None = None, limit: int | None = None,
             on_result: Callable[[int, int, Any], None] | None = None) -> dict[str, int]:
    """Train the trained networks of store `source` again on `dataset`, one at a time in the sandbox, into
    run directory `dest_dir` (created, or resumed). Returns counts: networks, done before, trained now."""
    from nngpt_ray.rundir import RunDir
    from nngpt_ray.spec import CandidateSpec
    from nngpt_ray.store import Store
    from nngpt_ray.trainer import Trainer

    rows = source.db.execute(f"SELECT spec FROM candidates WHERE stage='finished' AND {outcomes.sql_trained()} "
                             "ORDER BY finished, id").fetchall()
    specs = [CandidateSpec.model_validate_json(r[0]) for r in rows][:limit]
    if not specs:
        raise UserError("the source run has no trained network to transfer")
    cfg = cfg.model_copy(deep=True)
    cfg.data.dataset = dataset
    run = RunDir(Path(dest_dir).expanduser()).create()
    run.config.write_text(cfg.to_yaml())
    run.prepare_store(cfg)
    counts = {"networks": len(specs), "done_before": 0, "trained": 0}
    trainer = Trainer(cfg, owner=f"transfer@{run.root.name}")
    try:
        with Store(run.store) as store:
            for i, original in enumerate(specs, 1):
                prm = original.hyperparameters.model_copy(update={"epochs": epochs} if epochs else {})
                spec = CandidateSpec(code=original.code, hyperparameters=prm, transform=original.transform,
                                     dataset=dataset, origin=original.origin.model_copy(
                                         update={"task": "transfer", "parents": [original.id]}))
                store.add_candidate(spec.id, task="transfer", method="transfer", cycle=0, spec=spec)
                if store.candidate(spec.id)["stage"] == "finished":
                    counts["done_before"] += 1
                    continue
                attempt = store.start_attempt(spec.id, trainer.owner)
                result = trainer.train(spec, on_epoch=lambda epoch, _features: store.record_epoch(spec.id, epoch) or True)
                store.complete(result, attempt)
                counts["trained"] += 1
                if on_result:
                    on_result(i, len(specs), result)
    finally:
        trainer.close()
    return counts


# ---------------------------------------------------------------- the classifier


def pairs(stores, datasets: tuple[str, str] | None = None) -> tuple[tuple[str, str], list[dict[str, Any]]]:
    """The networks trained on both datasets of a pair (by default the pair with most such networks):
    ((A, B), [{"x", "family", "rank_a", "rank_b", "label"}]) where label 1 means A."""
    by_network: dict[str, dict[str, tuple[PredictorInput, float, str]]] = {}
    for store in stores:
        for x, best, family in trained_inputs(store):
            seen = by_network.setdefault(network_key(x), {})
            if x.dataset not in seen or best > seen[x.dataset][1]:
                seen[x.dataset] = (x, best, family)
    if datasets is None:
        counts: dict[tuple[str, str], int] = {}
        for results in by_network.values():
            names = sorted(results)
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            found = sorted({d for r in by_network.values() for d in r})
            raise UserError(f"no network of these runs was trained on two datasets (datasets found: "
                            f"{', '.join(found) or 'none'}); train a run's networks on a second dataset with "
                            f"`nngpt transfer RUN_DIR --dataset NAME`")
        datasets = max(counts, key=lambda k: (counts[k], k))
    a, b = datasets
    both = [(r[a], r[b]) for r in by_network.values() if a in r and b in r]
    rank_a, rank_b = _percentiles([ra[1] for ra, _ in both]), _percentiles([rb[1] for _, rb in both])
    rows = [{"x": ra[0], "family": ra[2], "accuracy_a": ra[1], "accuracy_b": rb[1], "rank_a": pa, "rank_b": pb,
             "label": int(pa > pb)} for (ra, rb), pa, pb in zip(both, rank_a, rank_b) if pa != pb]
    return (a, b), rows


def _percentiles(values: list[float]) -> list[float]:
    """Each value's rank among them, 0 (lowest) to 1 (highest); ties share their mean rank."""
    from scipy.stats import rankdata

    if len(values) < 2:
        return [0.5] * len(values)
    return [float(r) for r in (rankdata(values) - 1) / (len(values) - 1)]


def _matrix(rows: list[dict[str, Any]]):
    import numpy as np

    return np.array([[network_features(r["x"])[f] for f in FEATURES] for r in rows], dtype=float)


class SuitabilityModel:
    def __init__(self, datasets: tuple[str, str], seed: int = 0) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.datasets = datasets
        self.model = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.06, max_leaf_nodes=7,
                                                    min_samples_leaf=5, random_state=seed)
        self.examples = 0
        self.columns = None  # which FEATURES the fitted model reads

    def fit(self, rows: list[dict[str, Any]]) -> SuitabilityModel:
        import numpy as np

        labels = np.array([r["label"] for r in rows])
        if len(set(labels)) < 2:
            raise UserError(f"every network ranks higher on {self.datasets[1 - labels[0]]}: nothing to learn")
        xs = _matrix(rows)
        self.columns = ~np.isnan(xs).all(axis=0)  # a feature no network has is left out
        self.model.fit(xs[:, self.columns], labels)
        self.examples = len(rows)
        return self

    def predict(self, rows: list[dict[str, Any]]):
        return self.model.predict(_matrix(rows)[:, self.columns])

    def save(self, path: Path) -> Path:
        return modelfile.save(path, "suitability", FEATURES, {"datasets": self.datasets, "examples": self.examples,
                                                              "model": self.model, "columns": self.columns})

    @classmethod
    def load(cls, path: Path) -> SuitabilityModel:
        saved = modelfile.load(path, "suitability", FEATURES, "nngpt suitability fit RUN_DIR...")
        model = cls(tuple(saved["datasets"]))
        model.model, model.examples, model.columns = saved["model"], saved["examples"], saved["columns"]
        return model


def _enough(rows: list[dict[str, Any]], datasets: tuple[str, str]) -> None:
    families = {r["family"] for r in rows}
    if len(rows) < MIN_PAIRS or len(families) < 2:
        raise UserError(f"{len(rows)} networks over {len(families)} families were trained on both {datasets[0]} and "
                        f"{datasets[1]}; the classifier needs at least {MIN_PAIRS} over two families "
                        f"(`nngpt transfer` trains a run's networks on a second dataset)")


def fit(stores, datasets: tuple[str, str] | None = None) -> SuitabilityModel:
    datasets, rows = pairs(stores, datasets)
    _enough(rows, datasets)
    return SuitabilityModel(datasets).fit(rows)


def evaluate(stores, model: SuitabilityModel | None = None, datasets: tuple[str, str] | None = None,
             folds: int = 5) -> dict[str, Any]:
    """Accuracy on families held out (grouped K-fold; or of `model` on every network), beside the majority
    baseline (the training side's most common label) and NNGPT's reported 80%."""
    import numpy as np
    from sklearn.model_selection import GroupKFold

    datasets, rows = pairs(stores, model.datasets if model else datasets)
    _enough(rows, datasets)
    labels = np.array([r["label"] for r in rows])
    groups = np.array([r["family"] for r in rows])
    if model is not None:
        predicted = model.predict(rows)
        majority = np.full(len(rows), int(labels.mean() >= 0.5))
    else:
        predicted, majority = np.zeros(len(rows), dtype=int), np.zeros(len(rows), dtype=int)
        for train, test in GroupKFold(n_splits=min(folds, len(set(groups)))).split(rows, groups=groups):
            train_labels = labels[train]
            majority[test] = int(train_labels.mean() >= 0.5)
            if len(set(train_labels)) < 2:  # one class only on the training side: the model can only say that
                predicted[test] = train_labels[0]
                continue
            fold = SuitabilityModel(datasets).fit([rows[i] for i in train])
            predicted[test] = fold.predict([rows[i] for i in test])
    return {"datasets": list(datasets), "n": len(rows), "groups": len(set(groups)),
            "share_a": round(float(labels.mean()), 4),
            "models": {"learned": {"accuracy": round(float(np.mean(predicted == labels)), 4)},
                       "majority": {"accuracy": round(float(np.mean(majority == labels)), 4)}},
            "nngpt_reported": NNGPT_ACCURACY}
