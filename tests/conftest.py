"""Shared fixtures. Real parts only: real datasets, real sandboxed training, real SQLite, real Ray."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_model import TINY_FAMILIES, TINY_MODEL

from nngpt_ray.datasets import prepare

DATA = Path(__file__).parent / "data"
NNGPT = Path(sys.executable).with_name("nngpt")  # the installed entry point, as a user runs it


@pytest.fixture(scope="session")
def digits():
    return prepare("digits")


def run_cli(*args: str, timeout: float = 300, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `nngpt` entry point exactly as a user would (`env`: variables to add)."""
    return subprocess.run([str(NNGPT), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def eval_json(path: Path, *args: str, timeout: float = 300) -> dict:
    proc = run_cli("eval", str(path), "--json", *args, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def store_count(path: Path, count) -> int:
    """`count(store)` of the run store at `path`, read while a run may be writing it; 0 before it exists."""
    from nngpt_ray.store import Store

    try:
        with Store(path, readonly=True) as store:
            return count(store)
    except Exception:  # not created yet
        return 0


def pytest_collection_modifyitems(items):
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


class Background:
    """A CLI command started as soon as the session starts, at the lowest CPU priority, so that it runs on
    what other tests leave idle (the loop tests wait on generation much of the time) and slows none of
    them; the fixture that needs its answer waits for it."""

    def __init__(self, out: Path, *args: str) -> None:
        self.out, self.args = out, args
        self.log = (out / "stdout").open("w"), (out / "stderr").open("w")
        self.proc = subprocess.Popen([str(NNGPT), *args], stdout=self.log[0], stderr=self.log[1],
                                     env={**os.environ, "COLUMNS": "200"}, preexec_fn=_lowest_priority,
                                     start_new_session=True)

    def result(self, timeout: float) -> subprocess.CompletedProcess:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.stop()
        return subprocess.CompletedProcess(self.args, self.proc.returncode, (self.out / "stdout").read_text(),
                                           (self.out / "stderr").read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        for f in self.log:
            f.close()


def _lowest_priority() -> None:
    """In the child, in its own session: nice 19 for its session's scheduling group as well where the kernel
    groups by session (autogroup), since a process's own nice only orders it within its group."""
    os.nice(19)
    try:
        Path("/proc/self/autogroup").write_text("19")
    except OSError:
        pass


@pytest.fixture(scope="session", autouse=True)
def rag_build(request, tmp_path_factory):
    """`nngpt rag build --sources torchvision` (minutes of CPU), started with the session when a selected
    test of test_rag.py needs its block store."""
    if not any(item.path.name == "test_rag.py" and "store" in getattr(item, "fixturenames", ())
               for item in request.session.items):
        yield None
        return
    out = tmp_path_factory.mktemp("rag")
    build = Background(out, "rag", "build", "--sources", "torchvision", "--out", str(out / "store"), "--json")
    yield build
    build.stop()


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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A copy of the tiny model kept in tests/data (see tiny_model.py), so that no test writes beside the
    original and each session's Serve deployments see a path of their own."""
    target = tmp_path_factory.mktemp("tiny") / "model"
    shutil.copytree(TINY_MODEL, target)
    return target


def tiny_loop_settings(model: Path) -> dict:
    """The config sections a test loop over the tiny model shares. A model this small has nearly memorized
    its examples: a high temperature keeps most of its fills valid and about half of them new. Candidates
    train on 700 of digits' images: the seed families still reach 75-95% in two epochs, in half the time."""
    return {"llm": {"model": str(model), "batch_size": 6, "temperature": 0.9, "max_new_tokens": 256},
            "task": {"families": TINY_FAMILIES}, "data": {"max_train": 700}}
