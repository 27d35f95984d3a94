"""The parent side of a sandboxed candidate: a fork server per owner, one confined child per candidate,
watched and killed as a whole.

`ForkServer` starts `child.py` once per owner (a trainer) as a *zygote*: a confined interpreter (own
session, an environment holding nothing of the parent's, `python -I`) that has imported torch and
prepared the data, and that forks one child per candidate. So a candidate starts in milliseconds
instead of paying for a fresh interpreter importing torch.

`SandboxProcess` is one candidate: a scratch directory as cwd/HOME/TMPDIR, its own cgroup where the node
allows one, private pipes for results and control, its output captured as a bounded tail. The child
applies every other layer to itself right after the fork (see child.py). While it runs, the parent
enforces the wall clock, a stall watchdog (no batch taken and no phase finished for `stall_s`), the
memory of the whole process tree and the size of the scratch directory. At the end it kills the
process group, the cgroup, every process carrying the candidate's marker, and every descendant of the
zygote (which is a subreaper, so detached processes are re-parented to it and cannot hide).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from nngpt_ray.config import SandboxConfig
from nngpt_ray.sandbox import cgroups

CHILD_SCRIPT = Path(__file__).with_name("child.py")
MARKER_VAR = "NNGPT_SANDBOX"
TORCH_ALLOWANCE_MB = 1536  # resident size of a process that imported torch (CUDA build), on top of memory_mb
_PASS_THROUGH_ENV = ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "NVIDIA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")


class SandboxUnavailable(RuntimeError):
    """The fork server could not be started or stopped answering."""


@dataclass
class ExitInfo:
    returncode: int | None
    killed_for: str | None  # "timeout" | "stall" | "memory" | "disk" | "protocol" | None
    output_tail: str
    output_bytes: int
    cgroup_oom: bool = False
    server_lost: bool = False  # the fork server died while the candidate ran

    @property
    def signal_name(self) -> str | None:
        if self.returncode is not None and self.returncode < 0:
            with contextlib.suppress(ValueError):
                return signal.Signals(-self.returncode).name
        return None


def base_environment(token: str, threads: int) -> dict[str, str]:
    """The whole environment a sandboxed process gets: nothing of the parent's but the GPU selection."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "MALLOC_ARENA_MAX": "2", MARKER_VAR: token}
    env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    env.update({k: os.environ[k] for k in _PASS_THROUGH_ENV if k in os.environ})
    return env


