"""`nngpt run` as a user (or a scheduler) drives it: signals at any moment, a model that cannot load,
paths with `~`, and a deadline. Real processes on the session's Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import NNGPT, run_cli, store_count, tiny_loop_settings
from nngpt_ray.config import Config, load_config
from nngpt_ray.failures import ConfigError
from nngpt_ray.store import Store

EXE = str(NNGPT)


@pytest.fixture(scope="module")
def long_config(tiny_model, tmp_path_factory) -> Path:
    """A run that cannot finish on its own within a test (50 cycles)."""
    cfg = Config.model_validate({**tiny_loop_settings(tiny_model), "run": {"final_test": 0}, "train": {"epochs": 2},
                                 "learner": {"every_k": 4, "accept_threshold": 0.3, "epochs": 2, "batch_size": 4},
                                 "loop": {"cycles": 50, "candidates_per_cycle": 6, "queue_size": 2}})
    path = tmp_path_factory.mktemp("long") / "config.yaml"
    path.write_text(cfg.to_yaml())
    return path


@pytest.fixture
def env(ray_session) -> dict:
    return {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "COLUMNS": "200"}


def _trained(store_path: Path) -> int:
    return store_count(store_path, lambda store: store.totals()["trained"])


def _stderr_at_exit(proc: subprocess.Popen, timeout: float = 120) -> str:
    """The command's stderr once it exits; one still running after `timeout` is killed (a hung run must not
    go on training beside the tests that follow) and the test fails."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running {timeout:.0f} s after the signal:\n{proc.communicate()[1][-3000:]}")


def test_a_signal_mid_run_ends_it_with_the_summary(long_config, tmp_path, env):
    """Ctrl-C here; SIGTERM reaches the same handler inside the loop (the test below), and is what the
    start-up test sends."""
    proc = subprocess.Popen([EXE, "run", "--config", str(long_config), "--out", str(tmp_path), "--name", "sig"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while _trained(tmp_path / "sig" / "store.sqlite") < 1:
        assert time.time() < deadline and proc.poll() is None, "the run never trained anything"
        time.sleep(0.5)
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    stderr = _stderr_at_exit(proc)
    assert proc.returncode == 130, stderr[-3000:]
    assert time.time() - sent < 60  # it stops; it does not wait for the run's end
    assert "Traceback" not in stderr and "trained twice: 0" in stderr and "interrupted: continue with" in stderr
    assert (tmp_path / "sig" / "summary.json").exists() and _trained(tmp_path / "sig" / "store.sqlite") >= 1


@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGINT])
def test_inside_the_loop_either_signal_asks_the_controller_to_stop_and_a_second_stops_at_once(first):
    import asyncio

    from nngpt_ray import signals
    from nngpt_ray.actors.driver import _interrupt_on_signals

    class Controller:
        interrupted = 0

        def interrupt(self) -> None:
            self.interrupted += 1

    controller = Controller()

    async def loop() -> None:
        _interrupt_on_signals(controller)
        signal.raise_signal(first)
        await asyncio.sleep(0.05)  # the loop runs its handler
        assert controller.interrupted == 1
        signal.raise_signal(signal.SIGINT if first == signal.SIGTERM else signal.SIGTERM)  # the second one

    with pytest.raises(KeyboardInterrupt), signals.installed():
        asyncio.run(loop())
    assert controller.interrupted == 1


