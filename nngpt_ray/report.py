"""Per-cycle summaries of a run: the JSON of `nngpt status --json` and the table people read."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

from nngpt_ray.store import Store

CYCLE_FIELDS = ("cycle", "generated", "valid", "unique", "trained", "best_accuracy", "mean_accuracy", "adapter")


def status(store: Store) -> dict[str, Any]:
    cycles = []
    for row in store.cycle_stats():
        item = {k: row[k] for k in CYCLE_FIELDS}
        for k in ("generated", "valid", "unique", "trained", "adapter"):
            item[k] = int(item[k] or 0)
        for k in ("best_accuracy", "mean_accuracy"):
            item[k] = round(item[k], 4) if item[k] is not None else None
        cycles.append(item)
    return {"cycles": cycles, "totals": store.totals()}


def status_table(summary: dict[str, Any], title: str = "nngpt-ray run") -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)  # nine columns fit in 80
    for name in ("cycle", "adapter", "generated", "valid", "valid%", "unique", "trained", "best", "mean"):
        table.add_column(name, justify="right", no_wrap=True)
    for c in summary["cycles"]:
        rate = f"{100 * c['valid'] / c['generated']:.0f}" if c["generated"] else "-"
        table.add_row(str(c["cycle"]), f"v{c['adapter']}", str(c["generated"]), str(c["valid"]), rate,
                      str(c["unique"]), str(c["trained"]), _pct(c["best_accuracy"]), _pct(c["mean_accuracy"]))
    t = summary["totals"]
    table.add_section()
    table.add_row("all", "", str(t["generated"]), str(t["valid"]),
                  f"{100 * t['valid'] / t['generated']:.0f}" if t["generated"] else "-", str(t["unique"]),
                  str(t["trained"]), "", "")
    table.caption = f"best/mean: validation accuracy of the trained candidates; trained twice: {t['trained_twice']}"
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
