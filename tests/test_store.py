"""The SQLite store: one-transaction completion, idempotent writes, migrations, integrity checks, export."""

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
from nngpt_ray.store import SCHEMA_VERSION, Store

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


def test_completion_is_one_transaction_and_the_first_result_wins(store):
    s = spec(1)
    assert store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    assert not store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    attempt = store.start_attempt(s.id, "trainer-0")
    store.record_epoch(s.id, EpochResult(epoch=1, val_accuracy=0.5, seconds=1))
    store.record_epoch(s.id, EpochResult(epoch=1, val_accuracy=0.6, seconds=1))  # a re-run replaces, never adds
    assert [e.val_accuracy for e in store.epochs(s.id)] == [0.6]
    assert store.candidate(s.id)["stage"] == "running"
    assert store.complete(result(s, [0.6, 0.8]), attempt)
    row = store.candidate(s.id)
    assert (row["stage"], row["status"], row["best_accuracy"], row["epochs_done"]) == ("finished", "ok", 0.8, 2)
    assert [(a["attempt"], a["outcome"]) for a in store.attempts(s.id)] == [(1, "completed")]
    assert not store.complete(result(s, [0.1]))  # the first final result wins
    assert [e.val_accuracy for e in store.epochs(s.id)] == [0.6, 0.8]
    assert store.totals()["trained_twice"] == 0


def test_a_failed_completion_changes_nothing(store):
    s = spec(2)
    store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    attempt = store.start_attempt(s.id, "t")
    broken = result(s, [0.5]).model_copy(update={"protections": {"x": object()}})  # not JSON: fails mid-transaction
    with pytest.raises(TypeError):
        store.complete(broken, attempt)
    row = store.candidate(s.id)
    assert row["stage"] == "running" and row["status"] is None and store.epochs(s.id) == []
    assert store.attempts(s.id)[0]["ended"] is None  # the attempt's outcome rolled back with the rest


def test_abandoned_attempts_requeue_and_trained_twice_counts_completions(store):
    s = spec(3)
    store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    store.start_attempt(s.id, "t")
    store.abandon_attempts(s.id, "trainer lost")
    assert store.candidate(s.id)["stage"] == "queued" and [c.id for c in store.unfinished()] == [s.id]
    store.complete(result(s, [0.5]), store.start_attempt(s.id, "t"))
    assert [a["outcome"] for a in store.attempts(s.id)] == ["trainer lost", "completed"]
    assert store.totals()["trained_twice"] == 0
    store.complete(result(s, [0.9]), store.start_attempt(s.id, "t"))  # a second training is exposed, not hidden
    assert store.totals()["trained_twice"] == 1 and store.candidate(s.id)["best_accuracy"] == 0.5


def test_resume_interrupts_open_attempts(store):
    a, b = spec(4), spec(5)
    for s in (a, b):
        store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    store.start_attempt(a.id, "t")
    assert store.interrupt_open_attempts() == 1
    assert store.attempts(a.id)[0]["outcome"] == "interrupted"
    assert {c.id for c in store.unfinished()} == {a.id, b.id}


def test_cycle_statistics_follow_the_outcome_definitions(store):
    store.start_cycle(0, 0)
    good, bad, dup, stopped, died = spec(6), spec(7), spec(8), spec(9), spec(10)
    store.add_candidate("p1", task="fill", cycle=0, status=FailureKind.PARSE, error="no code")
    for s in (good, bad, stopped, died):
        store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    store.add_candidate(dup.id, task="fill", cycle=0, spec=dup, status=FailureKind.DUPLICATE, similar_to=good.id,
                        similarity=1.0)
    store.complete(result(good, [0.7, 0.9]))
    store.complete(result(bad, [], failure=FailureKind.FORWARD))
    store.complete(result(stopped, [0.3], failure=FailureKind.STOPPED_EARLY))
    store.complete(result(died, [0.95], failure=FailureKind.TIMEOUT))  # an epoch, then a failure: not trained
    summary = status(store)
    # `bad` parsed but could not be built: not a working network, so neither valid nor unique
    (cycle,) = summary["cycles"]
    assert {k: cycle[k] for k in ("cycle", "generated", "valid", "unique", "duplicates", "near_duplicates", "trained",
                                  "best_accuracy", "mean_accuracy", "adapter")} == {
        "cycle": 0, "generated": 6, "valid": 4, "unique": 3, "duplicates": 1, "near_duplicates": 0, "trained": 2,
        "best_accuracy": 0.9, "mean_accuracy": 0.6, "adapter": 0}
    # what the valid rate hides: 3 new of 6 generated; first epochs of the unique ones: 0.7, 0.3, 0.95
    assert cycle["novel_yield"] == 0.5 and cycle["first_epoch_accuracy"] == 0.65 and cycle["families"] == 1
    assert summary["totals"] == {"generated": 6, "valid": 4, "unique": 3, "trained": 2, "trained_twice": 0}
    assert store.cycle_stats()[0]["queued"] == 4  # sent to training: good, bad, stopped, died
    assert [c for c, _ in store.unique_codes()] == [good.id, bad.id, stopped.id, died.id]
    assert store.accepted(0.8, 10)[0]["id"] == good.id and len(store.accepted(0.2, 10)) == 2


