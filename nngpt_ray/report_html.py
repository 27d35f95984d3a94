"""`nngpt report RUN_DIR [RUN_DIR...]`: one static HTML page with PNG figures, for people.

Self-contained: the page and its figures sit in one folder and need no network to open. Every figure
overlays all the runs given, so two runs compare at a glance:

1. per cycle: valid rate, novel yield (unique / generated), best and mean validation accuracy;
2. best validation accuracy so far against candidates sent to a trainer;
3. best validation accuracy of each trained network, by seed family;
4. parameters against accuracy, with each run's Pareto front (fewer parameters, higher accuracy);
5. the predictor's decisions: epochs run and epochs saved by stopping early, per cycle;
6. the adapter timeline: when each adapter was trained, switched in or refused by the gate.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from nngpt_ray import outcomes
from nngpt_ray.report import status
from nngpt_ray.rundir import RunDir
from nngpt_ray.store import Store


def collect(run: RunDir) -> dict[str, Any]:
    """What the figures need from one run's store."""
    with Store(run.store, readonly=True) as store:
        summary = status(store)
        rows = store.db.execute(
            f"SELECT id, status, best_accuracy, params, epochs_done, finished, cycle, "
            f"json_extract(spec, '$.origin.family') AS family, json_extract(spec, '$.hyperparameters.epochs') AS planned "
            f"FROM candidates WHERE code IS NOT NULL AND stage='finished' AND {outcomes.sql_sent_to_training()} "
            f"ORDER BY finished, id").fetchall()
        return {"name": run.root.name, "summary": summary, "candidates": [dict(r) for r in rows],
                "adapters": store.adapters(), "cycles": store.cycles(), "events": store.events()}


def render(runs: list[RunDir], out: Path) -> Path:
    """Write `out/index.html` and `out/figures/*.png`; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    data = [collect(r) for r in runs]
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    made = [
        ("Per cycle", _per_cycle(data, figures / "cycles.png")),
        ("Best accuracy so far", _best_so_far(data, figures / "best_so_far.png")),
        ("Accuracy by seed family", _by_family(data, figures / "families.png")),
        ("Parameters and accuracy", _pareto(data, figures / "pareto.png")),
        ("The predictor's decisions", _predictor(data, figures / "predictor.png")),
        ("Adapters", _adapters(data, figures / "adapters.png")),
    ]
    page = out / "index.html"
    page.write_text(_html(data, [(title, path.relative_to(out)) for title, path in made]))
    return page


def _fig(width: float = 7.5, height: float = 4.0):
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=110)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _per_cycle(data, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), dpi=110)
    for run in data:
        cycles = run["summary"]["cycles"]
        xs = [c["cycle"] for c in cycles]
        axes[0].plot(xs, [100 * c["valid"] / c["generated"] if c["generated"] else 0 for c in cycles], "o-",
                     label=run["name"])
        axes[1].plot(xs, [100 * (c.get("novel_yield") or 0) for c in cycles], "o-", label=run["name"])
        axes[2].plot(xs, [100 * (c["best_accuracy"] or 0) for c in cycles], "o-", label=f"{run['name']} best")
        axes[2].plot(xs, [100 * (c["mean_accuracy"] or 0) for c in cycles], "o--", label=f"{run['name']} mean")
    from matplotlib.ticker import MaxNLocator

    for ax, title in zip(axes, ("valid rate (%)", "novel yield (%)", "validation accuracy (%)"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("cycle")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    _legend(axes[2], 7)
    _legend(axes[0], 7)
    return _save(fig, path)


def _best_so_far(data, path: Path) -> Path:
    fig, ax = _fig()
    for run in data:
        best, curve = 0.0, []
        for c in run["candidates"]:
            if outcomes.is_trained(c["status"]) and c["best_accuracy"] is not None:
                best = max(best, c["best_accuracy"])
            curve.append(100 * best)
        ax.plot(range(1, len(curve) + 1), curve, label=run["name"])
    ax.set_xlabel("candidates sent to a trainer")
    ax.set_ylabel("best validation accuracy so far (%)")
    ax.grid(alpha=0.3)
    _legend(ax, 8)
    return _save(fig, path)


def _by_family(data, path: Path) -> Path:
    fig, ax = _fig(9, 4)
    families = sorted({c["family"] or "?" for run in data for c in run["candidates"]})
    for i, run in enumerate(data):
        for j, family in enumerate(families):
            ys = [100 * c["best_accuracy"] for c in run["candidates"] if (c["family"] or "?") == family
                  and outcomes.is_trained(c["status"]) and c["best_accuracy"] is not None]
            xs = [j + (i - (len(data) - 1) / 2) * 0.25] * len(ys)
            ax.scatter(xs, ys, s=14, alpha=0.7, label=run["name"] if j == 0 else None, color=f"C{i}")
    ax.set_xticks(range(len(families)), families, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("best validation accuracy (%)")
    ax.grid(alpha=0.3)
    if data:
        _legend(ax, 8)
    return _save(fig, path)


def _pareto(data, path: Path) -> Path:
    fig, ax = _fig()
    for i, run in enumerate(data):
        points = sorted((c["params"], 100 * c["best_accuracy"]) for c in run["candidates"]
                        if outcomes.is_trained(c["status"]) and c["params"] and c["best_accuracy"] is not None)
        if not points:
            continue
        ax.scatter([p for p, _ in points], [a for _, a in points], s=14, alpha=0.6, color=f"C{i}", label=run["name"])
        front, best = [], -1.0
        for params, accuracy in points:  # fewer parameters first: on the front if better than all smaller ones
            if accuracy > best:
                front.append((params, accuracy))
                best = accuracy
        ax.step([p for p, _ in front], [a for _, a in front], where="post", color=f"C{i}", linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("best validation accuracy (%)")
    ax.grid(alpha=0.3)
    _legend(ax, 8)
    return _save(fig, path)


def _legend(ax, fontsize: int) -> None:
    """A legend where something is labelled (a run with nothing trained has no points to name)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize)


