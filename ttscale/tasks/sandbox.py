"""Run untrusted Python programs: one process per program, limited, isolated, cleaned up.

Every program runs in a fresh temporary directory (removed afterwards), in a new session, under
resource limits (CPU seconds, address space, file size, no core dumps, number of processes), and is
killed with everything it started at a hard wall-clock timeout. Results: `passed`,
`failed: <reason>` or `timed out`. Programs run in parallel across cores.

Isolation, strongest available first (`Sandbox.isolation` says which one is in use):

- `bwrap` (bubblewrap installed): the filesystem read-only except the program's directory, the
  user's home hidden, new PID, network (loopback only), IPC and UTS namespaces, no capabilities,
  killed with its parent. Run as root, the program also drops to an unused uid of its own, so it can
  signal nothing outside, read no root-only file, and RLIMIT_NPROC (which Linux never applies to
  uid 0) holds; run as another user, it gets a user namespace whose process count is its own.
- `netns` (no bwrap, but `unshare --net` works, i.e. root): a new network namespace, plus the prelude.
- `prelude`: Python-level guards only (sockets, subprocesses, signals, file deletion disabled).

Where the cgroup tree is writable each program also gets its own cgroup capping its processes and
their total memory (the only cap on a fork-and-allocate bomb's sum), which kills it all at the end.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ttscale.tasks import cgroups

log = logging.getLogger(__name__)

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
# starts the program without `site` (its .pth hooks cost ~35 ms a start) but with site-packages on the path
_LAUNCH = ("import sys; sys.path += {}; sys.argv = [__file__ := 'program.py']; "
           "exec(compile(open(__file__, 'rb').read(), __file__, 'exec'))").format(site.getsitepackages())
# joins the program's cgroups (files before "--"), then execs the rest
_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
# programs run as root drop to uids of their own: one per concurrent program, so counts are per program
_UID_BASE = 1_000_000_000 + os.getpid() % 100_000 * 100


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 2 * 2 ** 30      # address space per process; total of all of them with a cgroup
    file_bytes: int = 16 * 2 ** 20
    processes: int = 32


class Sandbox:
    def __init__(self, limits: Limits = Limits(), workers: int | None = None):
        self.limits = limits
        self.workers = workers or len(os.sched_getaffinity(0))
        self.root = os.geteuid() == 0
        self.tools = {name: shutil.which(name) for name in ("prlimit", "bwrap", "setpriv", "unshare")}
        if self.tools["prlimit"] is None:
            raise RuntimeError("the sandbox needs prlimit (util-linux)")
        self.cgroups = cgroups.find_parents()
        self.isolation = self._choose_isolation()

    @property
    def limits_processes(self) -> bool:
        """Whether a fork bomb is held to `limits.processes` (a cgroup, a dropped uid or a user namespace)."""
        return any("pids" in p.limits for p in self.cgroups) or self.isolation == "bwrap" or not self.root

    @property
    def limits_total_memory(self) -> bool:
        """Whether all of a program's processes together are held to `limits.memory_bytes`."""
        return any("memory" in p.limits for p in self.cgroups)

    def _choose_isolation(self) -> str:
        """The strongest mode whose whole launch chain runs a trivial program here."""
        wanted = ["bwrap"] if self.tools["bwrap"] and (self.tools["setpriv"] or not self.root) else []
        wanted += ["netns"] if self.root and self.tools["unshare"] else []
        for mode in wanted:
            self.isolation = mode
            result = self.run("import sys")
            if result == "passed":
                return mode
            log.warning("sandbox: %s isolation does not work here (%s); trying a weaker one", mode, result)
        return "prelude"

    def run(self, program: str) -> str:
        workdir = Path(tempfile.mkdtemp(prefix="ttscale-sandbox-"))
        uid, group = None, None
        try:
            (workdir / "program.py").write_text(program if self.isolation == "bwrap" else _PRELUDE + program,
                                                encoding="utf-8")
            if self.isolation == "bwrap" and self.root:
                uid = _take_uid()
                os.chown(workdir, uid, uid)
                workdir.chmod(0o711)      # bwrap, root but without capabilities, must enter it
            if self.cgroups:
                group = cgroups.ProgramCgroup(self.cgroups, self.limits.processes, self.limits.memory_bytes)
            proc = subprocess.Popen(self._command(workdir, uid, group), cwd=workdir, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                    env=_clean_env(workdir))
            try:
                _, stderr = proc.communicate(timeout=self.limits.wall_seconds)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid)
                if group:
                    group.kill()
                _reap(proc)
                return "timed out"
            if proc.returncode == 0:
                return "passed"
            if group and group.oom_killed():
                return "failed: over the memory limit (processes killed by the kernel)"
            return "failed: " + _reason(proc.returncode, stderr.decode(errors="replace"))
        finally:
            if group:
                group.remove()         # kills stragglers first
            shutil.rmtree(workdir, ignore_errors=True)
            if uid is not None:
                _give_uid(uid)

    def run_many(self, programs: Sequence[str]) -> list[str]:
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self.run, programs))

    def _command(self, workdir: Path, uid: int | None, group: cgroups.ProgramCgroup | None) -> list[str]:
        """join the cgroups (sh), set the limits (prlimit), isolate (bwrap | unshare), run the program."""
        lim = self.limits
        command = [sys.executable, "-I", "-S", "-c", _LAUNCH]
        limits = [f"--cpu={lim.cpu_seconds}:{lim.cpu_seconds + 1}", f"--as={lim.memory_bytes}",
                  f"--fsize={lim.file_bytes}", "--core=0"]
        if self.isolation == "bwrap":
            if uid is not None:       # root: the program's own uid makes RLIMIT_NPROC count only its processes
                command = [self.tools["setpriv"], f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *command]
                limits.append(f"--nproc={lim.processes}")
            else:                     # set inside the new user namespace, RLIMIT_NPROC counts only the sandbox's
                command = [self.tools["prlimit"], f"--nproc={lim.processes}", "--", *command]
            command = [self.tools["bwrap"], *self._bwrap_args(workdir, uid is not None), "--", *command]
        elif self.isolation == "netns":
            command = [self.tools["unshare"], "--net", "--", *command]
        elif not self.root:           # counts all of the user's processes: allow the ones already running
            limits.append(f"--nproc={_process_count(os.getuid()) + lim.processes}")
        command = [self.tools["prlimit"], *limits, "--", *command]
        if group is not None:
            command = ["sh", "-c", _JOIN, "sh", *map(str, group.procs_files), "--", *command]
        return command

    def _bwrap_args(self, workdir: Path, drop_uid: bool) -> list[str]:
        args = ["--ro-bind", "/", "/", *_hide_and_expose(workdir),
                "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/dev/shm", "--chdir", str(workdir),
                "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        if drop_uid:    # no user namespace (its uid map would hold only root); setpriv needs these two
            return args + ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        return args + ["--unshare-user"]


_free_uids: list[int] = []
_new_uids = itertools.count(_UID_BASE)
_uid_lock = threading.Lock()


def _take_uid() -> int:
    """A uid no process uses, for one program run (shared by all sandboxes of this process)."""
    with _uid_lock:
        return _free_uids.pop() if _free_uids else next(_new_uids)


def _give_uid(uid: int) -> None:
    with _uid_lock:
        _free_uids.append(uid)


def _hide_and_expose(workdir: Path) -> list[str]:
    """bwrap arguments: an empty tmpfs over the user's home and over any directory others may not
    enter that holds the interpreter or the work directory; those are bound back inside it (the
    interpreter read-only), with the directories leading to them made enterable."""
    keep = {Path(sys.prefix).resolve(): "--ro-bind", Path(sys.base_prefix).resolve(): "--ro-bind",
            Path(os.path.realpath(sys.executable)).parent: "--ro-bind", workdir.resolve(): "--bind"}
    home = Path(os.path.expanduser("~"))
    covers = [home] if home.is_dir() and home != Path("/") else []
    for path in keep:            # the outermost directory on the way that others may not enter
        closed = [p for p in reversed(path.parents) if p != Path("/") and not os.stat(p).st_mode & 0o001]
        covers += closed[:1]
    covers = sorted({c for c in covers if not any(o in c.parents for o in covers)}, key=lambda p: len(p.parts))
    args = [a for c in covers for a in ("--tmpfs", str(c))]
    for path, bind in keep.items():
        cover = next((c for c in covers if c in path.parents or c == path), None)
        if cover is None:
            if bind == "--bind":
                args += ["--bind", str(path), str(path)]
            continue
        between = [p for p in reversed(path.parents) if cover in p.parents]
        args += [a for p in between for a in ("--perms", "0755", "--dir", str(p))] + [bind, str(path), str(path)]
    return args


def _process_count(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        try:
            count += entry.name.isdigit() and entry.stat().st_uid == uid
        except OSError:
            pass
    return count


def _clean_env(workdir: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")}
    return keep | {"HOME": str(workdir), "TMPDIR": str(workdir), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}


def _reap(proc: subprocess.Popen) -> None:
    """Wait for a killed program; give up on its stderr if something that escaped still holds it."""
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.stderr.close()
        proc.wait()


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
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
