"""`nngpt eval` as a user runs it: real sandboxed training, every failure classified, no tracebacks."""

from __future__ import annotations

import pytest

from conftest import DATA, eval_json, run_cli

LEMUR = (DATA / "lemur_convbn.py").read_text()


def variant(tmp_path, name: str, old: str, new: str) -> str:
    assert old in LEMUR, old
    path = tmp_path / f"{name}.py"
    path.write_text(LEMUR.replace(old, new))
    return str(path)


def test_lemur_network_runs_unchanged():
    out = eval_json(DATA / "lemur_convbn.py", "--epochs", "2", "--lr", "0.05", "--batch", "32")
    assert out["status"] == "ok" and out["failure"] is None and out["error"] is None
    assert [e["epoch"] for e in out["epochs"]] == [1, 2]
    assert all(e["seconds"] > 0 and e["train_loss"] is not None for e in out["epochs"])
    assert out["best_accuracy"] == max(e["val_accuracy"] for e in out["epochs"])
    assert out["best_accuracy"] > 0.5  # a real network really trained on digits


def test_a_network_that_imports_torchvision_trains(tmp_path):
    """The zygote imports torchvision before the fork: the child could not (its compiled ops fail to load
    under the confinement: 'operator torchvision::nms does not exist')."""
    code = LEMUR.replace("import torch.nn as nn\n", "import torch.nn as nn\nimport torchvision\n", 1).replace(
        "        x = self.avgpool(x)\n",
        "        x = torchvision.ops.stochastic_depth(x, 0.1, 'row', self.training)\n        x = self.avgpool(x)\n", 1)
    assert "torchvision.ops" in code
    (tmp_path / "tv.py").write_text(code)
    out = eval_json(tmp_path / "tv.py", "--epochs", "1", "--lr", "0.05", "--batch", "32")
    assert out["status"] == "ok", out["error"]
    assert out["best_accuracy"] > 0.3


@pytest.mark.parametrize("name, old, new, kind, words", [
    ("syntax", "def forward(self, x):", "def forward(self, x)", "syntax", "SyntaxError"),
    ("no_net", "class Net(nn.Module):", "class Network(nn.Module):", "contract", "no module-level class Net"),
    ("bad_init", "def __init__(self, in_shape: tuple, out_shape: tuple, prm: dict, device: torch.device)",
     "def __init__(self, num_classes, prm)", "contract", "Net.__init__ must take"),
    ("bad_forward", "x = x.flatten(1)", "x = x.flatten(1)[:, :7]", "forward", "forward() failed"),
    ("nan_loss", "loss = self.criteria(outputs, labels)", "loss = self.criteria(outputs, labels) * 1e38 * 1e38",
     "nan", "NaN"),
])
def test_failures_are_classified(tmp_path, name, old, new, kind, words):
    out = eval_json(variant(tmp_path, name, old, new), "--epochs", "2")
    assert out["status"] == "failed"
    assert out["failure"] == kind
    assert words.lower() in out["error"].lower()
    assert "Traceback (most recent call last)" not in out["error"]


def test_timeout_is_classified(tmp_path):
    path = variant(tmp_path, "forever", "self.train()\n", "self.train()\n        while True:\n            pass\n")
    out = eval_json(path, "--epochs", "1", "--set", "sandbox.timeout_s=6")
    assert out["failure"] == "timeout"
    assert "6 s" in out["error"]


def test_human_output_and_progress():
    proc = run_cli("eval", str(DATA / "lemur_convbn.py"), "--epochs", "1")
    assert proc.returncode == 0
    assert "best validation accuracy" in proc.stdout
    assert "epoch 1" in proc.stderr  # progress (a bar on a terminal, a line per epoch otherwise)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "cifar"], "available: digits, mnist, fashion_mnist, cifar10, cifar100, svhn"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--lr", "-1"], "'lr'"),
])
def test_bad_input_exits_nonzero_with_one_line(args, message):
    proc = run_cli("eval", str(DATA / "lemur_convbn.py"), *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_unreadable_file(tmp_path):
    proc = run_cli("eval", str(tmp_path / "missing.py"))
    assert proc.returncode == 2 and "cannot read network file" in proc.stderr


def test_misspelled_config_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  datset: digits\n")
    proc = run_cli("eval", str(DATA / "lemur_convbn.py"), "--config", str(bad))
    assert proc.returncode == 2
    assert "unknown key 'data.datset'" in proc.stderr and "did you mean 'dataset'" in proc.stderr
