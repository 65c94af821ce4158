"""Per-program cgroups: cap a sandboxed program's process count and total memory, find out whether
the kernel killed it for memory, and kill whatever is left of it. cgroup v1 (one hierarchy per
controller) and v2 (unified) both work where the cgroup tree is writable; elsewhere there is none.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
# controller -> limit file, per cgroup version
_LIMIT_FILES = {"pids": ("pids.max",), "memory": ("memory.limit_in_bytes", "memory.max")}


@dataclass(frozen=True)
class Parent:
    """A writable cgroup directory and the limit files its children have."""
    path: Path
    limits: dict[str, str]   # controller -> limit file


def _candidates() -> list[Path]:
    """This process's own cgroup directories: one per v1 controller hierarchy, plus the v2 one."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers:
            found += [ROOT / c / rel for c in controllers.split(",") if c in _LIMIT_FILES]
        else:
            found += [ROOT / rel, ROOT / "unified" / rel]
    return found


def find_parents() -> list[Parent]:
    """The cgroup directories where a child with pids/memory limits can be made (probed by making one)."""
    parents, covered = [], set()
    for base in _candidates():
        probe = base / f"ttscale-probe-{uuid.uuid4().hex[:8]}"
        try:
            probe.mkdir()
        except OSError:
            continue
        try:
            limits = {c: f for c, files in _LIMIT_FILES.items() if c not in covered
                      for f in files if (probe / f).exists()}
        finally:
            probe.rmdir()
        if limits:
            covered |= set(limits)
            parents.append(Parent(base, limits))
    return parents


class ProgramCgroup:
    """A fresh cgroup (one per hierarchy) for one program run."""

    def __init__(self, parents: list[Parent], processes: int, memory_bytes: int):
        values = {"pids": str(processes), "memory": str(memory_bytes)}
        name = f"ttscale-{uuid.uuid4().hex}"
        self.dirs: list[Path] = []
        try:
            for parent in parents:
                path = parent.path / name
                path.mkdir()
                self.dirs.append(path)
                for controller, limit_file in parent.limits.items():
                    (path / limit_file).write_text(values[controller])
        except OSError:
            self.remove()
            raise

    @property
    def procs_files(self) -> list[Path]:
        """The files a process writes its pid to, to join."""
        return [d / "cgroup.procs" for d in self.dirs]

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of this cgroup for exceeding its memory limit."""
        for d in self.dirs:
            for name in ("memory.oom_control", "memory.events"):
                try:
                    fields = dict(line.split() for line in (d / name).read_text().splitlines())
                except (OSError, ValueError):
                    continue
                if int(fields.get("oom_kill", 0)) > 0:
                    return True
        return False

    def kill(self, wait: float = 5.0) -> None:
        """SIGKILL every process still in the cgroup, until the kernel has reaped them all."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            pids = set()
            for procs in self.procs_files:
                try:
                    pids |= {int(p) for p in procs.read_text().split()}
                except OSError:
                    pass
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill()
        for d in self.dirs:
            try:
                d.rmdir()
            except OSError:
                pass
        self.dirs = []