def test_sigterm_during_start_up_exits_cleanly(long_config, tmp_path, env):
    proc = subprocess.Popen([EXE, "run", "--config", str(long_config), "--out", str(tmp_path), "--name", "early"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (tmp_path / "early" / "config.yaml").exists():  # past argument parsing: the run is being set up
        assert proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stderr = _stderr_at_exit(proc)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]


SWALLOWED = """
import os, signal, sys
from nngpt_ray import signals

class Finalized:
    def __del__(self):  # the stop request arrives while the garbage collector runs a destructor
        os.kill(os.getpid(), signal.SIG{name})
        for _ in range(10**6):  # the handler runs here: its KeyboardInterrupt is printed and swallowed
            pass

signals.install()
Finalized()
print("went on", signals.requested(), flush=True)
try:
    signals.check()
except KeyboardInterrupt:
    print("stopped", flush=True)
"""


@pytest.mark.parametrize("name", ["TERM", "INT"])
def test_a_stop_request_whose_interrupt_was_swallowed_still_stops_at_the_next_check(name):
    """Why `test_sigterm_during_start_up_exits_cleanly` once hung: Python swallows an exception raised in a
    destructor (or in Cython's module set-up, during `import ray`), and the start-up went on into a 50-cycle
    run. The request is remembered and checked."""
    proc = subprocess.run([sys.executable, "-c", SWALLOWED.format(name=name)], capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout.split() == ["went", "on", "True", "stopped"], proc.stdout + proc.stderr  # swallowed, kept
    assert proc.stderr == ""  # and not printed as an error: it is the stop request


def test_a_run_handles_its_own_stop_request_and_puts_the_handlers_back():
    """`execute()` called twice in one process (the Python API): a stop request the first run handled does
    not stop the second at once, and the process's own handlers are back between runs."""
    from nngpt_ray import signals

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook
    with pytest.raises(KeyboardInterrupt), signals.installed():
        signal.raise_signal(signal.SIGTERM)  # the request, handled by this block
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook) == before
    assert not signals.requested()
    signals.check()  # nothing pending


def test_a_learner_that_cannot_start_ends_the_run_at_the_first_update(long_config, tmp_path, env):
    """Where the learner could not start (on CPUs it starts at the first update; with GPUs, with the run),
    the first update ends the run with one line naming it, and what was trained is kept."""
    settings = ["learner.every_k=1", "learner.accept_threshold=0", "train.epochs=1"]  # the first result: an update
    proc = subprocess.run([EXE, "run", "--config", str(long_config), "--out", str(tmp_path), "--name", "nolearner",
                           *(arg for s in settings for arg in ("--set", s))],
                          env=env | {"NNGPT_FAULTS": "learner.loaded=raise"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = next(x for x in proc.stderr.splitlines() if x.startswith("nngpt: error:"))
    assert line.startswith("nngpt: error: stage learner failed: the learner actor could not start: ") \
        and line.endswith("InjectedFault: injected fault at learner.loaded"), line
    assert "Traceback" not in proc.stderr and _trained(tmp_path / "nolearner" / "store.sqlite") >= 1
    assert f"joining Ray at {env['RAY_ADDRESS']} ..." in proc.stderr  # the address came from the environment


def test_a_gpu_setting_on_a_local_ray_without_gpus_is_refused_instead_of_waiting_for_ever(tiny_model, tmp_path):
    """Ray keeps an actor no node can hold pending for ever; a local Ray will never grow such a node."""
    local = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"COLUMNS": "200"}
    proc = subprocess.run([EXE, "run", "--out", str(tmp_path), "--set", f"llm.model={tiny_model}",
                           "--set", "trainers.num_gpus=1", "--set", "learner.num_gpus=0.5"],
                          env=local, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nngpt: error: the local Ray cannot place this run: trainers: each asks one node for "
                           "CPU 0.5, GPU 1, and its node has CPU ") and "; learner: each asks one node for " \
        "CPU 0.5, GPU 0.5, and its node has " in last and last.endswith("(ray.address)"), last
    assert "Traceback" not in proc.stderr and "starting Ray ..." in proc.stderr


def test_a_model_that_cannot_load_ends_the_run_at_once(tmp_path, env):
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    started = time.time()
    proc = subprocess.run([EXE, "run", "--out", str(tmp_path), "--set", f"llm.model={broken}"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"nngpt: error: cannot load model '{broken}'")
    assert "Traceback" not in proc.stderr and "RayTaskError" not in proc.stderr
    assert time.time() - started < 120  # no Serve retries


def test_a_missing_gguf_file_is_named_before_anything_starts(tmp_path):
    proc = run_cli("run", "--out", str(tmp_path), "--set", f"llm.model={tmp_path}", "--set", "llm.gguf_file=x.gguf",
                   timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == f"nngpt: error: llm.gguf_file: {tmp_path / 'x.gguf'} does not exist"


def test_every_path_in_the_config_expands_the_home_directory(tmp_path):
    cfg = load_config(None, ["llm.model=~/nngpt-no-such-model", "run.out_dir=~/runs-x", "sandbox.scratch_root=~/s"])
    home = Path.home()
    assert cfg.llm.model == str(home / "nngpt-no-such-model") and cfg.run.out_dir == home / "runs-x"
    assert cfg.sandbox.scratch_root == home / "s" and cfg.data.data_dir == home / ".cache/nngpt/data"
    with pytest.raises(ConfigError, match=f"llm.model: {home}/nngpt-no-such-model does not exist"):
        cfg.preflight()


def test_minutes_ends_the_run_at_its_deadline(long_config, tmp_path, env):
    started = time.time()
    proc = subprocess.run([EXE, "run", "--config", str(long_config), "--out", str(tmp_path), "--name", "short",
                           "--minutes", "0.6"], env=env, capture_output=True, text=True, timeout=600)
    wall = time.time() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stopped at the deadline" in proc.stderr
    assert wall < 36 + 60  # the deadline, plus the candidates in training (2 epochs on digits) and shutdown
    store = Store(tmp_path / "short" / "store.sqlite", readonly=True)
    assert store.totals()["trained"] >= 1 and any("deadline reached" in e["message"] for e in store.events())


def test_a_deployment_whose_replica_cannot_start_is_one_line_naming_the_cause(tiny_model, tmp_path, env):
    """Not the model (its loader's message is the test above) but the replica itself: here its runtime_env.
    (The tiny model, so that no embedded default is built first: that takes minutes on a slow machine.)"""
    proc = subprocess.run([EXE, "run", "--out", str(tmp_path), "--set", f"llm.model={tiny_model}",
                           "--set", 'llm.runtime_env={"conda": "nngpt-no-such-env"}'],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nngpt: error: the LLM deployment did not start: ") and "Conda" in last, last
    assert "Traceback" not in proc.stderr
