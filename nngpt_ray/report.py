"""Per-cycle summaries of a run: the JSON of `nngpt status --json` and the table people read.

Every count comes from the store through the definitions in `outcomes`, so `nngpt status`, the live
progress and the run's summary always agree. Accuracies are validation accuracies; the `tests` list
holds the only test-split scores a run makes (its final networks, retrained once).
"""

from __future__ import annotations

import json
from typing import Any

from rich import box
from rich.table import Table

from nngpt_ray.store import Store

CYCLE_FIELDS = ("cycle", "generated", "valid", "unique", "duplicates", "near_duplicates", "trained",
                "best_accuracy", "mean_accuracy", "adapter", "epochs_run", "epochs_saved", "stopped")
_COUNTS = ("generated", "valid", "unique", "duplicates", "near_duplicates", "trained", "adapter", "epochs_run",
           "epochs_saved", "stopped")


def cycle_rows(stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cycles = []
    for row in stats:
        item = {k: row[k] for k in CYCLE_FIELDS}
        for k in _COUNTS:
            item[k] = int(item[k] or 0)
        for k in ("best_accuracy", "mean_accuracy"):
            item[k] = round(item[k], 4) if item[k] is not None else None
        cycles.append(item)
    return cycles


def status(store: Store) -> dict[str, Any]:
    splits = store.meta("splits")
    tests = [{"candidate_id": t["candidate_id"], "split": t["split"], "test_accuracy": t["accuracy"],
              "val_accuracy": t["val_accuracy"], "status": t["status"]} for t in store.tests()]
    cycles = cycle_rows(store.cycle_stats())
    novelty = novelty_rows(store)
    for c in cycles:
        c.update(novelty.get(c["cycle"], {}))
    return {"cycles": cycles, "totals": store.totals(), "tests": tests, "splits": json.loads(splits) if splits else None}


def novelty_rows(store: Store) -> dict[int, dict[str, Any]]:
    """Per cycle, what the valid rate alone hides: novel yield (unique / generated), the distinct seed
    families among the unique, their mean pairwise MinHash similarity (lower is more diverse), their mean
    first-epoch validation accuracy, and what the LLM spent per unique candidate."""
    from nngpt_ray.corpus import family_of
    from nngpt_ray.dedup import mean_pairwise_similarity

    unique, cost = store.unique_by_cycle(), store.generation_cost()
    out = {}
    for row in store.cycle_stats():
        cycle, rows = row["cycle"], unique.get(row["cycle"], [])
        firsts = [r["first"] for r in rows if r["first"] is not None]
        seconds, tokens = cost.get(cycle, (0.0, 0))
        similarity = mean_pairwise_similarity([r["code"] for r in rows])
        out[cycle] = {
            "novel_yield": round(len(rows) / row["generated"], 4) if row["generated"] else None,
            "families": len({r["family"] or family_of(r["code"]) for r in rows}),  # older stores lack it
            "diversity_similarity": round(similarity, 4) if similarity is not None else None,
            "first_epoch_accuracy": round(sum(firsts) / len(firsts), 4) if firsts else None,
            "llm_seconds_per_unique": round(seconds / len(rows), 2) if rows else None,
            "llm_tokens_per_unique": round(tokens / len(rows), 1) if rows else None,
        }
    return out


def status_table(summary: dict[str, Any], title: str = "nngpt-ray run") -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)  # nine columns fit in 80
    for name in ("cycle", "adapter", "generated", "valid", "valid%", "unique", "trained", "best", "mean"):
        table.add_column(name, justify="right", no_wrap=True)
    for c in summary["cycles"]:
        table.add_row(str(c["cycle"]), f"v{c['adapter']}", str(c["generated"]), str(c["valid"]),
                      _rate(c["valid"], c["generated"]), str(c["unique"]), str(c["trained"]),
                      _pct(c["best_accuracy"]), _pct(c["mean_accuracy"]))
    t = summary["totals"]
    if t:
        table.add_section()
        table.add_row("all", "", str(t["generated"]), str(t["valid"]), _rate(t["valid"], t["generated"]),
                      str(t["unique"]), str(t["trained"]), "", "")
    caption = [f"best/mean: validation accuracy of the trained candidates; trained twice: {t.get('trained_twice', 0)}"]
    for test in summary.get("tests") or []:
        if test["test_accuracy"] is not None:
            caption.append(f"test split, {test['candidate_id']}: {_pct(test['test_accuracy'])} "
                           f"(validation {_pct(test['val_accuracy'])})")
    table.caption = "\n".join(caption)
    return table


def novelty_table(summary: dict[str, Any], title: str = "novelty and training per cycle") -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("cycle", "dup", "near", "new%", "fam", "sim", "1st ep", "LLM s/new", "epochs", "saved"):
        table.add_column(name, justify="right", no_wrap=True)
    for c in summary["cycles"]:
        table.add_row(str(c["cycle"]), str(c["duplicates"]), str(c["near_duplicates"]),
                      "-" if c.get("novel_yield") is None else f"{100 * c['novel_yield']:.0f}",
                      str(c.get("families", "-")),
                      "-" if c.get("diversity_similarity") is None else f"{c['diversity_similarity']:.2f}",
                      _pct(c.get("first_epoch_accuracy")),
                      "-" if c.get("llm_seconds_per_unique") is None else f"{c['llm_seconds_per_unique']:.1f}",
                      str(c["epochs_run"]), f"{c['epochs_saved']} ({c['stopped']})")
    table.caption = ("new% = novel yield, unique / generated; fam = seed families among the unique; sim = their mean pairwise "
                     "MinHash similarity (lower: more diverse); 1st ep = their mean first-epoch validation accuracy; "
                     "epochs run, and saved by the predictor (candidates it stopped)")
    return table


def runs_table(rows: list[dict[str, Any]]) -> Table:
    """Runs side by side (`nngpt status A B ...`): what each generated, its valid rate and novel yield over the
    whole run, and whether its prompts retrieved NN-RAG blocks."""
    table = Table(title="runs side by side", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("run", "retrieval", "generated", "valid%", "new%", "trained", "best acc"):
        table.add_column(name, justify="right" if name not in ("run", "retrieval") else "left", no_wrap=True)
    for r in rows:
        table.add_row(r["run"], r["retrieval"], str(r["generated"]), _rate(r["valid"], r["generated"]),
                      _rate(r["unique"], r["generated"]), str(r["trained"]), _pct(r["best_accuracy"]))
    table.caption = "valid% = completions that parsed and passed the contract; new% = novel yield (unique / generated)"
    return table


def run_row(name: str, summary: dict[str, Any], retrieval: str) -> dict[str, Any]:
    cycles = summary["cycles"]
    best = [c["best_accuracy"] for c in cycles if c.get("best_accuracy") is not None]
    return {"run": name, "retrieval": retrieval, **{k: sum(c[k] for c in cycles) for k in
                                                   ("generated", "valid", "unique", "trained")},
            "best_accuracy": max(best) if best else None}


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}" if whole else "-"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
