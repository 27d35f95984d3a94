"""The run's single source of truth: one SQLite file (WAL) behind a small API.

Every write is idempotent by candidate id: adding a candidate twice keeps the first, the first final
result wins, an epoch written again replaces itself. Finishing a candidate is one transaction by one
party (`complete`): its epochs, its final status and its attempt's outcome land together or not at all,
so a process killed at any moment leaves either a finished candidate (never trained again) or an open
attempt (trained again on resume, once). One process writes (the store actor in a run, or the CLI);
readers open the file read-only. What the counts mean is defined once, in `outcomes`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nngpt_ray import outcomes
from nngpt_ray.failures import FailureKind, StoreError
from nngpt_ray.spec import CandidateSpec, EpochResult, EvalResult

SCHEMA_VERSION = 3
APPLICATION = "nngpt-ray"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE prompts (
    id TEXT PRIMARY KEY, task TEXT NOT NULL, text TEXT NOT NULL, parents TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE candidates (
    id TEXT PRIMARY KEY,
    cycle INTEGER, adapter INTEGER NOT NULL DEFAULT 0, task TEXT NOT NULL, prompt_id TEXT,
    attempt INTEGER NOT NULL DEFAULT 1, completion TEXT,
    code TEXT, code_hash TEXT, spec TEXT,
    stage TEXT NOT NULL,              -- queued | running | finished
    status TEXT,                      -- ok or a failure kind, once finished
    error TEXT, similar_to TEXT, similarity REAL,
    best_accuracy REAL, epochs_done INTEGER NOT NULL DEFAULT 0, params INTEGER, duration_s REAL,
    protections TEXT, created REAL NOT NULL, finished REAL);
CREATE INDEX candidates_cycle ON candidates (cycle);
CREATE INDEX candidates_hash ON candidates (code_hash);
CREATE INDEX candidates_stage ON candidates (stage);
CREATE TABLE epochs (
    candidate_id TEXT NOT NULL, epoch INTEGER NOT NULL, train_loss REAL, val_accuracy REAL NOT NULL,
    seconds REAL NOT NULL, peak_memory_mb REAL, PRIMARY KEY (candidate_id, epoch));
CREATE TABLE attempts (
    candidate_id TEXT NOT NULL, attempt INTEGER NOT NULL, trainer TEXT, started REAL NOT NULL,
    ended REAL, outcome TEXT, PRIMARY KEY (candidate_id, attempt));
CREATE TABLE adapters (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, path TEXT NOT NULL, examples INTEGER,
    train_loss REAL, seconds REAL, created REAL NOT NULL, activated REAL);
CREATE TABLE cycles (cycle INTEGER PRIMARY KEY, adapter INTEGER NOT NULL, started REAL NOT NULL, ended REAL)
"""

# Each entry takes a store from version N to N+1. Applied in order when an older store is opened.
_MIGRATIONS: dict[int, str] = {
    1: """
ALTER TABLE candidates ADD COLUMN method TEXT NOT NULL DEFAULT 'llm';
ALTER TABLE adapters ADD COLUMN status TEXT;
ALTER TABLE adapters ADD COLUMN reason TEXT;
ALTER TABLE adapters ADD COLUMN gate TEXT;
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, cycle INTEGER, kind TEXT NOT NULL,
    message TEXT NOT NULL, data TEXT);
CREATE TABLE generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, cycle INTEGER, adapter INTEGER, prompts INTEGER NOT NULL,
    tokens INTEGER, seconds REAL NOT NULL, created REAL NOT NULL);
CREATE TABLE samples (
    candidate_id TEXT PRIMARY KEY, group_id TEXT NOT NULL, adapter INTEGER NOT NULL, prompt_id TEXT NOT NULL,
    tokens TEXT NOT NULL, logprobs TEXT NOT NULL, temperature REAL NOT NULL);
CREATE INDEX samples_group ON samples (adapter, group_id);
CREATE TABLE tests (
    candidate_id TEXT NOT NULL, split TEXT NOT NULL, accuracy REAL, val_accuracy REAL, status TEXT NOT NULL,
    error TEXT, seconds REAL, created REAL NOT NULL, PRIMARY KEY (candidate_id, split))
""",
    2: """
ALTER TABLE candidates ADD COLUMN features TEXT;
CREATE TABLE decisions (
    candidate_id TEXT NOT NULL, epoch INTEGER NOT NULL, go INTEGER NOT NULL, predicted REAL, upper REAL,
    reason TEXT NOT NULL, model TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (candidate_id, epoch))
""",
}
TABLES = ("candidates", "epochs", "attempts", "adapters", "cycles", "prompts", "events", "tests", "generations",
          "samples", "decisions")