class ForkServer:
    """One zygote per owner. Not thread-safe: an owner (a trainer) runs one candidate at a time."""

    def __init__(self, owner: str = "nngpt", start_timeout_s: float = 180) -> None:
        self.owner, self.start_timeout_s = owner, start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.pid = 0
        self.exits: dict[int, int] = {}
        self._tail: deque[bytes] = deque(maxlen=64)

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the zygote and wait until it has imported torch. Raises SandboxUnavailable."""
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        token = f"{owner_tag(self.owner)}-zygote-{uuid.uuid4().hex[:8]}"
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-X", "faulthandler", str(CHILD_SCRIPT), str(theirs.fileno()),
             str(os.getpid())],
            env=base_environment(token, 1), cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, pass_fds=(theirs.fileno(),), start_new_session=True, close_fds=True)
        theirs.close()
        self.sock, self.exits = ours, {}
        threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True).start()
        ready = self._receive(self.start_timeout_s, until=lambda m: m.get("t") == "ready")
        if ready is None:
            tail = b"".join(self._tail).decode(errors="replace").strip()[-1500:]
            self.close()
            raise SandboxUnavailable(f"the sandbox fork server did not start{': ' + tail if tail else ''}")
        self.pid = int(ready["pid"])

    def spawn(self, job: dict, fds: list[int]) -> int:
        """Fork a child for `job` with `fds` (result write end, control read end, output write end)."""
        if not self.alive:
            self.start()
        assert self.sock is not None
        job = dict(job, zygote_pid=self.pid)
        try:
            socket.send_fds(self.sock, [json.dumps({"job": job}).encode()], fds)
        except OSError as err:
            self.close()
            raise SandboxUnavailable(f"the sandbox fork server stopped answering ({err.strerror})") from None
        reply = self._receive(60, until=lambda m: m.get("t") in ("spawned", "error"))
        if reply is None:
            self.close()
            raise SandboxUnavailable("the sandbox fork server stopped answering")
        if reply["t"] == "error":
            raise SandboxUnavailable(f"the sandbox could not prepare the data: {reply['error']}")
        return int(reply["pid"])

    def exit_code(self, pid: int, timeout: float = 0.0) -> int | None:
        """The exit code of child `pid` once the zygote reaped it (negative: killed by that signal)."""
        if pid not in self.exits:
            self._receive(timeout, until=lambda m: m.get("t") == "exit" and m.get("pid") == pid)
        return self.exits.get(pid)

    def descendants(self) -> list[int]:
        """Every process below the zygote: the candidate and whatever it left, detached or not."""
        try:
            return [p.pid for p in psutil.Process(self.pid).children(recursive=True)]
        except psutil.Error:
            return []

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
        if self.proc is not None:
            if self.pid:
                cgroups.kill_until_gone(self.descendants)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            self.proc, self.pid = None, 0

    def _receive(self, timeout: float, until) -> dict | None:
        """Read zygote messages (recording exits) until one satisfies `until`, the timeout, or EOF."""
        deadline = time.monotonic() + timeout
        while self.sock is not None:
            remaining = deadline - time.monotonic()
            self.sock.settimeout(max(0.0, remaining))
            try:
                data = self.sock.recv(1 << 16)
            except (TimeoutError, BlockingIOError):
                return None
            except OSError:
                data = b""
            if not data:  # the zygote is gone
                self.proc and self.proc.poll()
                return None
            message = json.loads(data)
            if message.get("t") == "exit":
                self.exits[int(message["pid"])] = int(message["code"])
            if until(message):
                return message
            if remaining <= 0:
                return None
        return None

    def _drain(self, stream) -> None:
        while chunk := stream.read1(1 << 14):
            self._tail.append(chunk)


@dataclass
class SandboxProcess:
    """A confined child process running one candidate. Use as a context manager."""

    job: dict
    code: str
    settings: SandboxConfig
    server: ForkServer
    owner: str = "nngpt"  # who runs it (a trainer); `sweep(owner)` kills what a dead owner left behind
    read_roots: list[str] = field(default_factory=list)
    protections: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.token = f"{owner_tag(self.owner)}-{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> SandboxProcess:
        s = self.settings
        root = str(s.scratch_root.expanduser()) if s.scratch_root else None
        if root:
            os.makedirs(root, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"nngpt-{self.token}-", dir=root))
        (self.scratch / "candidate.py").write_text(self.code)
        self.cgroup, cgroup_note = (None, "disabled")
        memory_bytes = (s.memory_mb + TORCH_ALLOWANCE_MB) * 2**20
        if s.use_cgroups:
            self.cgroup, cgroup_note = cgroups.create(self.token, s.max_processes + 16, memory_bytes)
        self.memory_limit_bytes = memory_bytes
        threads = self.job.get("threads", 1)
        job = dict(self.job)
        job.update(
            code_path=str(self.scratch / "candidate.py"),
            scratch=str(self.scratch),
            env=base_environment(self.token, threads) | {"HOME": str(self.scratch), "TMPDIR": str(self.scratch)},
            cgroup_procs=self.cgroup.procs_files() if self.cgroup else [],
            isolate_network=s.isolate_network,
            limits={
                "cpu_s": s.timeout_s * max(1, threads) + 30,
                "file_bytes": s.max_file_mb * 2**20,
                "memory_bytes": s.memory_mb * 2**20,
                "nofile": s.max_open_files,
                "nproc": _user_task_count() + s.max_processes,
            },
            audit={"enabled": s.audit_hook, "write_root": str(self.scratch),
                   "read_roots": [*self.read_roots, str(self.scratch), *_python_roots(), "/proc", "/sys",
                                  "/dev/null", "/dev/urandom", "/dev/shm", "/dev/nvidia", "/usr/lib", "/usr/share/zoneinfo"]},
        )
        result_r, result_w = os.pipe()
        control_r, control_w = os.pipe()
        output_r, output_w = os.pipe()
        self._results = os.fdopen(result_r, "rb", buffering=0)
        self._control = os.fdopen(control_w, "w", buffering=1)
        self._tail: deque[bytes] = deque()
        self._tail_bytes = 0
        self._output_bytes = 0
        self.killed_for: str | None = None
        self.peak_rss = 0
        self.pid = 0
        self.started = time.monotonic()
        self.last_progress = self.started
        self.phase = "starting"
        try:
            self.pid = self.server.spawn(job, [result_w, control_r, output_w])
        finally:
            for fd in (result_w, control_r, output_w):
                os.close(fd)
            self._reader = threading.Thread(target=self._drain_output, args=(os.fdopen(output_r, "rb", buffering=0),),
                                            daemon=True)
            self._reader.start()
        self.protections.update(
            process="own session and process group (forked from a per-trainer zygote)",
            environment="stripped (no inherited variables)", scratch_dir=True, cgroup=cgroup_note,
            static_check=s.static_check, parent_watchdog=True,
        )
        return self

    def __exit__(self, *exc) -> None:
        if self.pid:
            self.kill_tree()
        with contextlib.suppress(OSError):
            self._results.close()
        with contextlib.suppress(OSError):
            self._control.close()
        if self.cgroup:
            self.cgroup.remove()
        shutil.rmtree(self.scratch, ignore_errors=True)

    # ------------------------------------------------------------ talking to the child

    def messages(self, deadline_s: float) -> Iterator[dict]:
        """Messages from the child until it closes its pipe, exits, or a watchdog kills it. Heartbeats
        ({"t": "beat"}) are consumed here: they only feed the stall watchdog."""
        selector = selectors.DefaultSelector()
        selector.register(self._results, selectors.EVENT_READ)
        buffer = b""
        last_disk_check = 0.0
        stall_s = self.settings.stall_s
        try:
            while True:
                now = time.monotonic()
                if now - self.started > deadline_s:
                    self._kill_for("timeout")
                    return
                if stall_s and now - self.last_progress > stall_s:
                    self._kill_for("stall")
                    return
                rss = self._tree_rss()
                self.peak_rss = max(self.peak_rss, rss)
                if rss > self.memory_limit_bytes:
                    self._kill_for("memory")
                    return
                if now - last_disk_check > 1.0:
                    last_disk_check = now
                    if _dir_size(self.scratch, limit_entries=20000) > self.settings.max_scratch_mb * 2**20:
                        self._kill_for("disk")
                        return
                if not selector.select(timeout=0.2):
                    if self.server.exit_code(self.pid) is not None and not selector.select(timeout=0):
                        return
                    if not self.server.alive:
                        return
                    continue
                chunk = self._results.read(1 << 16)
                if not chunk:
                    return
                buffer += chunk
                if len(buffer) > 64 * 2**20:
                    self._kill_for("protocol")
                    return
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        message = json.loads(line)
                    except ValueError:
                        message = {"t": "garbage"}
                    if not isinstance(message, dict):
                        message = {"t": "garbage"}
                    self.last_progress = time.monotonic()
                    if message.get("t") == "beat":
                        self.phase = str(message.get("phase"))[:40]
                        continue
                    yield message
        finally:
            selector.close()

    def send(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._control.write(line + "\n")
            self._control.flush()
        self.last_progress = time.monotonic()  # time the parent spent deciding is not the candidate's stall

    def finish(self, grace_s: float = 5.0) -> ExitInfo:
        """Wait briefly for a voluntary exit, then kill whatever is left; report how it ended."""
        with contextlib.suppress(OSError, ValueError):
            self._control.close()
        code = self.server.exit_code(self.pid, timeout=grace_s)
        if code is None and self.server.alive:
            self.killed_for = self.killed_for or "timeout"
        lost = not self.server.alive
        self.kill_tree()
        self._reader.join(timeout=2)
        oom = bool(self.cgroup and self.cgroup.oom_killed())
        return ExitInfo(self.server.exit_code(self.pid), self.killed_for, self.output_tail(), self._output_bytes, oom,
                        server_lost=lost)

    def output_tail(self) -> str:
        return b"".join(self._tail).decode(errors="replace")

    # ------------------------------------------------------------ confinement

    def kill_tree(self) -> None:
        """SIGKILL the process group, the cgroup, every process carrying this candidate's marker, and
        every descendant of the zygote; then wait (briefly) until the zygote has reaped the child."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.cgroup:
            self.cgroup.kill_all()
        _kill_marked(f"{MARKER_VAR}={self.token}\0".encode())
        cgroups.kill_until_gone(self.server.descendants)
        if self.server.alive:
            self.server.exit_code(self.pid, timeout=5)

    def _kill_for(self, reason: str) -> None:
        self.killed_for = reason
        self.kill_tree()

    def _tree_rss(self) -> int:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def _drain_output(self, stream) -> None:
        keep = self.settings.max_output_kb * 1024
        with stream:
            while chunk := stream.read(1 << 16):
                self._output_bytes += len(chunk)
                self._tail.append(chunk)
                self._tail_bytes += len(chunk)
                while self._tail_bytes - len(self._tail[0]) >= keep:
                    self._tail_bytes -= len(self._tail.popleft())


