"""What the early-stop gate saves and what it costs, replayed on candidates trained to their full budget.

    python bench/predictor_savings.py RUN_DIR [RUN_DIR...] [--margins 0.5,0.7,0.8,0.9,0.95] [--json]

The runs must have trained every candidate to its full epoch budget with the gate off (e.g. a random
search, `nngpt compare --methods random --epochs 4`, or `--set predictor.kind=none`). For each store,
in the order its candidates finished, the gate is replayed after every epoch: the curve rule, and the
learned model with each candidate's predictions made by a model fitted on the *other* families (grouped
folds). A stopped candidate keeps the accuracies it had reached. Per model and margin: the share of
epochs and of trainer-seconds saved, the best accuracy lost (points, against running everything), and
how many of the true top 5 networks were stopped.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from nngpt_ray.config import PredictorConfig
from nngpt_ray.predictor import CurvePredictor, LearnedModel, LearnedPredictor, one_openmp_thread, training_examples
from nngpt_ray.rundir import RunDir
from nngpt_ray.store import Store


def fold_models(examples, folds: int = 5) -> dict[str, LearnedModel]:
    """family -> a model fitted without that family."""
    from sklearn.model_selection import GroupKFold

    families = np.array([f for _, _, f in examples])
    models = {}
    for train, test in GroupKFold(n_splits=min(folds, len(set(families)))).split(examples, groups=families):
        model = LearnedModel().fit([examples[i] for i in train])
        for family in set(families[test]):
            models[family] = model
    return models


def replay(runs: list[list], gate, models: dict[str, LearnedModel] | None) -> dict:
    used = total = 0
    seconds_used = seconds_total = 0.0
    best_with, best_without = 0.0, 0.0
    stopped_ids = set()
    everything = [e for run in runs for e in run]
    top5 = {id(e) for e in sorted(everything, key=lambda e: -e[1])[:5]}
    for run in runs:
        gate.finals.clear()
        for example in run:
            x, final, family = example
            if models is not None:
                gate.model = models[family]
            epochs = x.epochs
            stop_at = len(epochs)
            for k in range(1, len(epochs)):
                if not gate.decide(x.model_copy(update={"epochs": epochs[:k]})).go:
                    stop_at = k
                    break
            used += stop_at
            total += len(epochs)
            seconds_used += sum(e.seconds for e in epochs[:stop_at])
            seconds_total += sum(e.seconds for e in epochs)
            reached = max(e.val_accuracy for e in epochs[:stop_at])
            best_with, best_without = max(best_with, reached), max(best_without, final)
            if stop_at < len(epochs):
                stopped_ids.add(id(example))
            gate.observe(x.dataset, reached)  # the gate learns what the run actually got
    return {"epochs_saved": round(1 - used / total, 4), "seconds_saved": round(1 - seconds_used / seconds_total, 4),
            "best_lost_points": round(100 * (best_without - best_with), 2), "top5_stopped": len(top5 & stopped_ids),
            "candidates": len(everything), "stopped": len(stopped_ids)}


def main() -> None:
    one_openmp_thread()  # before scikit-learn loads
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--margins", default="0.5,0.7,0.8,0.9,0.95")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = []
    for d in args.run_dirs:
        with Store(RunDir.existing(d).store, readonly=True) as store:
            runs.append(training_examples(store))  # in the order the candidates finished
    everything = [e for run in runs for e in run]
    models = fold_models(everything)
    rows = []
    for margin in (float(m) for m in args.margins.split(",")):
        cfg = PredictorConfig(margin=margin)
        rows.append({"model": "curve", "margin": margin, **replay(runs, CurvePredictor(cfg), None)})
        learned = LearnedPredictor(PredictorConfig(kind="learned", margin=margin), next(iter(models.values())))
        rows.append({"model": "learned", "margin": margin, **replay(runs, learned, models)})
    print(f"{'model':8s} {'margin':>6s} {'epochs saved':>12s} {'seconds saved':>13s} {'best lost':>9s} "
          f"{'top-5 stopped':>13s} {'stopped':>8s}")
    for r in rows:
        print(f"{r['model']:8s} {r['margin']:6.2f} {100 * r['epochs_saved']:11.1f}% {100 * r['seconds_saved']:12.1f}% "
              f"{r['best_lost_points']:8.2f}p {r['top5_stopped']:>13d} {r['stopped']:>4d}/{r['candidates']}")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
