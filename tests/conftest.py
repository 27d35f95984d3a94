"""Shared fixtures. Real parts only: real datasets, real sandboxed training, real SQLite, real Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nngpt_ray.datasets import prepare

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def digits():
    return prepare("digits")


def run_cli(*args: str, timeout: float = 300, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `nngpt` entry point exactly as a user would (`env`: variables to add)."""
    exe = Path(sys.executable).with_name("nngpt")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def eval_json(path: Path, *args: str, timeout: float = 300) -> dict:
    proc = run_cli("eval", str(path), "--json", *args, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pytest_collection_modifyitems(items):
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


METRICS_PORT = free_port()


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray for the whole session (started on first use), exporting metrics on METRICS_PORT
    (the metrics agent runs with the dashboard)."""
    import logging

    import ray

    ray.init(num_cpus=4, include_dashboard=True, namespace="nngpt-tests", log_to_driver=False,
             logging_level=logging.WARNING, _metrics_export_port=METRICS_PORT)
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


TINY_FAMILIES = ["plain_cnn", "vgg"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A real small LM built by the bootstrap code path, with a test-sized recipe: it learns the fill
    format over two seed families and their mutants (about two minutes on 2 CPU cores). Loops that use
    it narrow `task.families` to the same two (`tiny_loop_settings`), so its fills are mostly valid."""
    from nngpt_ray.bootstrap import Recipe, build

    target = tmp_path_factory.mktemp("tiny") / "model"
    recipe = Recipe(mutants_per_family=30, hidden_size=128, layers=3, intermediate_size=256, train_steps=240,
                    max_train_seconds=100, lr=3e-3, batch_size=8, families=tuple(TINY_FAMILIES))
    build(target, recipe, print)
    return target


def tiny_loop_settings(model: Path) -> dict:
    """The config sections a test loop over the tiny model shares. A model this small has nearly memorized
    its examples: a high temperature keeps most of its fills valid and about half of them new."""
    return {"llm": {"model": str(model), "batch_size": 6, "temperature": 0.9, "max_new_tokens": 256},
            "task": {"families": TINY_FAMILIES}}