def test_cycle_advance_activates_the_adapter_in_the_same_transaction(store):
    store.start_cycle(0, 0)
    store.add_adapter(1, "run-v1", "/x", 4, 0.1, 1.0)
    store.decide_adapter(1, "staged", "4 examples")
    store.advance_cycle(0, 1, 1)
    cycles, adapters = store.cycles(), store.adapters()
    assert [(c["cycle"], c["adapter"], c["ended"] is not None) for c in cycles] == [(0, 0, True), (1, 1, False)]
    assert adapters[0]["status"] == "active" and adapters[0]["activated"] is not None


def test_wal_mode_and_readonly_reader(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s = spec(11)
    store.add_candidate(s.id, task="fill", spec=s)
    reader = Store(store.path, readonly=True)
    assert reader.candidate(s.id)["code"] == s.code
    with pytest.raises(sqlite3.OperationalError):
        reader.add_candidate("x", task="fill")


def test_a_version_1_store_is_migrated_on_open(tmp_path):
    from nngpt_ray.store import _SCHEMA

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA + ";")
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("application", "nngpt-ray"), ("schema_version", "1")])
    db.execute("INSERT INTO candidates (id, task, stage, status, created) VALUES ('a', 'fill', 'finished', 'ok', 0)")
    db.commit()
    db.close()
    reader = Store(path, readonly=True)  # a reader of an old run upgrades it too
    assert reader.meta("schema_version") == str(SCHEMA_VERSION) and reader.candidate("a")["method"] == "llm"
    assert reader.events() == [] and reader.tests() == [] and reader.table("decisions") == []
    assert reader.candidate("a")["features"] is None  # version 3: features measured in the sandbox


def test_schema_version_from_the_future_is_a_clear_error(store):
    store.set_meta("schema_version", "99")
    with pytest.raises(StoreError, match=f"schema version 99.*reads versions up to {SCHEMA_VERSION}"):
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
    s = spec(12, cycle=0)
    store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    store.complete(result(s, [0.5, 0.75]))
    store.add_event("event", "hello", 0)
    counts = export_parquet(store, tmp_path / "export")
    assert counts["candidates"] == 1 and counts["epochs"] == 2 and counts["adapters"] == 0 and counts["events"] == 1
    table = pq.read_table(tmp_path / "export" / "epochs.parquet").to_pylist()
    assert [r["val_accuracy"] for r in sorted(table, key=lambda r: r["epoch"])] == [0.5, 0.75]


def test_features_export_is_one_flat_row_per_trained_candidate(tmp_path, store):
    measured = spec(20)
    store.add_candidate(measured.id, task="fill", cycle=0, spec=measured)
    r = result(measured, [0.5, 0.75]).model_copy(update={"features": {
        "flops": 12345, "depth": 4, "layers": {"Conv2d": 2, "Linear": 1}}, "params": 999})
    store.complete(r)
    old = spec(21)  # recorded before features existed: its feature columns stay empty
    store.add_candidate(old.id, task="fill", cycle=0, spec=old)
    store.complete(result(old, [0.4]))
    failed = spec(22)
    store.add_candidate(failed.id, task="fill", cycle=0, spec=failed)
    store.complete(result(failed, [], failure=FailureKind.FORWARD))
    counts = export_parquet(store, tmp_path / "export")
    rows = {r["candidate_id"]: r for r in pq.read_table(tmp_path / "export" / "features.parquet").to_pylist()}
    assert counts["features"] == 2 and set(rows) == {measured.id, old.id}
    m = rows[measured.id]
    assert (m["flops"], m["depth"], m["layer_Conv2d"], m["layer_Linear"], m["params"]) == (12345, 4, 2, 1, 999)
    assert (m["acc_1"], m["acc_2"], m["seconds_2"], m["hp_lr"]) == (0.5, 0.75, 1.0, measured.hyperparameters.lr)
    assert rows[old.id]["flops"] is None and rows[old.id]["acc_2"] is None and rows[old.id]["acc_1"] == 0.4


def test_status_and_export_commands(tmp_path):
    run = RunDir(tmp_path / "run").create()
    store = Store(run.store, create=True)
    s = spec(13, cycle=0)
    store.add_candidate(s.id, task="fill", cycle=0, spec=s)
    store.complete(result(s, [0.6]))
    store.close()
    proc = run_cli("status", str(run.root), "--json")
    assert proc.returncode == 0
    assert '"trained_twice": 0' in proc.stdout and '"trained": 1' in proc.stdout
    proc = run_cli("export", str(run.root))
    assert proc.returncode == 0 and (run.root / "export" / "candidates.parquet").exists()