def owner_tag(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:8]


def sweep(owner: str) -> None:
    """Kill every sandbox process (zygote, candidates, their descendants) and cgroup that a previous
    incarnation of `owner` left behind: a trainer that died mid-candidate cannot clean up after itself,
    so its restart does. Forked processes carry the zygote's start-up environment, marker included."""
    tag = owner_tag(owner)
    _kill_marked(f"{MARKER_VAR}={tag}-".encode())
    cgroups.remove_stale(f"nngpt-{tag}-")


def _kill_marked(marker: bytes) -> None:
    """SIGKILL every process whose environment holds `marker`, until none is left (forks included)."""
    cgroups.kill_until_gone(lambda: [pid for pid in _pids() if _has_marker(pid, marker)])


def _python_roots() -> list[str]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(roots)


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read()
    except OSError:
        return False


def _user_task_count() -> int:
    """Tasks (processes and threads) of this user now: RLIMIT_NPROC counts all of them."""
    uid = os.getuid()
    count = 0
    for pid in _pids():
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{pid}")
            if st.st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
    return count


def _dir_size(path: Path, limit_entries: int) -> int:
    """Bytes under `path`; a directory with more than `limit_entries` entries counts as infinite."""
    total, entries, stack = 0, 0, [str(path)]
    while stack:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as it:
            for entry in it:
                entries += 1
                if entries > limit_entries:
                    return 1 << 62
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
    return total
