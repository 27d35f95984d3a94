"""What a comparison of search methods measured, read from their run stores: no Ray.

Each method ran once per seed into its own run directory (`<out>/<method>-s<seed>/`), all with the same
dataset, split, epochs, trainers, sandbox limits and budget. The budget unit is a *candidate sent to a
trainer*, whether it then trains or fails there (the LLM's broken networks cost budget exactly as a
Tune trial that fails does). Per run:

- best: the best validation accuracy of a trained candidate; top5_mean: the mean of the five best;
- curve: the best-so-far after each *trained* candidate, in the order they finished (as many points as
  `trained`); curve_sent: the best-so-far after each candidate *sent* (a failed one adds a point and
  changes nothing: its x axis is the budget, so `to_95` and TPE@k count on it);
- trainer_seconds: sandboxed training time of all of them; llm_seconds: the LLM's own generation time
  (its extra cost, zero for the searchers); test_accuracy: the run's best network retrained once and
  scored on the test split, the only number here not from the validation split.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nngpt_ray import outcomes
from nngpt_ray.store import Store

METHODS = ("llm", "tpe", "random")


@dataclass
class RunResult:
    method: str
    seed: int
    best: float | None
    top5_mean: float | None
    sent: int
    trained: int
    trainer_seconds: float
    llm_seconds: float
    llm_tokens: int
    curve: list[float]
    curve_sent: list[float]
    test_accuracy: float | None


def run_dir(out: Path, method: str, seed: int) -> Path:
    return out / f"{method}-s{seed}"


def read_run(store: Store, method: str, seed: int) -> RunResult:
    rows = store.db.execute(
        f"SELECT status, best_accuracy, duration_s, finished FROM candidates WHERE code IS NOT NULL AND "
        f"{outcomes.sql_sent_to_training()} AND stage='finished' ORDER BY finished, id").fetchall()
    curve, curve_sent, best_so_far, accuracies = [], [], 0.0, []
    for status, best, _, _ in rows:
        if outcomes.is_trained(status) and best is not None:
            accuracies.append(best)
            best_so_far = max(best_so_far, best)
            curve.append(best_so_far)
        curve_sent.append(best_so_far)
    top = sorted(accuracies, reverse=True)
    llm = store.db.execute("SELECT COALESCE(SUM(seconds), 0), COALESCE(SUM(tokens), 0) FROM generations").fetchone()
    tests = [t["accuracy"] for t in store.tests() if t["accuracy"] is not None]
    return RunResult(method=method, seed=seed, best=top[0] if top else None,
                     top5_mean=statistics.fmean(top[:5]) if top else None, sent=len(rows), trained=len(accuracies),
                     trainer_seconds=round(sum(r[2] or 0.0 for r in rows), 1), llm_seconds=round(llm[0], 1),
                     llm_tokens=int(llm[1]), curve=curve, curve_sent=curve_sent,
                     test_accuracy=tests[0] if tests else None)


def summarize(runs: list[RunResult], dataset: str, budget: int, epochs: int) -> dict[str, Any]:
    """The JSON of `nngpt compare --json` (one line), with the per-method aggregates."""
    overall = max((r.best for r in runs if r.best is not None), default=None)
    methods: dict[str, Any] = {}
    for method in dict.fromkeys(r.method for r in runs):
        mine = sorted((r for r in runs if r.method == method), key=lambda r: r.seed)
        bests = [r.best for r in mine if r.best is not None]
        reach = [to_reach(r.curve_sent, 0.95 * overall) if overall else None for r in mine]
        methods[method] = {
            "runs": [asdict(r) | {"to_95": n} for r, n in zip(mine, reach, strict=True)],
            "best_mean": _round(statistics.fmean(bests)) if bests else None,
            "best_std": _round(statistics.pstdev(bests)) if len(bests) > 1 else 0.0 if bests else None,
            "top5_mean": _mean(r.top5_mean for r in mine), "to_95_mean": _mean(reach),
            "trainer_seconds": _mean(r.trainer_seconds for r in mine), "llm_seconds": _mean(r.llm_seconds for r in mine),
            "test_accuracy_mean": _mean(r.test_accuracy for r in mine),
        }
    return {"dataset": dataset, "budget": budget, "epochs": epochs, "overall_best": overall, "methods": methods}


def to_reach(curve: list[float], target: float) -> int | None:
    """Candidates sent until the best-so-far first reached `target` (None: never)."""
    return next((i + 1 for i, value in enumerate(curve) if value >= target), None)


def table(summary: dict[str, Any]):
    from rich import box
    from rich.table import Table

    t = Table(title=f"{summary['dataset']}: budget {summary['budget']} candidates, {summary['epochs']} epochs, "
                    f"{_seeds(summary)} seeds", box=box.SIMPLE_HEAD)
    for name in ("method", "best (mean ± sd)", "top-5 mean", "to 95% of best", "trainer-s", "LLM-s", "test acc"):
        t.add_column(name, justify="right")
    for method, m in summary["methods"].items():
        reached = [r["to_95"] for r in m["runs"]]
        reach = f"{m['to_95_mean']:.0f}" if m["to_95_mean"] is not None else "never"
        if m["to_95_mean"] is not None and None in reached:
            reach += f" ({reached.count(None)} never)"
        t.add_row(method, f"{_pct(m['best_mean'])} ± {_pct(m['best_std'])}", _pct(m["top5_mean"]), reach,
                  f"{m['trainer_seconds']:.0f}", f"{m['llm_seconds']:.0f}", _pct(m["test_accuracy_mean"]))
    t.caption = ("accuracies on the validation split (carved from training), but 'test acc': each run's best network "
                 "retrained once and scored on the test split; 'to 95% of best': candidates sent until the "
                 f"best-so-far reached 95% of the best any run found ({_pct(summary['overall_best'])})")
    return t


def plot(summary: dict[str, Any], path: Path) -> Path:
    """Best-so-far validation accuracy, one line per method (the mean over seeds, shaded between the seeds'
    lowest and highest): on the left against trained candidates, on the right against candidates sent to a
    trainer (the budget, failures included). A seed that trained fewer candidates holds its last value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120, sharey=True)
    for ax, key, label in ((axes[0], "curve", "trained candidates"),
                           (axes[1], "curve_sent", "candidates sent to a trainer (the budget)")):
        for i, (method, m) in enumerate(summary["methods"].items()):
            curves = [r[key] for r in m["runs"] if r[key]]
            if not curves:
                continue
            n = max(len(c) for c in curves)
            padded = [c + [c[-1]] * (n - len(c)) for c in curves]
            xs = list(range(1, n + 1))
            columns = list(zip(*padded, strict=True))
            ax.plot(xs, [statistics.fmean(col) for col in columns], color=f"C{i}", linewidth=2,
                    label=f"{method} (best {_pct(m['best_mean'])})")
            ax.fill_between(xs, [min(col) for col in columns], [max(col) for col in columns], color=f"C{i}",
                            alpha=0.2)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    axes[0].set_ylabel("best validation accuracy so far")
    fig.suptitle(f"{summary['dataset']}, {summary['epochs']} epochs, budget {summary['budget']}, "
                 f"{_seeds(summary)} seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


HPO_METHODS = (("defaults", "the network's own defaults"), ("llm_base", "one-shot LLM, base model"),
               ("llm_tuned", "one-shot LLM, fine-tuned"), ("tpe_1", "TPE, 1 trial"), ("tpe_5", "TPE, 5 trials"),
               ("tpe_20", "TPE, 20 trials"))


def hpo_summary(rows: list[dict[str, Any]], dataset: str, epochs: int, held_out: list[str], trained_on: list[str],
                examples: int, parse_failures: dict[str, int]) -> dict[str, Any]:
    """Per held-out network, each method's accuracy and its regret to the best any evaluation found for
    that network (the TPE trials beyond 20 included, when there are)."""
    for row in rows:
        row["best_found"] = max(v for k, v in row.items() if k != "network" and isinstance(v, float))
    methods = {}
    for key, label in HPO_METHODS:
        accuracies = [r[key] for r in rows]
        methods[key] = {"label": label, "mean_accuracy": _mean(accuracies),
                        "mean_regret": _mean(r["best_found"] - r[key] for r in rows)}
    return {"mode": "hpo", "dataset": dataset, "epochs": epochs, "held_out": held_out, "trained_on": trained_on,
            "examples": examples, "parse_failures": parse_failures, "networks": rows, "methods": methods}


def hpo_table(summary: dict[str, Any]):
    from rich import box
    from rich.table import Table

    t = Table(title=f"one-shot hyperparameters on {len(summary['networks'])} held-out networks "
                    f"({summary['dataset']}, {summary['epochs']} epochs)", box=box.SIMPLE_HEAD)
    for name in ("method", "mean accuracy", "mean regret"):
        t.add_column(name, justify="right")
    for m in summary["methods"].values():
        t.add_row(m["label"], _pct(m["mean_accuracy"]), _pct(m["mean_regret"]))
    failures = summary["parse_failures"]
    t.caption = (f"held out: {', '.join(summary['held_out'])}; the LLM learned from the best setting of "
                 f"{summary['examples']} networks of {', '.join(summary['trained_on'])} (and mutants). Unparsable "
                 f"answers score 0: base {failures.get('base', 0)}, fine-tuned {failures.get('tuned', 0)}. Regret: the "
                 f"best accuracy any method found for the network minus the method's (validation split).")
    return t


def save(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2))


def _seeds(summary: dict[str, Any]) -> int:
    """Seeds per method (every method runs the same seeds)."""
    return len(next(iter(summary["methods"].values()))["runs"])


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return _round(statistics.fmean(values)) if values else None


def _round(value: float) -> float:
    return round(value, 4) if math.isfinite(value) else value


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
