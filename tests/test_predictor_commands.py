"""`nngpt predictor fit|eval`, `nngpt suitability fit|eval` and `nngpt transfer` on small stores.

The predictor and suitability stores are written through the real Store API with learning curves drawn
from a known law (so a model that learns the law must beat the baselines, and one that does not fails
the test); the transfer trains real networks in the sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
import nngpt_ray.seeds
from nngpt_ray.api import network_spec
from nngpt_ray.spec import CandidateSpec, EpochResult, EvalResult
from nngpt_ray.store import Store

SEEDS = Path(nngpt_ray.seeds.__file__).parent
FAMILIES = ["plain_cnn", "vgg", "resnet", "mobilenet", "densenet", "senet"]


def write_run(root: Path, rows: list[dict]) -> Path:
    """A run directory whose store holds `rows`, each a finished, trained candidate:
    {family, dataset, lr, params, depth, curve: [accuracies]}."""
    root.mkdir(parents=True)
    with Store(root / "store.sqlite", create=True) as store:
        store.start_cycle(0, 0)
        for r in rows:
            spec = network_spec(SEEDS / f"{r['family']}.py", dataset=r["dataset"], epochs=len(r["curve"]),
                                hyperparameters={"lr": r["lr"]})
            spec = CandidateSpec.model_validate(spec.model_dump(exclude={"id"}) |
                                                {"origin": {"task": "seed", "family": r["family"]}})
            store.add_candidate(spec.id, task="search", method="random", cycle=0, spec=spec)
            epochs = [EpochResult(epoch=k + 1, val_accuracy=a, train_loss=2 * (1 - a), seconds=1.0 + k)
                      for k, a in enumerate(r["curve"])]
            features = {"flops": 20 * r["params"], "depth": r["depth"], "layers": {"Conv2d": r["depth"], "Linear": 1}}
            assert store.complete(EvalResult(candidate_id=spec.id, epochs=epochs, params=r["params"],
                                             features=features))
    return root


def predictor_rows(n: int, seed: int = 0) -> list[dict]:
    """Curves whose later gains follow the network's depth (deep networks keep learning, shallow ones
    plateau): neither the halving-gain rule nor the last accuracy can know that; the features tell it."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        depth = int(rng.integers(2, 30))
        first = float(rng.uniform(0.3, 0.6))
        late_gain = 0.012 * depth
        curve = [first, first + 0.05]
        for _ in range(2):
            curve.append(min(0.99, curve[-1] + late_gain / 2 + float(rng.normal(0, 0.005))))
        rows.append({"family": FAMILIES[i % len(FAMILIES)], "dataset": "digits", "lr": 0.01 + 0.001 * i,
                     "params": int(10 ** rng.uniform(4, 6)), "depth": depth, "curve": curve})
    return rows


@pytest.fixture(scope="module")
def predictor_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("pred") / "run", predictor_rows(72))


def test_predictor_eval_beats_both_baselines_on_held_out_families(predictor_run):
    proc = run_cli("predictor", "eval", str(predictor_run), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] == 72 and result["groups"] == len(FAMILIES)
    models = result["models"]
    assert set(models) == {"learned", "curve", "last_accuracy"}
    assert set(models["learned"]) == {"rmse", "pearson", "within_5", "within_10"}
    assert models["learned"]["rmse"] < models["curve"]["rmse"]
    assert models["learned"]["rmse"] < models["last_accuracy"]["rmse"]
    assert "RMSE" in proc.stdout


def test_predictor_fit_saves_a_model_that_eval_and_the_gate_reload(predictor_run, tmp_path):
    from nngpt_ray.config import PredictorConfig
    from nngpt_ray.predictor import LearnedModel, LearnedPredictor, PredictorInput

    model_file = tmp_path / "p.pkl"
    proc = run_cli("predictor", "fit", str(predictor_run), "--out", str(model_file))
    assert proc.returncode == 0, proc.stderr
    assert "72 trained candidates" in proc.stdout
    proc = run_cli("predictor", "eval", str(predictor_run), "--model", str(model_file), "--json")
    assert proc.returncode == 0, proc.stderr
    fitted_on_these = json.loads(proc.stdout.strip().splitlines()[-1])["models"]["learned"]
    assert fitted_on_these["within_10"] > 0.9  # judged on its own training data it must fit them

    gate = LearnedPredictor(PredictorConfig(kind="learned", margin=0.9), LearnedModel.load(model_file))
    for acc in (0.9, 0.92, 0.95, 0.93, 0.94):
        gate.observe("digits", acc)

    def x(depth: int) -> PredictorInput:
        return PredictorInput(code="", hyperparameters={"lr": 0.02, "epochs": 4}, dataset="digits", classes=10,
                              total_epochs=4, params=50_000,
                              features={"flops": 10**6, "depth": depth, "layers": {"Conv2d": depth, "Linear": 1}},
                              epochs=[EpochResult(epoch=1, val_accuracy=0.5, seconds=1),
                                      EpochResult(epoch=2, val_accuracy=0.55, seconds=1)])

    shallow, deep = gate.decide(x(2)), gate.decide(x(29))
    assert shallow.projected < deep.projected  # it learned that depth carries the late gains
    assert not shallow.go and "predicted" in shallow.reason and shallow.upper is not None
    assert shallow.model == "learned"


