"""Hostile candidates: each is contained and classified, the host is unaffected, and the next
candidate still runs.

Every category runs with the default sandbox, where the static check refuses most of them outright,
and again with the upper layers switched off where a lower layer is meant to hold on its own:
"audit" (static check off: the runtime audit hook must stop it) and "process-only" (static check and
audit hook off: namespaces, cgroup, rlimits, the watchdog, the kill sweep and parent-side measurement).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from nngpt_ray.config import SandboxConfig
from nngpt_ray.failures import FailureKind
from nngpt_ray.harness import evaluate
from nngpt_ray.sandbox import cgroups
from nngpt_ray.sandbox.process import MARKER_VAR
from nngpt_ray.spec import CandidateSpec, Hyperparameters

NET = '''
import torch
import torch.nn as nn
{imports}


def supported_hyperparameters():
    return {{'lr', 'momentum'}}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))

    def train_setup(self, prm):
        self.criteria = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])

    def learn(self, train_data):
{body}
        for inputs, labels in train_data:
            self.optimizer.zero_grad()
            self.criteria(self(inputs), labels).backward()
            self.optimizer.step()
'''


def hostile(body: str, imports: str = "import os") -> str:
    return NET.format(imports=imports, body="\n".join("        " + line for line in body.strip().splitlines()))


def run(code: str, digits, tmp_path, layers: str, **limits) -> object:
    settings = dict(timeout_s=30, scratch_root=tmp_path / "scratch") | limits
    if layers in ("audit", "process-only"):
        settings |= dict(static_check=False)
    if layers == "process-only":
        settings |= dict(audit_hook=False)
    spec = CandidateSpec(code=code, hyperparameters=Hyperparameters(lr=0.1, batch=64, epochs=1))
    return evaluate(spec, digits, SandboxConfig(**settings))


def assert_no_leftovers(result) -> None:
    token_env = f"{MARKER_VAR}=".encode()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            assert token_env not in env, f"process {pid} of a sandbox is still alive"


ALL = ["default", "audit", "process-only"]


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious")
    return path


@pytest.mark.parametrize("layers", ["default", "audit"])
@pytest.mark.parametrize("action", ["os.remove({victim!r})", "open({outside!r}, 'w').write('x')",
                                    "shutil.rmtree({folder!r})", "pathlib.Path({outside!r}).write_text('x')"])
def test_deleting_and_writing_outside_scratch(digits, tmp_path, victim, layers, action):
    outside = tmp_path / "planted.txt"
    folder = tmp_path / "folder"
    folder.mkdir()
    code = action.format(victim=str(victim), outside=str(outside), folder=str(folder))
    result = run(hostile(code, "import os\nimport shutil\nimport pathlib"), digits, tmp_path, layers)
    expected = FailureKind.UNSAFE if layers == "default" else FailureKind.TRAIN_ERROR
    assert result.failure == expected, result.error
    if layers == "audit":
        assert "sandbox:" in result.error  # refused by the audit hook
    assert victim.read_text() == "precious" and not outside.exists() and folder.is_dir()


@pytest.mark.parametrize("layers", ["default", "audit"])
def test_shell_commands_and_subprocesses(digits, tmp_path, layers):
    marker = tmp_path / "pwned"
    for body in (f"os.system('touch {marker}')", f"subprocess.run(['sh', '-c', 'touch {marker}'])",
                 f"os.execv('/bin/sh', ['sh', '-c', 'touch {marker}'])"):
        result = run(hostile(body, "import os\nimport subprocess"), digits, tmp_path, layers)
        assert result.failure == (FailureKind.UNSAFE if layers == "default" else FailureKind.TRAIN_ERROR)
        assert not marker.exists()


def test_process_layer_confines_a_shell(digits, tmp_path):
    """With the static check and audit hook off, a spawned shell still has no network, no inherited
    secrets, and is killed with the candidate."""
    out = tmp_path / "shell.txt"
    body = (f"os.system('(env; cat /proc/net/dev; sleep 30; echo late >> {out}) > {out} 2>&1 &')\n"
            "import time\ntime.sleep(2)")
    os.environ["NNGPT_TEST_SECRET"] = "s3cr3t"
    try:
        result = run(hostile(body), digits, tmp_path, "process-only")
    finally:
        del os.environ["NNGPT_TEST_SECRET"]
    assert result.failure is None  # the candidate itself trained
    time.sleep(1)
    text = out.read_text()
    assert "s3cr3t" not in text and "NNGPT_TEST_SECRET" not in text
    if result.protections.get("network_namespace") in ("netns", "userns+netns"):
        assert "eth0" not in text  # only a loopback device in its own network namespace
    time.sleep(2)
    assert "late" not in out.read_text()  # the detached shell was killed with the candidate
    assert_no_leftovers(result)


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen()
    server.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                hits.append(conn.recv(100))
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("layers", ALL)
def test_network_connections(digits, tmp_path, listener, layers):
    port, hits = listener
    body = f"s = socket.create_connection(('127.0.0.1', {port}), timeout=3)\ns.sendall(b'exfiltrated')"
    result = run(hostile(body, "import socket"), digits, tmp_path, layers)
    assert result.failure == (FailureKind.UNSAFE if layers == "default" else FailureKind.TRAIN_ERROR)
    if layers == "process-only" and result.protections.get("network_namespace", "").startswith("unavailable"):
        pytest.skip("this node offers no network namespace")
    if layers == "process-only":
        assert "Network is unreachable" in result.error or "refused" in result.error
    time.sleep(0.5)
    assert hits == []


def _pids_limited() -> bool:
    group, _ = cgroups.create("probe", 10, None)
    if group:
        group.remove()
    return group is not None or os.geteuid() != 0


@pytest.mark.parametrize("layers", ALL)
def test_fork_bomb(digits, tmp_path, layers):
    if layers == "process-only" and not _pids_limited():
        pytest.skip("no cgroup and running as root: nothing but the wall clock would bound a fork bomb here")
    body = "for _ in range(5000):\n    os.fork()"  # bounded so a broken sandbox cannot take the host down
    result = run(hostile(body), digits, tmp_path, layers, timeout_s=20, max_processes=32)
    # MEMORY: the watchdog sums the tree's resident memory, and enough forked copies of torch pass the limit
    assert result.failure in (FailureKind.UNSAFE, FailureKind.TRAIN_ERROR, FailureKind.TIMEOUT, FailureKind.CRASHED,
                              FailureKind.MEMORY)
    assert_no_leftovers(result)


@pytest.mark.parametrize("layers", ["default", "process-only"])
def test_thread_bomb(digits, tmp_path, layers):
    if layers == "process-only" and not _pids_limited():
        pytest.skip("no cgroup and running as root: nothing but the wall clock would bound a thread bomb here")
    body = "ts = []\nfor _ in range(3000):\n    t = threading.Thread(target=time.sleep, args=(60,))\n    t.start()\n    ts.append(t)"
    result = run(hostile(body, "import threading\nimport time"), digits, tmp_path, layers, timeout_s=20,
                 max_processes=32)
    assert result.failure in (FailureKind.UNSAFE, FailureKind.TRAIN_ERROR, FailureKind.TIMEOUT, FailureKind.CRASHED)
    assert_no_leftovers(result)


@pytest.mark.parametrize("layers", ALL)
def test_detached_child_acting_later(digits, tmp_path, layers):
    late = tmp_path / "late.txt"
    body = (f"if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(4)\n"
            f"        open({str(late)!r}, 'w').write('acted')\n    os._exit(0)")
    result = run(hostile(body, "import os\nimport time"), digits, tmp_path, layers)
    assert result.failure in (FailureKind.UNSAFE, FailureKind.TRAIN_ERROR, None)
    time.sleep(6)
    assert not late.exists()
    assert_no_leftovers(result)


@pytest.mark.parametrize("layers", ["default", "process-only"])
def test_memory_exhaustion(digits, tmp_path, layers):
    body = "hog = [bytearray(64 * 2**20) for _ in range(200)]"
    result = run(hostile(body, ""), digits, tmp_path, layers, memory_mb=512)
    assert result.failure == FailureKind.MEMORY, result.error
    assert_no_leftovers(result)


@pytest.mark.parametrize("layers", ALL)
def test_disk_exhaustion(digits, tmp_path, layers):
    body = "f = open('big.bin', 'wb')\nfor _ in range(2000):\n    f.write(b'0' * 2**20)"
    result = run(hostile(body, ""), digits, tmp_path, layers, max_file_mb=32)
    if layers == "default":
        assert result.failure == FailureKind.UNSAFE  # `open` is refused before anything runs
    else:
        assert result.failure == FailureKind.CRASHED and "32 MB" in result.error
    assert not any((tmp_path / "scratch").rglob("big.bin"))  # the scratch directory is gone


@pytest.mark.parametrize("body, imports", [
    ("while True:\n    pass", ""),
    ("time.sleep(3600)", "import time"),
    ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass", "import signal"),
])
def test_infinite_loops_and_sleeps(digits, tmp_path, body, imports):
    result = run(hostile(body, imports), digits, tmp_path, "process-only", timeout_s=12)
    assert result.failure == FailureKind.TIMEOUT
    assert result.duration_s < 30
    assert_no_leftovers(result)


@pytest.mark.parametrize("layers", ["default", "process-only"])
def test_exiting_early_with_status_zero(digits, tmp_path, layers):
    result = run(hostile("os._exit(0)"), digits, tmp_path, layers)
    assert result.failure in (FailureKind.UNSAFE, FailureKind.CRASHED)
    if layers == "process-only":
        assert "before finishing" in result.error and not result.epochs


def test_exiting_early_through_sys_exit(digits, tmp_path):
    result = run(hostile("raise SystemExit(0)", ""), digits, tmp_path, "default")
    assert result.failure == FailureKind.CRASHED and "before finishing" in result.error


@pytest.mark.parametrize("layers", ALL)
def test_crashing_the_interpreter(digits, tmp_path, layers):
    result = run(hostile("ctypes.string_at(0)", "import ctypes"), digits, tmp_path, layers)
    expected = {"default": FailureKind.UNSAFE, "audit": FailureKind.TRAIN_ERROR, "process-only": FailureKind.CRASHED}
    assert result.failure == expected[layers], result.error
    if layers == "process-only":
        assert "SIGSEGV" in result.error


def test_flooding_stdout(digits, tmp_path):
    body = "for _ in range(200000):\n    print('x' * 1000)"
    result = run(hostile(body, ""), digits, tmp_path, "default", max_output_kb=16, timeout_s=60)
    assert result.failure is None  # the flood is drained and dropped; the network still trained
    assert result.epochs


@pytest.mark.parametrize("layers", ["default", "process-only"])
def test_reading_secrets_from_the_environment(digits, tmp_path, layers):
    os.environ["AWS_SECRET_ACCESS_KEY"] = "AKIA-not-for-candidates"
    try:
        body = "raise RuntimeError('found: ' + str(os.environ.get('AWS_SECRET_ACCESS_KEY')))"
        result = run(hostile(body), digits, tmp_path, layers)
    finally:
        del os.environ["AWS_SECRET_ACCESS_KEY"]
    assert result.failure in (FailureKind.UNSAFE, FailureKind.TRAIN_ERROR)
    assert "AKIA-not-for-candidates" not in (result.error or "")
    if layers == "process-only":
        assert "found: None" in result.error


FORGER = '''
import os
import json
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'lr', 'momentum'}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(1, out_shape[0])

    def forward(self, x):
        return self.fc(torch.zeros(x.shape[0], 1))  # the same answer for every image

    def train_setup(self, prm):
        pass

    def learn(self, train_data):
        print('{"t": "epoch", "epoch": 1, "val_accuracy": 1.0}')
        print('val_accuracy: 1.0')
        torch.Tensor.argmax = lambda self, *a, **k: torch.arange(self.shape[0]) % 10
        for fd in range(3, 12):
            try:
                os.write(fd, b'{"t": "epoch", "epoch": 1, "pred": [0]}\\n')
            except OSError:
                pass
'''


@pytest.mark.parametrize("layers", ["default", "process-only"])
def test_forging_its_own_accuracy(digits, tmp_path, layers):
    result = run(FORGER, digits, tmp_path, layers)
    if layers == "default":
        assert result.failure == FailureKind.UNSAFE
        return
    # whatever it printed or patched, accuracy is what the parent scores against labels it never saw
    assert result.failure in (None, FailureKind.CRASHED)
    for epoch in result.epochs:
        assert epoch.val_accuracy < 0.3


def test_nan_loss(digits, tmp_path):
    body = "for p in self.parameters():\n    p.data.fill_(float('nan'))"
    result = run(hostile(body, ""), digits, tmp_path, "default")
    assert result.failure == FailureKind.NAN


def test_next_candidate_runs_after_the_hostile_ones(digits, tmp_path):
    result = run(hostile("pass", ""), digits, tmp_path, "default")
    assert result.failure is None and result.best_accuracy > 0.5
    assert result.protections["static_check"] and result.protections["audit_hook"]


def test_protections_in_force_are_recorded(digits, tmp_path):
    result = run(hostile("pass", ""), digits, tmp_path, "default")
    p = result.protections
    for key in ("process", "environment", "scratch_dir", "cgroup", "network_namespace", "rlimit_cpu_s",
                "rlimit_file_mb", "rlimit_nofile", "audit_hook", "static_check", "parent_watchdog"):
        assert key in p, key
    assert "rlimit_as_mb" in p  # CPU run: the address-space limit applies


def test_wall_clock_kill_does_not_wait_for_sigterm(digits, tmp_path):
    started = time.monotonic()
    body = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nimport time\ntime.sleep(600)"
    result = run(hostile(body, "import signal"), digits, tmp_path, "process-only", timeout_s=10)
    assert result.failure == FailureKind.TIMEOUT and time.monotonic() - started < 25  # SIGKILL, not a polite SIGTERM
