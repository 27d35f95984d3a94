"""Where a run keeps its things. One place, so the CLI, the actors and the tests agree on it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from nngpt_ray.failures import StoreError


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def store(self) -> Path:
        return self.root / "store.sqlite"

    @property
    def networks(self) -> Path:
        return self.root / "networks"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def adapter(self, version: int) -> Path:
        return self.adapters / f"v{version}"

    def prepare_store(self, cfg) -> None:
        """Before any actor opens the store: create it (cycle 0, and which split each reported number is
        from) or bring it up to date (an attempt still open belonged to a driver that died: its candidate
        goes back to the queue)."""
        import json

        from nngpt_ray import datasets
        from nngpt_ray.store import Store

        with Store(self.store, create=True) as store:
            if store.meta("splits") is None:
                store.set_meta("splits", json.dumps(datasets.from_config(cfg.data).splits()))
            if not store.cycles():
                store.start_cycle(0, 0)
            store.interrupt_open_attempts()

    def create(self) -> RunDir:
        for d in (self.root, self.networks, self.adapters, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        return self

    @classmethod
    def new(cls, out_dir: Path, name: str | None) -> RunDir:
        return cls(Path(out_dir).expanduser() / (name or time.strftime("run-%Y%m%d-%H%M%S"))).create()

    @classmethod
    def existing(cls, path: str | Path) -> RunDir:
        """A run directory that must already hold a store; StoreError otherwise."""
        root = Path(path).expanduser()
        if root.is_file():
            raise StoreError(f"{root} is a file, not a run directory (a run directory holds store.sqlite)")
        if not root.is_dir():
            raise StoreError(f"run directory {root} does not exist")
        run = cls(root)
        if not run.store.is_file():
            raise StoreError(f"{root} is not an nngpt-ray run directory: it has no store.sqlite")
        return run
