"""Export a run's store as Parquet tables, for pandas/polars/DuckDB and for the LEMUR-style corpus."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nngpt_ray.store import TABLES, Store


def export_parquet(store: Store, out_dir: Path) -> dict[str, int]:
    """Write one Parquet file per table into `out_dir`; returns rows written per table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in TABLES:
        rows = store.table(name)
        columns = [d[1] for d in store.db.execute(f"PRAGMA table_info({name})")]
        table = pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.null()) for c in columns})
        tmp = out_dir / f".{name}.parquet.tmp"
        pq.write_table(table, tmp)
        tmp.replace(out_dir / f"{name}.parquet")
        counts[name] = len(rows)
    return counts
