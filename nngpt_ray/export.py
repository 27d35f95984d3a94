"""Export a run's store as Parquet tables, for pandas/polars/DuckDB and for the LEMUR-style corpus.

Besides one file per store table, `features.parquet` has one flat row per trained candidate: what the
predictor learns from (size, FLOPs, depth, layers by type, hyperparameters, transform, dataset) and its curve
(accuracy, loss and seconds per epoch) as plain columns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nngpt_ray import outcomes
from nngpt_ray.store import TABLES, Store


def feature_rows(store: Store) -> list[dict[str, Any]]:
    """One row per trained candidate; columns missing for a candidate (an old run without features, a
    hyperparameter another network lacks) are left empty."""
    rows = []
    for c in store.db.execute(
            f"SELECT id, cycle, task, spec, params, features, best_accuracy, epochs_done FROM candidates "
            f"WHERE stage='finished' AND {outcomes.sql_trained()} ORDER BY finished, id"):
        spec = json.loads(c["spec"]) if c["spec"] else {}
        feats = json.loads(c["features"]) if c["features"] else {}
        row: dict[str, Any] = {
            "candidate_id": c["id"], "cycle": c["cycle"], "task": c["task"], "dataset": spec.get("dataset"),
            "method": (spec.get("origin") or {}).get("method"), "family": (spec.get("origin") or {}).get("family"),
            "transform": json.dumps(spec.get("transform", {}), sort_keys=True), "params": c["params"],
            "flops": feats.get("flops"), "depth": feats.get("depth"), "best_accuracy": c["best_accuracy"],
            "epochs_done": c["epochs_done"]}
        row |= {f"layer_{k}": v for k, v in sorted(feats.get("layers", {}).items())}
        row |= {f"hp_{k}": v for k, v in sorted(spec.get("hyperparameters", {}).items())
                if isinstance(v, (int, float, str, bool))}
        for e in store.epochs(c["id"]):
            row |= {f"acc_{e.epoch}": e.val_accuracy, f"loss_{e.epoch}": e.train_loss,
                    f"seconds_{e.epoch}": e.seconds}
        rows.append(row)
    return rows


def _write(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def _column(values: list) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # one network's hyperparameter is a string, another's a number
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows with differing keys as columns over the union of keys (first-seen order), empty where absent."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    return pa.table({n: _column([r.get(n) for r in rows]) for n in names})


def export_parquet(store: Store, out_dir: Path) -> dict[str, int]:
    """Write one Parquet file per table, plus `features.parquet`, into `out_dir`; returns rows per file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in TABLES:
        rows = store.table(name)
        columns = [d[1] for d in store.db.execute(f"PRAGMA table_info({name})")]
        table = pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.null()) for c in columns})
        _write(table, out_dir / f"{name}.parquet")
        counts[name] = len(rows)
    rows = feature_rows(store)
    _write(_table(rows) if rows else pa.table({"candidate_id": pa.array([], pa.string())}),
           out_dir / "features.parquet")
    counts["features"] = len(rows)
    return counts