def _predictor(data, path: Path) -> Path:
    fig, ax = _fig()
    width = 0.8 / max(1, len(data))
    for i, run in enumerate(data):
        by_cycle: dict[int, list[int]] = {}
        for c in run["candidates"]:
            if c["epochs_done"]:
                run_saved = by_cycle.setdefault(c["cycle"] or 0, [0, 0])
                run_saved[0] += c["epochs_done"]
                if c["status"] == "stopped_early" and c["planned"]:
                    run_saved[1] += c["planned"] - c["epochs_done"]
        xs = sorted(by_cycle)
        offset = (i - (len(data) - 1) / 2) * width
        ax.bar([x + offset for x in xs], [by_cycle[x][0] for x in xs], width, color=f"C{i}", alpha=0.6,
               label=f"{run['name']}: epochs run")
        ax.bar([x + offset for x in xs], [by_cycle[x][1] for x in xs], width, bottom=[by_cycle[x][0] for x in xs],
               color=f"C{i}", alpha=0.25, hatch="//", label=f"{run['name']}: epochs saved by stopping early")
    ax.set_xticks(sorted({c["cycle"] or 0 for run in data for c in run["candidates"] if c["epochs_done"]}))
    ax.set_xlabel("cycle")
    ax.set_ylabel("epochs")
    ax.grid(alpha=0.3, axis="y")
    _legend(ax, 7)
    return _save(fig, path)


def _adapters(data, path: Path) -> Path:
    fig, ax = _fig(9, 1.2 + 0.9 * len(data))
    for i, run in enumerate(data):
        start = min((c["started"] for c in run["cycles"]), default=0.0)
        for c in run["cycles"]:
            end = c["ended"] or max((e["time"] for e in run["events"]), default=c["started"])
            ax.barh(i, (end - c["started"]) / 60, left=(c["started"] - start) / 60, height=0.5, color=f"C{c['adapter']}",
                    alpha=0.5, edgecolor="black")
            ax.text((c["started"] - start) / 60, i, f" c{c['cycle']}:v{c['adapter']}", va="center", fontsize=7)
        for a in run["adapters"]:
            marker = "v" if a["status"] == "rejected" else "^"
            ax.plot((a["created"] - start) / 60, i + 0.35, marker, color="red" if a["status"] == "rejected" else "green")
    ax.set_yticks(range(len(data)), [r["name"] for r in data])
    ax.set_xlabel("minutes into the run (bars: cycles and their adapter; green ^ adapter trained, red v refused)")
    return _save(fig, path)


def _html(data, figures: list[tuple[str, Path]]) -> str:
    rows = []
    for run in data:
        t = run["summary"]["totals"]
        tests = ", ".join(f"{100 * x['test_accuracy']:.1f}%" for x in run["summary"]["tests"]
                          if x["test_accuracy"] is not None) or "-"
        rows.append(f"<tr><td>{html.escape(run['name'])}</td><td>{len(run['summary']['cycles'])}</td>"
                    f"<td>{t.get('generated', 0)}</td><td>{t.get('valid', 0)}</td><td>{t.get('unique', 0)}</td>"
                    f"<td>{t.get('trained', 0)}</td><td>{t.get('trained_twice', 0)}</td><td>{tests}</td></tr>")
    blocks = "\n".join(f'<h2>{html.escape(title)}</h2>\n<img src="{src.as_posix()}" alt="{html.escape(title)}">'
                       for title, src in figures)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nngpt-ray report: {html.escape(', '.join(r['name'] for r in data))}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}}img{{max-width:100%;border:1px solid #ddd}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head>
<body><h1>nngpt-ray report</h1>
<p>Generated {time.strftime('%Y-%m-%d %H:%M')}. Accuracies are on the validation split (carved from the training
split); "test" is each run's final networks retrained once and scored on the test split.</p>
<table><tr><th>run</th><th>cycles</th><th>generated</th><th>valid</th><th>unique</th><th>trained</th>
<th>trained twice</th><th>test</th></tr>
{chr(10).join(rows)}</table>
{blocks}
<script type="application/json" id="data">{html.escape(json.dumps([r['summary'] for r in data]))}</script>
</body></html>
"""
