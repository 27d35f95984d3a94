"""`nngpt compare` on real local Ray: the LLM loop, Ray Tune + Optuna TPE and random search, a tiny
budget on digits, one seed. The searches' trials train in the same sandbox and land in the same store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import NNGPT, run_cli, store_count, tiny_loop_settings
from nngpt_ray.config import Config
from nngpt_ray.sandbox.process import MARKER_VAR
from nngpt_ray.store import Store

BUDGET = 4


@pytest.fixture(scope="module")
def comparison(ray_session, tiny_model, tmp_path_factory):
    from nngpt_ray.baselines.compare import compare

    out = tmp_path_factory.mktemp("compare")
    # one cycle: the LLM method's generation, dedup and training are what this module checks (learning across
    # cycles is test_loop's and test_faults'), and a second cycle would start the learner for a forced update
    cfg = Config.model_validate({**tiny_loop_settings(tiny_model), "train": {"epochs": 2}, "loop": {"cycles": 1}})
    summary = compare(cfg, ["llm", "tpe", "random"], BUDGET, 1, out, scheduler="asha")
    return out, summary


def test_the_summary_has_the_documented_shape(comparison):
    out, summary = comparison
    assert (summary["dataset"], summary["budget"], summary["epochs"]) == ("digits", BUDGET, 2)
    assert set(summary["methods"]) == {"llm", "tpe", "random"}
    for method, m in summary["methods"].items():
        assert {"runs", "best_mean", "best_std"} <= set(m)
        (run,) = m["runs"]
        assert {"seed", "best", "top5_mean", "trained", "trainer_seconds", "curve"} <= set(run)
        assert run["seed"] == 0 and run["sent"] == BUDGET == len(run["curve_sent"])  # equal budget, every method
        assert len(run["curve"]) == run["trained"] and run["curve"] == sorted(run["curve"])
        assert run["curve_sent"] == sorted(run["curve_sent"]) and run["curve_sent"][-1] == (run["best"] or 0.0)
        assert run["curve"][-1:] == ([run["best"]] if run["trained"] else [])
        assert 0 <= run["trained"] <= BUDGET and run["trainer_seconds"] > 0
        assert (run["llm_seconds"] > 0) == (method == "llm")  # only the LLM pays for generation


def test_tpe_trials_ran_through_ray_tune_and_the_sandbox(comparison):
    out, summary = comparison
    run = out / "tpe-s0"
    assert (run / "tune" / "search").is_dir()  # Ray Tune's experiment directory, under the run
    store = Store(run / "store.sqlite", readonly=True)
    rows = [r for r in store.table("candidates") if r["code"]]
    assert len(rows) == BUDGET and {r["method"] for r in rows} == {"tpe"}
    for r in rows:
        assert r["stage"] == "finished" and json.loads(r["protections"])["process"].startswith("own session")
        assert [a["outcome"] for a in store.attempts(r["id"])] == ["completed"]
    assert store.totals()["trained_twice"] == 0
    assert len(store.tests()) == 1  # its best network, scored once on the test split


def test_trials_the_scheduler_stopped_are_stopped_early_not_failed(comparison):
    """The seed networks all train on digits: under ASHA a trial either trains its epochs or is stopped
    between them, and a stopped one counts as trained (as the predictor's stops do), never as a crash."""
    out, _ = comparison
    statuses = []
    for method in ("tpe", "random"):
        with Store(out / f"{method}-s0" / "store.sqlite", readonly=True) as store:
            for r in store.table("candidates"):
                statuses.append(r["status"])
                assert r["status"] in ("ok", "stopped_early"), (method, r["status"], r["error"])
                if r["status"] == "stopped_early":
                    assert r["error"] == f"stopped by the scheduler after epoch {r['epochs_done']}"
    assert len(statuses) == 2 * BUDGET


def test_stopped_trials_leave_no_process_behind(comparison):
    marker = f"{MARKER_VAR}=".encode()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            assert marker not in env, f"process {pid} of a sandbox is still alive"


def test_the_status_command_reads_a_search_run(comparison):
    out, _ = comparison
    proc = run_cli("status", str(out / "random-s0"), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["totals"]["generated"] == BUDGET


@pytest.mark.parametrize("args, message", [
    (["--methods", "llm,bayes"], "unknown method bayes; choose from llm, tpe, random"),
    (["--budget", "0"], "--budget must be at least 1 (got 0)"),
    (["--dataset", "cifar10", "--set", "data.data_dir=/nonexistent"], "dataset 'cifar10' was not found in /nonexistent"),
    (["--set", "task.families=[resnet, resnot]"], "unknown seed family resnot"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    proc = run_cli("compare", "--out", str(tmp_path), *args, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_an_interrupted_search_is_not_marked_finished_and_the_same_command_resumes_it(ray_session, tmp_path):
    """Ctrl-C while a search trains: Tune stops and saves its state, the command ends interrupted (exit 130)
    without marking the run finished, and the same command resumes it (Tuner.restore) to its whole budget."""
    env = {"RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    args = ["compare", "--methods", "random", "--budget", "3", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path)]
    proc = subprocess.Popen([str(NNGPT), *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "random-s0"
    deadline = time.time() + 120
    while not _candidates(run / "store.sqlite"):  # a trial is training
        assert time.time() < deadline and proc.poll() is None, "no trial ever started"
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert not (run / "compare.json").exists() and _candidates(run / "store.sqlite") < 3
    resumed = run_cli(*args, "--json", env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Configuration for experiment" not in resumed.stdout  # Tune's own box goes to stderr
    (result,) = json.loads(resumed.stdout.strip().splitlines()[-1])["methods"]["random"]["runs"]
    assert result["sent"] == 3 and (run / "compare.json").exists()
    with Store(run / "store.sqlite", readonly=True) as store:
        assert store.totals()["trained_twice"] == 0


def _candidates(path: Path) -> int:
    return store_count(path, lambda store: len(store.table("candidates")))


def test_the_hpo_mode_runs_end_to_end(ray_session, tiny_model, tmp_path, monkeypatch):
    """One held-out network, two training networks, the smallest budgets: every stage runs for real (random
    records in the sandbox, the learner's LoRA update, one-shot answers from base and tuned model, TPE).
    With no `llm.model`, as a user runs it: the tiny model stands in the embedded model's cache folder (in
    a home folder of the test's own), and the learner and the deployment must both get the copy made
    beside the comparison."""
    from nngpt_ray.baselines.hpo import TPE_AT, compare_hpo
    from nngpt_ray.bootstrap import model_dir

    settings = tiny_loop_settings(tiny_model)
    settings["llm"] = {k: v for k, v in settings["llm"].items() if k != "model"}
    cfg = Config.model_validate({**settings, "task": {"families": ["plain_cnn", "vgg", "resnet"]},
                                 "train": {"epochs": 1}, "learner": {"epochs": 2, "batch_size": 2}})
    assert cfg.llm.model is None  # (paths were expanded with the real home folder: the data are found)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    shutil.copytree(tiny_model, model_dir())
    summary = compare_hpo(cfg, tmp_path / "hpo", held_out=1, per_network=1, mutants=0, tpe_trials=2, say=lambda _: None)
    assert (tmp_path / "hpo" / "model" / "manifest.json").exists()
    assert len(summary["held_out"]) == 1 and len(summary["trained_on"]) == 2 and summary["examples"] == 2
    [row] = summary["networks"]
    assert row["network"] == summary["held_out"][0]
    assert 0.0 < row["defaults"] <= 1.0 and 0.0 < row["tpe_all"] <= 1.0  # real training happened
    assert all(f"tpe_{k}" in row for k in TPE_AT) and set(summary["parse_failures"]) == {"base", "tuned"}
    assert (tmp_path / "hpo" / "adapters" / "hpo-v1" / "adapter_config.json").exists()
    with Store(tmp_path / "hpo" / "records" / "store.sqlite", readonly=True) as store:
        assert len(store.table("candidates")) == 2