def test_predictor_commands_refuse_bad_input_in_one_line(tmp_path, predictor_run):
    small = write_run(tmp_path / "small", predictor_rows(5))
    for args in (("predictor", "fit", str(small)), ("predictor", "eval", str(small))):
        proc = run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "hold 5 trained candidates" in proc.stderr and "at least 30" in proc.stderr

    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle")
    suitability_file = tmp_path / "s.pkl"
    from nngpt_ray import modelfile

    modelfile.save(suitability_file, "suitability", (), {})
    for bad, says in ((garbage, "is not a predictor model file"), (suitability_file, "holds 'suitability'")):
        proc = run_cli("predictor", "eval", str(predictor_run), "--model", str(bad))
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_a_model_of_another_version_is_refused_and_the_actor_falls_back(tmp_path):
    from nngpt_ray import modelfile
    from nngpt_ray.failures import UserError
    from nngpt_ray.predictor import FEATURES, LearnedModel

    old = modelfile.save(tmp_path / "old.pkl", "predictor", FEATURES[:-3], {})
    with pytest.raises(UserError, match="another nngpt-ray version.*nngpt predictor fit"):
        LearnedModel.load(old)


def suitability_rows(n: int, seed: int = 0) -> list[dict]:
    """The same networks on two datasets: deep ones rank higher on mnist, shallow ones on digits."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        depth = int(rng.integers(2, 30))
        base = float(rng.uniform(0.5, 0.9))
        shift = 0.01 * (depth - 16) + float(rng.normal(0, 0.01))
        common = {"family": FAMILIES[i % len(FAMILIES)], "lr": 0.01 + 0.001 * i, "params": 10_000 + 37 * i,
                  "depth": depth}
        rows.append(common | {"dataset": "digits", "curve": [base - 0.05, base - shift]})
        rows.append(common | {"dataset": "mnist", "curve": [base - 0.05, base + shift]})
    return rows


def test_suitability_eval_and_fit(tmp_path):
    rows = suitability_rows(60)
    digits = write_run(tmp_path / "digits", [r for r in rows if r["dataset"] == "digits"])
    mnist = write_run(tmp_path / "mnist", [r for r in rows if r["dataset"] == "mnist"])
    proc = run_cli("suitability", "eval", str(digits), str(mnist), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["datasets"] == ["digits", "mnist"] and result["groups"] == len(FAMILIES)
    assert result["n"] >= 55  # exact rank ties are dropped
    learned, majority = result["models"]["learned"]["accuracy"], result["models"]["majority"]["accuracy"]
    assert learned >= 0.8 and learned > majority + 0.2
    assert "NNGPT" in proc.stdout

    model_file = tmp_path / "s.pkl"
    proc = run_cli("suitability", "fit", str(digits), str(mnist), "--out", str(model_file))
    assert proc.returncode == 0 and "digits vs mnist" in proc.stdout, proc.stderr
    proc = run_cli("suitability", "eval", str(digits), str(mnist), "--model", str(model_file), "--json")
    assert proc.returncode == 0, proc.stderr

    proc = run_cli("suitability", "eval", str(digits))  # one dataset only
    assert proc.returncode == 2 and "nngpt transfer" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("suitability", "eval", str(digits), str(mnist), "--datasets", "digits")
    assert proc.returncode == 2 and "two different names" in proc.stderr


def _fake_mnist(data_dir: Path, n: int) -> None:
    """A tiny MNIST in torchvision's raw layout (random images, balanced labels)."""
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n), ("t10k", n // 4)):
        for suffix, magic, array in (("images-idx3-ubyte", 2051, rng.integers(0, 255, (count, 28, 28))),
                                     ("labels-idx1-ubyte", 2049, np.arange(count) % 10)):
            header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
            (raw / f"{prefix}-{suffix}").write_bytes(header + array.astype(np.uint8).tobytes())


def test_transfer_trains_a_runs_networks_on_a_second_dataset_and_resumes(tmp_path):
    """Real sandboxed training; HOME points into tmp_path so the fake MNIST's arrays stay out of the
    user's cache."""
    source = write_run(tmp_path / "src", [
        {"family": f, "dataset": "digits", "lr": 0.05, "params": 1000, "depth": 3, "curve": [0.5]}
        for f in ("plain_cnn", "resnet")])
    home = tmp_path / "home"
    _fake_mnist(home / ".cache" / "nngpt" / "data", 200)
    env = {"HOME": str(home)}
    dest = tmp_path / "src-mnist"
    proc = run_cli("transfer", str(source), "--dataset", "mnist", "--epochs", "1", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "2 trained now, 0 already there, of 2 networks" in proc.stdout
    assert "[2/2]" in proc.stderr
    with Store(dest / "store.sqlite", readonly=True) as store, Store(source / "store.sqlite", readonly=True) as src:
        rows = store.db.execute("SELECT id, spec, status, epochs_done, features FROM candidates").fetchall()
        originals = {r[0] for r in src.db.execute("SELECT id FROM candidates")}
        assert len(rows) == 2
        for row in rows:
            spec = CandidateSpec.model_validate_json(row["spec"])
            assert spec.dataset == "mnist" and spec.origin.task == "transfer"
            assert spec.origin.parents[0] in originals
            assert row["status"] == "ok" and row["epochs_done"] == 1
            assert json.loads(row["features"])["flops"] > 0
    proc = run_cli("transfer", str(source), "--dataset", "mnist", env=env)
    assert proc.returncode == 0 and "0 trained now, 2 already there" in proc.stdout, proc.stderr
    proc = run_cli("transfer", str(source), "--dataset", "imagenet", env=env)
    assert proc.returncode == 2 and "unknown dataset 'imagenet'" in proc.stderr
