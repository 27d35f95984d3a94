"""The parent side of a sandboxed candidate: start the child confined, watch it, kill all of it.

One `SandboxProcess` per candidate. It starts `child.py` in a new session and process group, with a
scratch directory as cwd/HOME/TMPDIR, an environment holding nothing of the parent's (no tokens, no
cloud keys), its own cgroup where the node allows one, and a private pipe for results. While it runs,
the parent enforces the wall clock, the memory of the whole process tree and the size of the scratch
directory; captured output is kept as a bounded tail. At the end every process that carries this
candidate's marker is killed, including ones that left the process group with setsid().
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import selectors
import shutil
import signal
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


@dataclass
class ExitInfo:
    returncode: int | None
    killed_for: str | None  # "timeout" | "memory" | "disk" | None
    output_tail: str
    output_bytes: int
    cgroup_oom: bool = False

    @property
    def signal_name(self) -> str | None:
        if self.returncode is not None and self.returncode < 0:
            with contextlib.suppress(ValueError):
                return signal.Signals(-self.returncode).name
        return None


@dataclass
class SandboxProcess:
    """A confined child process running one candidate. Use as a context manager."""

    job: dict
    code: str
    settings: SandboxConfig
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
        result_r, result_w = os.pipe()
        control_r, control_w = os.pipe()
        job = dict(self.job)
        job.update(
            parent_pid=os.getpid(),
            code_path=str(self.scratch / "candidate.py"),
            result_fd=result_w,
            control_fd=control_r,
            cgroup_procs=self.cgroup.procs_files() if self.cgroup else [],
            isolate_network=s.isolate_network,
            limits={
                "cpu_s": s.timeout_s * max(1, job.get("threads", 1)) + 30,
                "file_bytes": s.max_file_mb * 2**20,
                "memory_bytes": s.memory_mb * 2**20,
                "nofile": s.max_open_files,
                "nproc": _user_task_count() + s.max_processes,
            },
            audit={"enabled": s.audit_hook, "write_root": str(self.scratch),
                   "read_roots": [*self.read_roots, str(self.scratch), *_python_roots(), "/proc", "/sys",
                                  "/dev/null", "/dev/urandom", "/dev/shm", "/dev/nvidia", "/usr/lib", "/usr/share/zoneinfo"]},
        )
        job_path = self.scratch / "job.json"
        job_path.write_text(json.dumps(job))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.scratch), "TMPDIR": str(self.scratch),
               "LANG": "C.UTF-8", "MALLOC_ARENA_MAX": "2", MARKER_VAR: self.token}
        threads = str(job.get("threads", 1))
        env.update({k: threads for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
        env.update({k: os.environ[k] for k in _PASS_THROUGH_ENV if k in os.environ})
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-X", "faulthandler", str(CHILD_SCRIPT), str(job_path)],
            cwd=self.scratch, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, pass_fds=(result_w, control_r), start_new_session=True, close_fds=True,
        )
        os.close(result_w)
        os.close(control_r)
        self._results = os.fdopen(result_r, "rb", buffering=0)
        self._control = os.fdopen(control_w, "w", buffering=1)
        self._tail: deque[bytes] = deque()
        self._tail_bytes = 0
        self._output_bytes = 0
        self._reader = threading.Thread(target=self._drain_output, daemon=True)
        self._reader.start()
        self.killed_for: str | None = None
        self.peak_rss = 0
        self.protections.update(
            process="own session and process group", environment="stripped (no inherited variables)",
            scratch_dir=True, cgroup=cgroup_note, static_check=s.static_check, parent_watchdog=True,
        )
        return self

    def __exit__(self, *exc) -> None:
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
        """Messages from the child until it closes its pipe, exits or is killed by a watchdog."""
        selector = selectors.DefaultSelector()
        selector.register(self._results, selectors.EVENT_READ)
        buffer = b""
        last_disk_check = 0.0
        try:
            while True:
                now = time.monotonic()
                if now - self.started > deadline_s:
                    self._kill_for("timeout")
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
                    if self.proc.poll() is not None and not selector.select(timeout=0):
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
                    yield message if isinstance(message, dict) else {"t": "garbage"}
        finally:
            selector.close()

    def send(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._control.write(line + "\n")
            self._control.flush()

    def finish(self, grace_s: float = 5.0) -> ExitInfo:
        """Wait briefly for a voluntary exit, then kill whatever is left; report how it ended."""
        with contextlib.suppress(OSError, ValueError):
            self._control.close()
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.killed_for = self.killed_for or "timeout"
        self.kill_tree()
        self._reader.join(timeout=2)
        oom = bool(self.cgroup and self.cgroup.oom_killed())
        return ExitInfo(self.proc.returncode, self.killed_for, self.output_tail(), self._output_bytes, oom)

    def output_tail(self) -> str:
        return b"".join(self._tail).decode(errors="replace")

    # ------------------------------------------------------------ confinement

    def kill_tree(self) -> None:
        """SIGKILL the process group, the cgroup, and every process carrying this candidate's marker."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.cgroup:
            self.cgroup.kill_all()
        _kill_marked(f"{MARKER_VAR}={self.token}\0".encode())
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def _kill_for(self, reason: str) -> None:
        self.killed_for = reason
        self.kill_tree()

    def _tree_rss(self) -> int:
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def _drain_output(self) -> None:
        keep = self.settings.max_output_kb * 1024
        stream = self.proc.stdout
        assert stream is not None
        while chunk := stream.read1(1 << 16):
            self._output_bytes += len(chunk)
            self._tail.append(chunk)
            self._tail_bytes += len(chunk)
            while self._tail_bytes - len(self._tail[0]) >= keep:
                self._tail_bytes -= len(self._tail.popleft())


def owner_tag(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:8]


def sweep(owner: str) -> None:
    """Kill every sandbox process (and cgroup) a previous incarnation of `owner` left behind: a trainer
    that died mid-candidate cannot clean up after itself, so its restart does."""
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