class Store:
    """One run's SQLite database. Raises StoreError (a user error) for anything that is not one."""

    def __init__(self, path: str | Path, *, create: bool = False, readonly: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"{self.path} does not exist: not an nngpt-ray run store")
        self.readonly = readonly
        self.db = self._connect(readonly)
        try:
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path} is not an nngpt-ray run store ({err})") from None
        if not tables and create and not readonly:
            self._create()
        elif "meta" not in tables:
            raise StoreError(f"{self.path} is an SQLite file but not an nngpt-ray run store")
        self._check_version()

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        try:
            if readonly:
                db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                     check_same_thread=False, timeout=30)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path} is not an nngpt-ray run store ({err})") from None
        db.row_factory = sqlite3.Row
        return db

    def _create(self) -> None:
        with self.transaction():
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self.db.execute(statement)
            for version in sorted(_MIGRATIONS):
                for statement in filter(str.strip, _MIGRATIONS[version].split(";")):
                    self.db.execute(statement)
            self.db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                ("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION)), ("created", str(time.time())),
            ])

    def _check_version(self) -> None:
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise StoreError(f"{self.path} is not an nngpt-ray run store (application={meta.get('application')!r})")
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION or version not in (SCHEMA_VERSION, *_MIGRATIONS):
            raise StoreError(f"{self.path} has store schema version {version}, this nngpt-ray reads versions up to "
                             f"{SCHEMA_VERSION}; use the nngpt-ray release that wrote it")
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Bring an older store up to date (a reader too: opened writable for the moment it takes)."""
        db = self._connect(readonly=False) if self.readonly else self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            for v in range(version, SCHEMA_VERSION):
                for statement in filter(str.strip, _MIGRATIONS[v].split(";")):
                    db.execute(statement)
            db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except sqlite3.DatabaseError as err:
            with contextlib.suppress(sqlite3.DatabaseError):
                db.execute("ROLLBACK")
            raise StoreError(f"{self.path} has store schema version {version} and could not be upgraded to "
                             f"{SCHEMA_VERSION} ({err})") from None
        finally:
            if db is not self.db:
                db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ meta

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                        (key, value))

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ writes

    def add_prompt(self, prompt_id: str, task: str, payload: dict[str, Any], parents: list[str]) -> None:
        """A prompt as sent: {"text": ...} or {"messages": [...]} (stored as JSON)."""
        self.db.execute("INSERT OR IGNORE INTO prompts (id, task, text, parents, created) VALUES (?, ?, ?, ?, ?)",
                        (prompt_id, task, json.dumps(payload), json.dumps(parents), time.time()))

    def add_candidate(self, candidate_id: str, *, task: str, method: str = "llm", cycle: int | None = None,
                      adapter: int = 0, prompt_id: str | None = None, attempt: int = 1, completion: str | None = None,
                      spec: CandidateSpec | None = None, status: FailureKind | None = None,
                      error: str | None = None, similar_to: str | None = None,
                      similarity: float | None = None) -> bool:
        """Record a generated candidate. With a `status` it is final at once (invalid or duplicate);
        without, it is queued for training. Returns False if the id was already recorded."""
        now = time.time()
        cur = self.db.execute(
            "INSERT OR IGNORE INTO candidates (id, cycle, adapter, task, method, prompt_id, attempt, completion, code, "
            "code_hash, spec, stage, status, error, similar_to, similarity, created, finished) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (candidate_id, cycle, adapter, task, method, prompt_id, attempt, completion,
             spec.code if spec else None, spec.code_hash if spec else None,
             spec.model_dump_json() if spec else None, "finished" if status else "queued",
             status.value if status else None, error, similar_to, similarity, now, now if status else None))
        return cur.rowcount == 1

    def start_attempt(self, candidate_id: str, trainer: str) -> int:
        with self.transaction() as db:
            row = db.execute("SELECT COALESCE(MAX(attempt), 0) + 1 FROM attempts WHERE candidate_id=?",
                             (candidate_id,)).fetchone()
            db.execute("INSERT INTO attempts (candidate_id, attempt, trainer, started) VALUES (?, ?, ?, ?)",
                       (candidate_id, row[0], trainer, time.time()))
            db.execute("UPDATE candidates SET stage='running' WHERE id=? AND stage!='finished'", (candidate_id,))
        return int(row[0])

    def record_epoch(self, candidate_id: str, epoch: EpochResult) -> None:
        """An epoch as it is measured (progress, visible before the candidate finishes)."""
        self._write_epoch(self.db, candidate_id, epoch)

    @staticmethod
    def _write_epoch(db: sqlite3.Connection, candidate_id: str, epoch: EpochResult) -> None:
        db.execute(
            "INSERT OR REPLACE INTO epochs (candidate_id, epoch, train_loss, val_accuracy, seconds, peak_memory_mb) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (candidate_id, epoch.epoch, epoch.train_loss, epoch.val_accuracy, epoch.seconds, epoch.peak_memory_mb))

    def complete(self, result: EvalResult, attempt: int | None = None, outcome: str = "completed") -> bool:
        """Finish a candidate in one transaction: its epochs, its final status and (when it ran in an
        attempt) that attempt's outcome. Returns False, changing no result, if it was already finished."""
        cid = result.candidate_id
        now = time.time()
        with self.transaction() as db:
            if attempt is not None:
                db.execute("UPDATE attempts SET ended=?, outcome=? WHERE candidate_id=? AND attempt=? AND ended IS NULL",
                           (now, outcome, cid, attempt))
            stage = db.execute("SELECT stage FROM candidates WHERE id=?", (cid,)).fetchone()
            if stage is None or stage[0] == "finished":
                return False
            db.execute("DELETE FROM epochs WHERE candidate_id=? AND epoch>?", (cid, len(result.epochs)))
            for epoch in result.epochs:
                self._write_epoch(db, cid, epoch)
            db.execute(
                "UPDATE candidates SET stage='finished', status=?, error=?, best_accuracy=?, epochs_done=?, params=?, "
                "duration_s=?, protections=?, features=?, finished=? WHERE id=?",
                (result.final_status, result.error, result.best_accuracy, len(result.epochs), result.params,
                 result.duration_s, json.dumps(result.protections), json.dumps(result.features), now, cid))
        return True

    def abandon_attempts(self, candidate_id: str, outcome: str) -> None:
        """The attempts still open on a candidate ended without a result (its trainer died or failed):
        close them with `outcome`; an unfinished candidate goes back to the queue."""
        with self.transaction() as db:
            db.execute("UPDATE attempts SET ended=?, outcome=? WHERE candidate_id=? AND ended IS NULL",
                       (time.time(), outcome, candidate_id))
            db.execute("UPDATE candidates SET stage='queued' WHERE id=? AND stage='running'", (candidate_id,))

    def interrupt_open_attempts(self) -> int:
        """On resume: attempts still open belonged to the run that died; their candidates go back to the queue."""
        with self.transaction() as db:
            n = db.execute("UPDATE attempts SET ended=?, outcome='interrupted' WHERE ended IS NULL", (time.time(),)).rowcount
            db.execute("UPDATE candidates SET stage='queued' WHERE stage='running'")
        return n

    def add_adapter(self, version: int, name: str, path: str, examples: int, train_loss: float | None,
                    seconds: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO adapters (version, name, path, examples, train_loss, seconds, created) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (version, name, path, examples, train_loss, seconds, time.time()))

    def decide_adapter(self, version: int, status: str, reason: str, gate: dict | None = None) -> None:
        """Record the activation gate's decision on a trained adapter ("staged" or "rejected")."""
        self.db.execute("UPDATE adapters SET status=?, reason=?, gate=? WHERE version=?",
                        (status, reason, json.dumps(gate) if gate is not None else None, version))

    def activate_adapter(self, version: int) -> None:
        self.db.execute("UPDATE adapters SET activated=?, status='active' WHERE version=? AND activated IS NULL",
                        (time.time(), version))

    def start_cycle(self, cycle: int, adapter: int) -> None:
        self.db.execute("INSERT OR IGNORE INTO cycles (cycle, adapter, started) VALUES (?, ?, ?)",
                        (cycle, adapter, time.time()))

    def end_cycle(self, cycle: int) -> None:
        self.db.execute("UPDATE cycles SET ended=? WHERE cycle=? AND ended IS NULL", (time.time(), cycle))

    def advance_cycle(self, ended: int, started: int, adapter: int) -> None:
        """End one cycle and start the next (with `adapter`, activated here if it is new) in one transaction."""
        with self.transaction() as db:
            now = time.time()
            db.execute("UPDATE cycles SET ended=? WHERE cycle=? AND ended IS NULL", (now, ended))
            if adapter:
                db.execute("UPDATE adapters SET activated=?, status='active' WHERE version=? AND activated IS NULL",
                           (now, adapter))
            db.execute("INSERT OR IGNORE INTO cycles (cycle, adapter, started) VALUES (?, ?, ?)", (started, adapter, now))

    def add_event(self, kind: str, message: str, cycle: int | None = None, data: dict | None = None) -> None:
        self.db.execute("INSERT INTO events (time, cycle, kind, message, data) VALUES (?, ?, ?, ?, ?)",
                        (time.time(), cycle, kind, message, json.dumps(data) if data is not None else None))

    def add_generation(self, cycle: int, adapter: int, prompts: int, tokens: int, seconds: float) -> None:
        """One generation request: what the LLM itself cost (seconds in the engine, tokens generated)."""
        self.db.execute("INSERT INTO generations (cycle, adapter, prompts, tokens, seconds, created) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (cycle, adapter, prompts, tokens, seconds, time.time()))

    def add_decision(self, candidate_id: str, epoch: int, go: bool, predicted: float | None, upper: float | None,
                     reason: str, model: str) -> None:
        """The predictor's continue/stop decision after `epoch`, with what it predicted and why."""
        self.db.execute("INSERT OR REPLACE INTO decisions (candidate_id, epoch, go, predicted, upper, reason, model, "
                        "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (candidate_id, epoch, int(go), predicted, upper, reason, model, time.time()))

    def add_samples(self, rows: list[tuple[str, str, int, str, list[int], list[float], float]]) -> None:
        """GRPO material: (candidate id, group id, adapter, prompt id, sampled token ids, their log-probabilities,
        temperature) of each completion of a group."""
        self.db.executemany(
            "INSERT OR IGNORE INTO samples (candidate_id, group_id, adapter, prompt_id, tokens, logprobs, temperature) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(c, g, a, p, json.dumps(t), json.dumps(lp), temp) for c, g, a, p, t, lp, temp in rows])

    def add_test(self, candidate_id: str, split: str, result: EvalResult) -> None:
        """A final evaluation of a network on `split` (a retrain scored once on it)."""
        self.db.execute(
            "INSERT OR REPLACE INTO tests (candidate_id, split, accuracy, val_accuracy, status, error, seconds, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (candidate_id, split, result.test_accuracy, result.best_accuracy, result.final_status, result.error,
             result.duration_s, time.time()))

    # ------------------------------------------------------------------ reads

    def candidate(self, candidate_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM candidates WHERE id=?", (candidate_id,)).fetchone()
        return dict(row) if row else None

    def spec(self, candidate_id: str) -> CandidateSpec | None:
        row = self.db.execute("SELECT spec FROM candidates WHERE id=?", (candidate_id,)).fetchone()
        return CandidateSpec.model_validate_json(row[0]) if row and row[0] else None

    def epochs(self, candidate_id: str) -> list[EpochResult]:
        rows = self.db.execute("SELECT epoch, train_loss, val_accuracy, seconds, peak_memory_mb FROM epochs "
                               "WHERE candidate_id=? ORDER BY epoch", (candidate_id,)).fetchall()
        return [EpochResult(**dict(r)) for r in rows]

    def unfinished(self) -> list[CandidateSpec]:
        """Candidates queued or running when the run stopped, in the order they were made."""
        rows = self.db.execute("SELECT spec FROM candidates WHERE stage!='finished' AND spec IS NOT NULL "
                               "ORDER BY created, id").fetchall()
        return [CandidateSpec.model_validate_json(r[0]) for r in rows]

    def prompt(self, prompt_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT text FROM prompts WHERE id=?", (prompt_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def finished_accuracies(self) -> list[tuple[str, float]]:
        """(dataset, best validation accuracy) of every trained candidate: the predictor's memory."""
        rows = self.db.execute(f"SELECT json_extract(spec, '$.dataset'), best_accuracy FROM candidates "
                               f"WHERE stage='finished' AND {outcomes.sql_trained()} AND best_accuracy IS NOT NULL"
                               ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def accepted_since(self, threshold: float, since: float) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM candidates WHERE stage='finished' AND "
                               f"{outcomes.sql_accepted()} AND finished > ?", (threshold, since)).fetchone()[0]

    def unique_codes(self) -> list[tuple[str, str]]:
        """(candidate id, code) of every candidate dedup judged new, oldest first."""
        return [(cid, spec.code) for cid, spec in self.unique_specs()]

    def unique_specs(self) -> list[tuple[str, CandidateSpec]]:
        """(candidate id, spec) of every candidate dedup judged new, oldest first: dedup's memory.
        (Only candidates that passed the static checks carry a spec.)"""
        duplicates = ", ".join(f"'{k.value}'" for k in sorted(outcomes.DUPLICATES))
        rows = self.db.execute(
            f"SELECT id, spec FROM candidates WHERE spec IS NOT NULL AND COALESCE(status, '') NOT IN ({duplicates}) "
            "ORDER BY created, id").fetchall()
        return [(r[0], CandidateSpec.model_validate_json(r[1])) for r in rows]

    def accepted(self, threshold: float, limit: int, order: str = "recent") -> list[dict[str, Any]]:
        """Accepted candidates, one per distinct network (its best result): the most recent first, or
        (`order="rank"`) the best first."""
        by = "finished DESC" if order == "recent" else "best_accuracy DESC, finished DESC"
        rows = self.db.execute(
            f"SELECT *, MAX(best_accuracy) FROM candidates WHERE stage='finished' AND {outcomes.sql_accepted()} "
            f"GROUP BY code_hash ORDER BY {by} LIMIT ?", (threshold, limit)).fetchall()
        return [{k: r[k] for k in r.keys() if k != "MAX(best_accuracy)"} for r in rows]

    def groups(self, adapter: int, limit: int) -> list[list[dict[str, Any]]]:
        """GRPO groups sampled by `adapter`, most recent first: per completion its tokens, log-probabilities,
        prompt and what became of it (status, first-epoch accuracy, similarity to its nearest earlier network)."""
        rows = self.db.execute("""
            SELECT s.group_id, s.candidate_id, s.tokens, s.logprobs, s.temperature, p.text AS prompt, c.status,
                   c.similarity, e.val_accuracy AS first_epoch_accuracy, c.created
            FROM samples s JOIN candidates c ON c.id = s.candidate_id JOIN prompts p ON p.id = s.prompt_id
            LEFT JOIN epochs e ON e.candidate_id = s.candidate_id AND e.epoch = 1
            WHERE s.adapter = ? ORDER BY c.created DESC""", (adapter,)).fetchall()
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            item = dict(r)
            item["tokens"], item["logprobs"] = json.loads(item["tokens"]), json.loads(item["logprobs"])
            item["prompt"] = json.loads(item["prompt"])
            groups.setdefault(r["group_id"], []).append(item)
        return list(groups.values())[:limit]

    def best(self, dataset: str, limit: int) -> list[dict[str, Any]]:
        """The best trained candidates on `dataset` by validation accuracy: the corpus grows from these."""
        rows = self.db.execute(
            f"SELECT * FROM candidates WHERE stage='finished' AND {outcomes.sql_trained()} AND best_accuracy IS NOT NULL "
            "AND json_extract(spec, '$.dataset')=? ORDER BY best_accuracy DESC, finished LIMIT ?",
            (dataset, limit)).fetchall()
        return [dict(r) for r in rows]

    def adapters(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM adapters ORDER BY version")]

    def cycles(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM cycles ORDER BY cycle")]

    def events(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM events ORDER BY id")]

    def tests(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM tests ORDER BY accuracy DESC")]

    def cycle_stats(self) -> list[dict[str, Any]]:
        """Per cycle: generated, valid, unique, sent to training, trained, best and mean accuracy, adapter."""
        rows = self.db.execute(f"""
            SELECT c.cycle AS cycle, COALESCE(y.adapter, MAX(c.adapter)) AS adapter, COUNT(*) AS generated,
                   SUM({outcomes.sql_valid('c.status')}) AS valid,
                   SUM({outcomes.sql_unique('c.status')}) AS "unique",
                   SUM(c.status = 'duplicate') AS duplicates,
                   SUM(c.status = 'near_duplicate') AS near_duplicates,
                   SUM(c.code IS NOT NULL AND {outcomes.sql_sent_to_training('c.status')}) AS queued,
                   SUM({outcomes.sql_trained('c.status')}) AS trained,
                   MAX(CASE WHEN {outcomes.sql_trained('c.status')} THEN c.best_accuracy END) AS best_accuracy,
                   AVG(CASE WHEN {outcomes.sql_trained('c.status')} THEN c.best_accuracy END) AS mean_accuracy,
                   SUM(c.epochs_done) AS epochs_run,
                   SUM(c.status = 'stopped_early') AS stopped,
                   SUM(CASE WHEN c.status = 'stopped_early'
                       THEN json_extract(c.spec, '$.hyperparameters.epochs') - c.epochs_done ELSE 0 END) AS epochs_saved
            FROM candidates c LEFT JOIN cycles y ON y.cycle = c.cycle
            WHERE c.cycle IS NOT NULL GROUP BY c.cycle ORDER BY c.cycle""").fetchall()
        return [dict(r) for r in rows]

    def unique_by_cycle(self) -> dict[int, list[dict[str, Any]]]:
        """Per cycle, its unique candidates: id, code, family and first-epoch validation accuracy (if any)."""
        rows = self.db.execute(f"""
            SELECT c.cycle, c.id, c.code, json_extract(c.spec, '$.origin.family') AS family, e.val_accuracy AS first
            FROM candidates c LEFT JOIN epochs e ON e.candidate_id = c.id AND e.epoch = 1
            WHERE c.cycle IS NOT NULL AND c.code IS NOT NULL AND {outcomes.sql_unique('c.status')}
            ORDER BY c.cycle, c.created""").fetchall()
        out: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r["cycle"], []).append(dict(r))
        return out

    def generation_cost(self) -> dict[int, tuple[float, int]]:
        """Per cycle: the LLM's seconds and tokens."""
        rows = self.db.execute("SELECT cycle, SUM(seconds), SUM(tokens) FROM generations GROUP BY cycle").fetchall()
        return {r[0]: (r[1] or 0.0, int(r[2] or 0)) for r in rows}

    def totals(self) -> dict[str, int]:
        stats = self.cycle_stats()
        out = {k: int(sum(s[k] or 0 for s in stats)) for k in ("generated", "valid", "unique", "trained")}
        out["trained_twice"] = self.db.execute(
            "SELECT COUNT(*) FROM (SELECT candidate_id FROM attempts WHERE outcome='completed' "
            "GROUP BY candidate_id HAVING COUNT(*) > 1)").fetchone()[0]
        return out

    def attempts(self, candidate_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM attempts WHERE candidate_id=? ORDER BY attempt", (candidate_id,))]

    def table(self, name: str) -> list[dict[str, Any]]:
        if name not in TABLES:
            raise ValueError(name)
        return [dict(r) for r in self.db.execute(f"SELECT * FROM {name}")]
