"""Hostile candidates: each is contained and classified, the host is unaffected, and the next
candidate still runs.

Every category runs with the default sandbox, where the static check refuses most of them outright,
and again with the upper layers switched off where a lower layer is meant to hold on its own:
"audit" (static check off: the runtime audit hook must stop it) and "process-only" (static check and
audit hook off: namespaces, cgroup, rlimits, the watchdogs, the kill sweep and parent-side measurement).

All of them run through one fork server, as a trainer's candidates do: every layer is applied in the
forked child, and after each candidate nothing of it may be left below the zygote.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nngpt_ray.config import SandboxConfig
from nngpt_ray.failures import FailureKind
from nngpt_ray.harness import evaluate
from nngpt_ray.sandbox import cgroups
from nngpt_ray.sandbox.process import MARKER_VAR, ForkServer
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


@pytest.fixture(scope="module")
def server():
    with ForkServer("hostile-tests") as s:
        yield s


@pytest.fixture
def run(digits, server, tmp_path):
    def run(code: str, layers: str, **limits):
        settings = dict(timeout_s=30, scratch_root=tmp_path / "scratch") | limits
        if layers in ("audit", "process-only"):
            settings |= dict(static_check=False)
        if layers == "process-only":
            settings |= dict(audit_hook=False)
        spec = CandidateSpec(code=code, hyperparameters=Hyperparameters(lr=0.1, batch=64, epochs=1))
        result = evaluate(spec, digits, SandboxConfig(**settings), server=server)
        scratch = tmp_path / "scratch"
        assert not scratch.exists() or not any(scratch.iterdir()), "the scratch directory was left behind"
        return result

    return run


def assert_no_leftovers(server: ForkServer) -> None:
    """Nothing of any candidate is alive: no process below the zygote, no marked process but the zygote."""
    assert server.descendants() == [], "a candidate's process is still alive below the zygote"
    marker = f"{MARKER_VAR}=".encode()
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != server.pid:
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            assert marker not in env, f"process {pid} of a sandbox is still alive"


ALL = ["default", "audit", "process-only"]


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious")
    return path


@pytest.mark.parametrize("layers", ["default", "audit"])
@pytest.mark.parametrize("action", ["os.remove({victim!r})", "open({outside!r}, 'w').write('x')",
                                    "shutil.rmtree({folder!r})", "pathlib.Path({outside!r}).write_text('x')"])
def test_deleting_and_writing_outside_scratch(run, tmp_path, victim, layers, action):
    outside = tmp_path / "planted.txt"
    folder = tmp_path / "folder"
    folder.mkdir()
    code = action.format(victim=str(victim), outside=str(outside), folder=str(folder))
    result = run(hostile(code, "import os\nimport shutil\nimport pathlib"), layers)
    expected = FailureKind.UNSAFE if layers == "default" else FailureKind.TRAIN_ERROR
    assert result.failure == expected, result.error
    if layers == "audit":
        assert "sandbox:" in result.error  # refused by the audit hook
    assert victim.read_text() == "precious" and not outside.exists() and folder.is_dir()


@pytest.mark.parametrize("layers", ["default", "audit"])
def test_shell_commands_and_subprocesses(run, server, tmp_path, layers):
    marker = tmp_path / "pwned"
    for body in (f"os.system('touch {marker}')", f"subprocess.run(['sh', '-c', 'touch {marker}'])",
                 f"os.execv('/bin/sh', ['sh', '-c', 'touch {marker}'])"):
        result = run(hostile(body, "import os\nimport subprocess"), layers)
        assert result.failure == (FailureKind.UNSAFE if layers == "default" else FailureKind.TRAIN_ERROR)
        assert not marker.exists()


def test_process_layer_confines_a_shell(run, server, tmp_path):
    """With the static check and audit hook off, a spawned shell still has no network, no inherited
    secrets, and is killed with the candidate."""
    out = tmp_path / "shell.txt"
    body = (f"os.system('(env; cat /proc/net/dev; echo listed; sleep 30; echo late) > {out} 2>&1 &')\n"
            f"while not os.path.exists({str(out)!r}) or 'listed' not in open({str(out)!r}).read():\n    pass")
    os.environ["NNGPT_TEST_SECRET"] = "s3cr3t"
    try:
        result = run(hostile(body), "process-only")
    finally:
        del os.environ["NNGPT_TEST_SECRET"]
    assert result.failure is None  # the candidate itself trained, after its shell had written
    assert_no_leftovers(server)  # the detached shell died with the candidate: it can never write "late"
    text = out.read_text()
    assert "listed" in text and "late" not in text and "PATH=/usr/bin:/bin" in text  # it ran, with our env
    assert "s3cr3t" not in text and "NNGPT_TEST_SECRET" not in text
    if result.protections.get("network_namespace") in ("netns", "userns+netns"):
        assert "eth0" not in text  # only a loopback device in its own network namespace


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
def test_network_connections(run, server, tmp_path, listener, layers):
    port, hits = listener
    body = f"s = socket.create_connection(('127.0.0.1', {port}), timeout=3)\ns.sendall(b'exfiltrated')"
    result = run(hostile(body, "import socket"), layers)
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
def test_fork_bomb(run, server, tmp_path, layers):
    if layers == "process-only" and not _pids_limited():
        pytest.skip("no cgroup and running as root: nothing but the wall clock would bound a fork bomb here")
    body = "for _ in range(5000):\n    os.fork()"  # bounded so a broken sandbox cannot take the host down
    result = run(hostile(body), layers, timeout_s=20, max_processes=32)
    if layers == "default":
        assert result.failure == FailureKind.UNSAFE and "'os'" in result.error
    elif layers == "audit":
        assert result.failure == FailureKind.TRAIN_ERROR and "sandbox: 'os.fork'" in result.error
    else:  # which limit bites first is a race: pids.max (fork fails), the tree's memory (enough copies of torch)
        assert result.failure in (FailureKind.TRAIN_ERROR, FailureKind.MEMORY, FailureKind.CRASHED), result.error
    assert_no_leftovers(server)


@pytest.mark.parametrize("layers", ["default", "process-only"])
def test_thread_bomb(run, server, tmp_path, layers):
    if layers == "process-only" and not _pids_limited():
        pytest.skip("no cgroup and running as root: nothing but the wall clock would bound a thread bomb here")
    body = "ts = []\nfor _ in range(3000):\n    t = threading.Thread(target=time.sleep, args=(60,))\n    t.start()\n    ts.append(t)"
    result = run(hostile(body, "import threading\nimport time"), layers, timeout_s=20,
                 max_processes=32)
    if layers == "default":
        assert result.failure == FailureKind.UNSAFE and "'threading'" in result.error
    else:  # pids.max refuses the thread, or the address-space limit its stack
        assert result.failure in (FailureKind.TRAIN_ERROR, FailureKind.MEMORY), result.error
        assert "thread" in result.error.lower() or "memory" in result.error.lower()
    assert_no_leftovers(server)


@pytest.mark.parametrize("layers", ALL)
def test_detached_child_acting_later(run, server, tmp_path, layers):
    late = tmp_path / "late.txt"
    body = (f"if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(4)\n"
            f"        open({str(late)!r}, 'w').write('acted')\n    os._exit(0)")
    result = run(hostile(body, "import os\nimport time"), layers)
    expected = {"default": FailureKind.UNSAFE, "audit": FailureKind.TRAIN_ERROR, "process-only": None}[layers]
    assert result.failure == expected, result.error
    assert_no_leftovers(server)  # nothing alive that could still act: no sleep racing the grandchild
    assert not late.exists()


@pytest.mark.parametrize("layers", ["default", "process-only"])
def test_memory_exhaustion(run, server, tmp_path, layers):
    body = "hog = [bytearray(64 * 2**20) for _ in range(200)]"
    result = run(hostile(body, ""), layers, memory_mb=512)
    assert result.failure == FailureKind.MEMORY, result.error
    assert_no_leftovers(server)


@pytest.mark.parametrize("layers", ALL)
def test_disk_exhaustion(run, server, tmp_path, layers):
    body = "f = open('big.bin', 'wb')\nfor _ in range(2000):\n    f.write(b'0' * 2**20)"
    result = run(hostile(body, ""), layers, max_file_mb=32)
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
def test_infinite_loops_and_sleeps(run, server, tmp_path, body, imports):
    result = run(hostile(body, imports), "process-only", timeout_s=6)
    assert result.failure == FailureKind.TIMEOUT
    assert result.duration_s < 30
    assert_no_leftovers(server)


@pytest.mark.parametrize("layers", ["default", "process-only"])
def test_exiting_early_with_status_zero(run, server, tmp_path, layers):
    result = run(hostile("os._exit(0)"), layers)
    if layers == "default":
        assert result.failure == FailureKind.UNSAFE
    else:
        assert result.failure == FailureKind.CRASHED and "before finishing" in result.error and not result.epochs


def test_exiting_early_through_sys_exit(run, server, tmp_path):
    result = run(hostile("raise SystemExit(0)", ""), "default")
    assert result.failure == FailureKind.CRASHED and "before finishing" in result.error


@pytest.mark.parametrize("layers", ALL)
def test_crashing_the_interpreter(run, server, tmp_path, layers):
    result = run(hostile("ctypes.string_at(0)", "import ctypes"), layers)
    expected = {"default": FailureKind.UNSAFE, "audit": FailureKind.TRAIN_ERROR, "process-only": FailureKind.CRASHED}
    assert result.failure == expected[layers], result.error
    if layers == "process-only":
        assert "SIGSEGV" in result.error


def test_flooding_stdout(run, server, tmp_path):
    body = "for _ in range(200000):\n    print('x' * 1000)"
    result = run(hostile(body, ""), "default", max_output_kb=16, timeout_s=60)
    assert result.failure is None  # the flood is drained and dropped; the network still trained
    assert result.epochs


@pytest.mark.parametrize("layers", ["default", "process-only"])
def test_reading_secrets_from_the_environment(run, server, tmp_path, layers):
    os.environ["AWS_SECRET_ACCESS_KEY"] = "AKIA-not-for-candidates"
    try:
        body = "raise RuntimeError('found: ' + str(os.environ.get('AWS_SECRET_ACCESS_KEY')))"
        result = run(hostile(body), layers)
    finally:
        del os.environ["AWS_SECRET_ACCESS_KEY"]
    assert "AKIA-not-for-candidates" not in (result.error or "")
    if layers == "default":
        assert result.failure == FailureKind.UNSAFE
    else:
        assert result.failure == FailureKind.TRAIN_ERROR and "found: None" in result.error


FORGER = '''
import os
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
LEARN
'''
FORGE_PIPE = '''        for fd in range(3, 64):
            try:
                os.write(fd, b'{"t": "epoch", "epoch": 1, "pred": [0]}\\n')
            except OSError:
                pass'''
PATCH_AND_PRINT = '''        print('{"t": "epoch", "epoch": 1, "val_accuracy": 1.0}')
        print('val_accuracy: 1.0')
        torch.Tensor.argmax = lambda self, *a, **k: torch.arange(self.shape[0]) % 10'''


@pytest.mark.parametrize("layers", ["default", "process-only"])
def test_forging_a_result_message(run, server, tmp_path, layers):
    result = run(FORGER.replace('LEARN', FORGE_PIPE), layers)
    if layers == "default":
        assert result.failure == FailureKind.UNSAFE
        return
    # its forged line reached the parent before any real epoch, and was refused as a broken protocol
    assert result.failure == FailureKind.CRASHED and "invalid result for epoch 1" in result.error
    assert result.epochs == []


def test_printing_and_patching_change_no_measurement(run, server, tmp_path):
    result = run(FORGER.replace('LEARN', PATCH_AND_PRINT), "process-only")
    assert result.failure is None and len(result.epochs) == 1  # it ran to the end, and was measured
    assert result.epochs[0].val_accuracy < 0.3  # chance: the labels are the parent's, whatever it printed


def test_nan_loss(run, server, tmp_path):
    body = "for p in self.parameters():\n    p.data.fill_(float('nan'))"
    result = run(hostile(body, ""), "default")
    assert result.failure == FailureKind.NAN


def test_next_candidate_runs_after_the_hostile_ones(run, server, tmp_path):
    result = run(hostile("pass", ""), "default")
    assert result.failure is None and result.best_accuracy > 0.5
    assert result.protections["static_check"] and result.protections["audit_hook"]


def test_protections_in_force_are_recorded(run, server, tmp_path):
    result = run(hostile("pass", ""), "default", timeout_s=40, max_file_mb=48, max_open_files=200)
    p = result.protections
    assert p["process"].startswith("own session and process group") and p["environment"].startswith("stripped")
    assert p["scratch_dir"] is True and p["static_check"] is True and p["audit_hook"] is True
    assert p["parent_watchdog"] is True and p["parent_death_signal"] is True
    assert p["rlimit_cpu_s"] == 40 + 30 and p["rlimit_file_mb"] == 48 and p["rlimit_nofile"] == 200
    assert p["rlimit_as_mb"] > 2048  # CPU run: torch's own footprint plus memory_mb
    cgroup_made, _ = cgroups.create("probe-protections", 10, None)
    if cgroup_made:
        cgroup_made.remove()
        assert p["cgroup"].startswith("cgroup v") and p["cgroup_joined"] is True
    else:
        assert p["cgroup"].startswith("no writable cgroup") or p["cgroup"].startswith("cgroup v2 not writable")
    assert p["network_namespace"] in ("netns", "userns+netns") or p["network_namespace"].startswith("unavailable")


def test_wall_clock_kill_does_not_wait_for_sigterm(run, server, tmp_path):
    started = time.monotonic()
    body = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nimport time\ntime.sleep(600)"
    result = run(hostile(body, "import signal"), "process-only", timeout_s=5)
    assert result.failure == FailureKind.TIMEOUT and time.monotonic() - started < 25  # SIGKILL, not a polite SIGTERM


def test_a_stalled_candidate_is_stopped_long_before_its_wall_clock(run, server, tmp_path):
    """An endless loop in forward() takes no new batch: the stall watchdog kills it, not the 300 s limit."""
    code = hostile("pass", "").replace("        return self.fc(x.flatten(1))",
                                       "        while self.training:\n            pass\n        return self.fc(x.flatten(1))")
    started = time.monotonic()
    result = run(code, "default", timeout_s=300, stall_s=4)
    assert result.failure == FailureKind.TIMEOUT and result.error.startswith("stalled"), result.error
    assert "last phase: train" in result.error and time.monotonic() - started < 30
    assert_no_leftovers(server)


def test_a_slow_candidate_that_keeps_taking_batches_is_not_stalled(run, server, tmp_path):
    body = "for _ in range(20):\n    torch.randn(256, 256) @ torch.randn(256, 256)\nimport time\ntime.sleep(0.15)"
    code = hostile("pass", "").replace("            self.optimizer.step()",
                                       "            self.optimizer.step()\n" + "\n".join(
                                           "            " + line for line in body.splitlines()))
    started = time.monotonic()
    result = run(code, "process-only", stall_s=2)
    assert result.failure is None, result.error
    assert time.monotonic() - started > 2  # slower than the stall limit in all, never idle that long


def test_a_candidate_that_kills_its_zygote_is_classified_and_the_next_one_runs(run, server, tmp_path):
    before = server.pid
    result = run(hostile("os.kill(os.getppid(), 9)\nimport time\ntime.sleep(10)"), "process-only")
    assert result.failure == FailureKind.CRASHED and "fork server died" in result.error, result.error
    assert_no_leftovers(server)
    again = run(hostile("pass", ""), "default")
    assert again.failure is None and server.pid != before  # a fresh zygote took over


def test_the_child_holds_no_descriptor_of_its_zygote(run, server, tmp_path):
    body = "raise RuntimeError('fds=' + ','.join(sorted(os.listdir('/proc/self/fd'), key=int)))"
    result = run(hostile(body), "process-only")
    assert result.failure == FailureKind.TRAIN_ERROR
    fds = [int(x) for x in result.error.split("fds=")[1].split()[0].strip(" ,.'").split(",")]
    assert len(fds) == 6, fds  # stdin/out/err, its result and control pipes, and the listdir itself


PRIORITY_PROBE = """
import sys
from pathlib import Path
Path("/proc/self/autogroup").write_text("7")  # this trainer's session runs at a low priority
from nngpt_ray.config import SandboxConfig
from nngpt_ray.datasets import prepare
from nngpt_ray.harness import evaluate
from nngpt_ray.spec import CandidateSpec, Hyperparameters
spec = CandidateSpec(code=sys.argv[1], hyperparameters=Hyperparameters(lr=0.1, batch=64, epochs=1))
print(evaluate(spec, prepare("digits"), SandboxConfig(scratch_root=Path(sys.argv[2]), static_check=False,
                                                      audit_hook=False)).error)
"""


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="the kernel does not group by session")
def test_a_sandbox_keeps_the_cpu_priority_of_the_trainer_that_started_it(tmp_path):
    """The zygote and each child run in sessions of their own, which under autogroup are scheduling groups
    of their own: they must not climb out of a trainer started at a low priority to the default one."""
    code = hostile("raise RuntimeError('group nice=' + open('/proc/self/autogroup').read().split()[-1])")
    proc = subprocess.run([sys.executable, "-c", PRIORITY_PROBE, code, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, start_new_session=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "group nice=7" in proc.stdout, proc.stdout
