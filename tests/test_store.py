"""The SQLite store: idempotent writes, integrity checks, Parquet export."""

from __future__ import annotations

import sqlite3

import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from nngpt_ray.export import export_parquet
from nngpt_ray.failures import FailureKind, StoreError
from nngpt_ray.report import status
from nngpt_ray.rundir import RunDir
from nngpt_ray.spec import CandidateSpec, EpochResult, EvalResult, Origin
from nngpt_ray.store import Store

CODE = "import torch\n\ndef supported_hyperparameters():\n    return {'lr'}\n\nclass Net: pass\n"


def spec(i: int, cycle: int = 0) -> CandidateSpec:
    return CandidateSpec(code=CODE + f"# {i}\nX = {i}\n", origin=Origin(task="fill", cycle=cycle, sample=str(i)))


def result(s: CandidateSpec, accs: list[float], failure=None) -> EvalResult:
    return EvalResult(candidate_id=s.id, failure=failure,
                      epochs=[EpochResult(epoch=i + 1, val_accuracy=a, seconds=1.0) for i, a in enumerate(accs)])


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store.sqlite", create=True)
    yield s
    s.close()


def test_writes_are_idempotent_by_candidate_id(store):
    s = spec(1)
    assert store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    assert not store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    attempt = store.start_attempt(s.id, "trainer-0")
    store.record_epoch(s.id, EpochResult(epoch=1, val_accuracy=0.5, seconds=1))
    store.record_epoch(s.id, EpochResult(epoch=1, val_accuracy=0.6, seconds=1))  # a re-run replaces, never adds
    assert [e.val_accuracy for e in store.epochs(s.id)] == [0.6]
    assert store.finish(result(s, [0.6, 0.8]))
    store.end_attempt(s.id, attempt, "completed")
    assert not store.finish(result(s, [0.1]))  # the first final result wins
    row = store.candidate(s.id)
    assert row["stage"] == "finished" and row["status"] == "ok" and row["best_accuracy"] == 0.8
    assert [e.val_accuracy for e in store.epochs(s.id)] == [0.6, 0.8]
    assert store.totals()["trained_twice"] == 0


def test_trained_twice_counts_completed_attempts(store):
    s = spec(2)
    store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    for _ in range(2):
        store.end_attempt(s.id, store.start_attempt(s.id, "t"), "completed")
    assert store.totals()["trained_twice"] == 1


def test_cycle_statistics(store):
    store.start_cycle(0, 0)
    good, bad, dup = spec(3), spec(4), spec(5)
    store.add_candidate("p1", task="fill", cycle=0, status=FailureKind.PARSE, error="no code")
    for s in (good, bad):
        store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    store.add_candidate(dup.id, task="fill", cycle=0, spec=dup, status=FailureKind.DUPLICATE, similar_to=good.id,
                        similarity=1.0)
    store.finish(result(good, [0.7, 0.9]))
    store.finish(result(bad, [], failure=FailureKind.FORWARD))
    summary = status(store)
    # `bad` parsed but could not be built: not a working network, so not valid (nor unique)
    assert summary["cycles"] == [{"cycle": 0, "generated": 4, "valid": 2, "unique": 1, "trained": 1,
                                  "best_accuracy": 0.9, "mean_accuracy": 0.9, "adapter": 0}]
    assert summary["totals"] == {"generated": 4, "valid": 2, "unique": 1, "trained": 1, "trained_twice": 0}
    assert [c for c, _ in store.unique_codes()] == [good.id, bad.id]


def test_wal_mode_and_readonly_reader(tmp_path, store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s = spec(6)
    store.add_candidate(s.id, task="fill", spec=s)
    reader = Store(store.path, readonly=True)
    assert reader.candidate(s.id)["code"] == s.code
    with pytest.raises(sqlite3.OperationalError):
        reader.add_candidate("x", task="fill")


def test_schema_version_mismatch_is_a_clear_error(store):
    store.set_meta("schema_version", "99")
    with pytest.raises(StoreError, match="schema version 99.*reads version 1"):
        Store(store.path)


@pytest.mark.parametrize("content", [b"hello, I am not a database" * 100, b""])
def test_foreign_or_corrupt_files(tmp_path, content):
    path = tmp_path / "store.sqlite"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not an nngpt-ray run store"):
        Store(path)


def test_foreign_sqlite_database(tmp_path):
    path = tmp_path / "other.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="SQLite file but not an nngpt-ray run store"):
        Store(path)


def test_cli_on_bad_run_directories(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "store.sqlite").write_bytes(b"garbage" * 1000)
    for target, words in ((junk, "not an nngpt-ray run store"), (tmp_path / "nope", "does not exist"),
                          (tmp_path, "has no store.sqlite")):
        proc = run_cli("status", str(target))
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and "Traceback" not in proc.stderr


def test_parquet_export(tmp_path, store):
    s = spec(7, cycle=0)
    store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    store.finish(result(s, [0.5, 0.75]))
    counts = export_parquet(store, tmp_path / "export")
    assert counts["candidates"] == 1 and counts["epochs"] == 2 and counts["adapters"] == 0
    table = pq.read_table(tmp_path / "export" / "epochs.parquet").to_pylist()
    assert [r["val_accuracy"] for r in sorted(table, key=lambda r: r["epoch"])] == [0.5, 0.75]


def test_status_and_export_commands(tmp_path):
    run = RunDir(tmp_path / "run").create()
    store = Store(run.store, create=True)
    s = spec(8, cycle=0)
    store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    store.finish(result(s, [0.6]))
    store.close()
    proc = run_cli("status", str(run.root), "--json")
    assert proc.returncode == 0
    assert '"trained_twice": 0' in proc.stdout
    proc = run_cli("export", str(run.root))
    assert proc.returncode == 0 and (run.root / "export" / "candidates.parquet").exists()
