"""The corpus the LLM learns from and is prompted with: seed networks plus accepted results.

Seeds ship inside the package (`nngpt_ray/seeds/*.py`, one family per file). During a run the corpus
grows by the candidates that trained well, which is what makes few-shot prompts and fill references
better over time. With `corpus.path` set, a `CorpusStore` keeps networks and results beyond one run:
imported LEMUR trees and the accepted networks of earlier runs are references for the next.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

_HP_LINE = re.compile(r"^# hyperparameters: (\{.*\})\s*$", re.M)


@dataclass(frozen=True)
class CorpusEntry:
    name: str  # seed family name or candidate id
    code: str
    hyperparameters: dict = field(default_factory=dict)
    accuracy: float | None = None  # best validation accuracy, when known
    dataset: str | None = None
    family: str = ""  # the seed family it descends from

    @property
    def description(self) -> str:
        doc = re.match(r'\s*"""(.*?)"""', self.code, re.S)
        return " ".join(doc.group(1).split()) if doc else self.name


def hyperparameters_comment(code: str) -> dict:
    """The `# hyperparameters: {...}` line of a corpus file, or {} (a malformed line counts as none)."""
    match = _HP_LINE.search(code)
    if not match:
        return {}
    try:
        values = json.loads(match.group(1))
    except ValueError:
        return {}
    return values if isinstance(values, dict) else {}


def seed_names() -> list[str]:
    """The seed families shipped with the package, sorted."""
    return sorted(p.name[:-3] for p in resources.files("nngpt_ray.seeds").iterdir()
                  if p.name.endswith(".py") and not p.name.startswith("_"))


def seed_entries(families: Sequence[str] | None = None) -> list[CorpusEntry]:
    """The seed networks, sorted by name; only `families` when given (names checked by the config)."""
    out = []
    for name in seed_names():
        if families is not None and name not in families:
            continue
        code = resources.files("nngpt_ray.seeds").joinpath(f"{name}.py").read_text()
        out.append(CorpusEntry(name=name, code=code, hyperparameters=hyperparameters_comment(code), family=name))
    return out


def seed_spec(seed: CorpusEntry):
    """A seed network as a candidate with its own hyperparameters (what the corpus already holds); an
    imported network whose recorded values are outside our ranges gets the defaults."""
    from pydantic import ValidationError

    from nngpt_ray.spec import CandidateSpec, Hyperparameters, Origin

    values = {k: v for k, v in seed.hyperparameters.items() if k != "epochs"}
    try:
        hyperparameters = Hyperparameters(**values)
    except ValidationError:
        hyperparameters = Hyperparameters()
    return CandidateSpec(code=seed.code, hyperparameters=hyperparameters, origin=Origin(task="seed", family=seed.name))


@cache
def _seed_sketches() -> tuple:
    from nngpt_ray.dedup import Deduplicator

    index = Deduplicator(num_perm=128)
    return index, tuple((s.name, index.sketch(s.code)) for s in seed_entries())


def family_of(code: str) -> str:
    """The seed family `code` is most similar to (MinHash Jaccard over code tokens)."""
    index, sketches = _seed_sketches()
    sketch = index.sketch(code)
    return max(sketches, key=lambda item: item[1].jaccard(sketch))[0]


CORPUS_SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    name TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    origin TEXT NOT NULL,       -- lemur | run:<run folder>
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    network TEXT NOT NULL REFERENCES networks(name),
    dataset TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    accuracy REAL NOT NULL,
    hyperparameters TEXT NOT NULL,  -- JSON, without batch
    batch INTEGER,
    transform TEXT,                 -- LEMUR's transform name
    duration_ns INTEGER,
    uid TEXT NOT NULL,              -- LEMUR's trial id
    PRIMARY KEY (network, dataset, epoch, uid)
);
"""


class CorpusStore:
    """The corpus that outlives a run (`corpus.path`): networks and their per-epoch results, from imported
    LEMUR trees and from the accepted networks of earlier runs. Runs take their references from it."""

    def __init__(self, folder: str | Path) -> None:
        import sqlite3

        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.folder / "corpus.sqlite", timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.executescript(CORPUS_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> CorpusStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, networks: dict[str, str], trials: Sequence, origin: str) -> dict[str, int]:
        """Networks (name -> code) and their trials (lemur.Trial), in one transaction: all or nothing."""
        import time

        from nngpt_ray.lemur import uid

        with self.db:
            for name, code in networks.items():
                self.db.execute("INSERT INTO networks VALUES (?,?,?,?) ON CONFLICT(name) DO UPDATE SET code=excluded.code",
                                (name, code, origin, time.time()))
            added = 0
            for t in trials:
                trial_uid = t.uid or uid(t.hyperparameters, t.batch or 0, t.transform or "")
                added += self.db.execute(
                    "INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                    (t.network, t.dataset, t.epoch, t.accuracy, json.dumps(t.hyperparameters), t.batch, t.transform,
                     t.duration_ns, trial_uid)).rowcount
        return {"networks": len(networks), "trials": added}

    def networks(self) -> dict[str, str]:
        return {r["name"]: r["code"] for r in self.db.execute("SELECT name, code FROM networks ORDER BY name")}

    def results(self, network: str) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM results WHERE network=? ORDER BY dataset, epoch, uid",
                                                 (network,))]

    def entries(self, dataset: str | None = None) -> list[CorpusEntry]:
        """Every network as prompt material, best first: its best result (on `dataset` when it has one there)
        with that trial's hyperparameters; networks without results come last."""
        out = []
        for name, code in self.networks().items():
            rows = self.results(name)
            on_dataset = [r for r in rows if r["dataset"] == dataset] or rows
            best = max(on_dataset, key=lambda r: r["accuracy"], default=None)
            hp = json.loads(best["hyperparameters"]) | ({"batch": best["batch"]} if best and best["batch"] else {}) \
                if best else hyperparameters_comment(code)
            out.append(CorpusEntry(name=f"corpus:{name}", code=code, hyperparameters=hp,
                                   accuracy=best["accuracy"] if best else None,
                                   dataset=best["dataset"] if best else None, family=family_of(code)))
        return sorted(out, key=lambda e: -(e.accuracy or -1.0))


def stored_entries(cfg) -> list[CorpusEntry]:
    """The lasting corpus's networks as references for a run of `cfg` (none without `corpus.path`); with
    `task.families` set, only those of the allowed families."""
    if not cfg.corpus.path:
        return []
    with CorpusStore(cfg.corpus.path) as corpus:
        entries = corpus.entries(cfg.data.dataset)
    return [e for e in entries if not cfg.task.families or e.family in cfg.task.families]


def add_run_to_corpus(cfg, store, run_name: str) -> dict[str, int]:
    """The accepted networks of a finished run, with their results, added to `corpus.path`."""
    from nngpt_ray.lemur import run_records

    networks, trials = run_records(store, cfg.learner.accept_threshold)
    with CorpusStore(cfg.corpus.path) as corpus:
        return corpus.add(networks, trials, origin=f"run:{run_name}")
