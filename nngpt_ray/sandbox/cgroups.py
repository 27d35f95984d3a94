"""A cgroup per candidate where the node lets us make one: a hard cap on processes/threads and memory,
and a way to kill everything inside it, detached grandchildren included.

Works with cgroup v1 (separate `pids` and `memory` hierarchies) and v2 (one unified tree), always below
the cgroup this process already lives in, so it needs no root where the cluster delegates a subtree.
Where nothing is writable the sandbox goes on without it and records that it did.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


@dataclass
class CandidateCgroup:
    """The cgroup directories made for one candidate (one per v1 controller, or one v2 directory)."""

    dirs: dict[str, Path] = field(default_factory=dict)  # controller name ("pids", "memory", "v2") -> dir

    @property
    def controllers(self) -> list[str]:
        return sorted(self.dirs)

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs.values():
            with contextlib.suppress(OSError):
                found.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return found

    def oom_killed(self) -> bool:
        """Did the kernel's OOM killer act inside this cgroup?"""
        mem = self.dirs.get("memory")
        if mem is not None:
            with contextlib.suppress(OSError, ValueError):
                return int((mem / "memory.failcnt").read_text()) > 0 and _v1_oom_kills(mem) > 0
        v2 = self.dirs.get("v2")
        if v2 is not None:
            with contextlib.suppress(OSError, ValueError):
                events = dict(line.split() for line in (v2 / "memory.events").read_text().splitlines())
                return int(events.get("oom_kill", 0)) > 0
        return False

    def kill_all(self) -> None:
        for d in self.dirs.values():
            if (d / "cgroup.kill").exists():  # cgroup v2: the kernel kills the whole group at once
                with contextlib.suppress(OSError):
                    (d / "cgroup.kill").write_text("1")
        kill_until_gone(self.pids)

    def remove(self) -> None:
        self.kill_all()
        for d in self.dirs.values():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def kill_until_gone(find, rounds: int = 100) -> None:
    """SIGKILL every pid `find()` returns, again and again until it returns none (a process may fork
    while its siblings are being killed)."""
    for _ in range(rounds):
        pids = find()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def create(token: str, max_pids: int, memory_bytes: int | None) -> tuple[CandidateCgroup | None, str]:
    """Make the candidate's cgroup(s). Returns (cgroup or None, a note on what was or was not possible)."""
    current = _current_cgroups()
    if "" in current and (ROOT / "cgroup.controllers").exists():  # pure cgroup v2
        base = ROOT / current[""].lstrip("/")
        d = base / f"nngpt-{token}"
        try:
            d.mkdir()
            (d / "pids.max").write_text(str(max_pids))
            if memory_bytes:
                (d / "memory.max").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (d / "memory.swap.max").write_text("0")
        except OSError as err:
            with contextlib.suppress(OSError):
                d.rmdir()
            return None, f"cgroup v2 not writable here ({err.strerror})"
        return CandidateCgroup({"v2": d}), "cgroup v2: pids, memory"

    group = CandidateCgroup()
    notes = []
    for controller, limit_file, value in (("pids", "pids.max", max_pids), ("memory", "memory.limit_in_bytes", memory_bytes)):
        if value is None or controller not in current or not (ROOT / controller).is_dir():
            continue
        d = ROOT / controller / current[controller].lstrip("/") / f"nngpt-{token}"
        try:
            d.mkdir()
            (d / limit_file).write_text(str(value))
            group.dirs[controller] = d
        except OSError as err:
            with contextlib.suppress(OSError):
                d.rmdir()
            notes.append(f"{controller}: {err.strerror}")
    if not group.dirs:
        return None, "no writable cgroup" + (f" ({'; '.join(notes)})" if notes else "")
    return group, "cgroup v1: " + ", ".join(group.controllers)


def remove_stale(prefix: str) -> None:
    """Kill and remove the sub-cgroups of this process's cgroups whose name starts with `prefix`."""
    current = _current_cgroups()
    if "" in current and (ROOT / "cgroup.controllers").exists():
        bases = [ROOT / current[""].lstrip("/")]
    else:
        bases = [ROOT / c / current[c].lstrip("/") for c in ("pids", "memory") if c in current]
    for base in bases:
        with contextlib.suppress(OSError):
            for d in base.iterdir():
                if d.is_dir() and d.name.startswith(prefix):
                    CandidateCgroup({"stale": d}).remove()


def _current_cgroups() -> dict[str, str]:
    """controller -> path of this process's cgroup ("" is the v2 unified entry)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


def _v1_oom_kills(mem: Path) -> int:
    for line in (mem / "memory.oom_control").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 1  # older kernels do not count kills; a failcnt above zero is the best evidence we have
