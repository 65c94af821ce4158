"""Run untrusted Python programs: one process per program, limited, isolated, cleaned up.

Each program runs in a fresh temporary directory that is removed afterwards, in a new session,
under resource limits (CPU seconds, address space, file size, no core dumps), and is killed with
its whole process group at a hard wall-clock timeout. Where bubblewrap (`bwrap`) is installed the
program also gets a read-only view of the filesystem (only its directory is writable), new PID,
network (loopback only), IPC and UTS namespaces, and dies with its parent. The number of processes
is capped by a cgroup `pids` controller where one is writable, else by RLIMIT_NPROC (which the
kernel does not apply to root). Without bwrap, a prelude disables sockets, process spawning,
signalling and file deletion from Python; `Sandbox.isolation` says which mode is in use.

Results: `passed`, `failed: <reason>` or `timed out`. Programs run in parallel across cores.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

_PRELUDE = '''\
import builtins, os, shutil, socket, subprocess
def _blocked(*args, **kwargs):
    raise PermissionError("blocked by the ttscale sandbox")
for _name in ("kill", "killpg", "system", "fork", "forkpty", "remove", "unlink", "rmdir", "removedirs", "rename",
              "replace", "putenv", "chmod", "chown", "execv", "execve", "execvp", "spawnv", "truncate"):
    if hasattr(os, _name):
        setattr(os, _name, _blocked)
shutil.rmtree = shutil.move = _blocked
subprocess.Popen = _blocked
socket.socket = _blocked
del _blocked, _name
'''


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 2 * 2 ** 30
    file_bytes: int = 16 * 2 ** 20
    processes: int = 32


def _pids_cgroup_root() -> Path | None:
    """A cgroup directory with a writable `pids` controller, for per-program process caps."""
    candidates = [Path("/sys/fs/cgroup/pids")]
    for line in Path("/proc/self/cgroup").read_text().splitlines() if Path("/proc/self/cgroup").exists() else []:
        if line.startswith("0::"):
            candidates.append(Path("/sys/fs/cgroup") / line[3:].lstrip("/"))
    for base in candidates:
        probe = base / f"ttscale-probe-{uuid.uuid4().hex[:8]}"
        try:
            probe.mkdir()
        except OSError:
            continue
        ok = (probe / "pids.max").exists()
        probe.rmdir()
        if ok:
            return base
    return None


class Sandbox:
    def __init__(self, limits: Limits = Limits(), workers: int | None = None):
        self.limits = limits
        self.workers = workers or os.cpu_count() or 1
        self.bwrap = shutil.which("bwrap") if _bwrap_works() else None
        self.cgroups = _pids_cgroup_root()
        self.isolation = "bwrap" if self.bwrap else "prelude"
        self.prlimit = shutil.which("prlimit")
        if self.prlimit is None:
            raise RuntimeError("the sandbox needs prlimit (util-linux)")

    @property
    def limits_processes(self) -> bool:
        """Whether a fork bomb is held to `limits.processes` (a cgroup, or RLIMIT_NPROC for non-root)."""
        return self.cgroups is not None or os.geteuid() != 0

    def run(self, program: str) -> str:
        workdir = Path(tempfile.mkdtemp(prefix="ttscale-sandbox-"))
        cgroup = self._make_cgroup()
        try:
            (workdir / "program.py").write_text(program if self.bwrap else _PRELUDE + program)
            proc = subprocess.Popen(self._command(workdir, cgroup), cwd=workdir, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                    env=_clean_env())
            try:
                _, stderr = proc.communicate(timeout=self.limits.wall_seconds)
            except subprocess.TimeoutExpired:
                _kill(proc, cgroup)
                proc.communicate()
                return "timed out"
            if proc.returncode == 0:
                return "passed"
            return "failed: " + _reason(proc.returncode, stderr.decode(errors="replace"))
        finally:
            _kill_cgroup(cgroup)
            shutil.rmtree(workdir, ignore_errors=True)

    def _command(self, workdir: Path, cgroup: Path | None) -> list[str]:
        """join the cgroup (sh), set the limits (prlimit), isolate (bwrap), run the program."""
        lim = self.limits
        command = [sys.executable, "-I", "program.py"]
        if self.bwrap:
            command = [self.bwrap, "--ro-bind", "/", "/", "--bind", str(workdir), str(workdir), "--chdir", str(workdir),
                       "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/dev/shm", "--unshare-all", "--die-with-parent",
                       "--new-session", *command]
        nproc = [f"--nproc={lim.processes}"] if os.geteuid() != 0 else []
        command = [self.prlimit, f"--cpu={lim.cpu_seconds}:{lim.cpu_seconds + 1}", f"--as={lim.memory_bytes}", f"--fsize={lim.file_bytes}",
                   "--core=0", *nproc, "--", *command]
        if cgroup is not None:
            command = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup / "cgroup.procs"), *command]
        return command

    def run_many(self, programs: Sequence[str]) -> list[str]:
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self.run, programs))

    def _make_cgroup(self) -> Path | None:
        if self.cgroups is None:
            return None
        path = self.cgroups / f"ttscale-{uuid.uuid4().hex}"
        path.mkdir()
        (path / "pids.max").write_text(str(self.limits.processes))
        return path


def _bwrap_works() -> bool:
    path = shutil.which("bwrap")
    if not path:
        return False
    try:
        return subprocess.run([path, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _clean_env() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")
    return {k: v for k, v in os.environ.items() if k in keep} | {"PYTHONDONTWRITEBYTECODE": "1",
                                                                   "PYTHONHASHSEED": "0"}


def _kill(proc: subprocess.Popen, cgroup: Path | None) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _kill_cgroup(cgroup, remove=False)


def _kill_cgroup(cgroup: Path | None, remove: bool = True) -> None:
    """Kill whatever is left in the program's cgroup, then remove it."""
    if cgroup is None or not cgroup.exists():
        return
    for _ in range(500):                  # up to ~5 s for the kernel to reap them
        pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    if remove:
        try:
            cgroup.rmdir()
        except OSError:
            pass


def _reason(returncode: int, stderr: str) -> str:
    if returncode > 128 and not stderr.strip():   # bwrap reports a signalled child as 128 + signal
        returncode = 128 - returncode
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = {"SIGXCPU": " (CPU limit)", "SIGXFSZ": " (file size limit)", "SIGKILL": " (killed)"}.get(name, "")
        return f"killed by {name}{hint}"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exit code {returncode}"
