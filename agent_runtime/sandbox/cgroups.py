"""Per-worker cgroup v2 limits: ``pids.max`` and ``memory.max`` for each sandbox worker, where allowed.

Why: rlimits bound each process, and the worker's RSS poll (every 100 ms) bounds a call's processes
together only after the fact, so a fast allocation overshoots it. A cgroup of its own per worker makes
the kernel refuse the memory and the processes at once, whether or not we run as root.

Where: a cgroup v2 directory whose ``memory`` and ``pids`` controllers are available and whose
children we may create and move our processes into. By default that is this process's own cgroup
(``0::`` in ``/proc/self/cgroup``, under the cgroup2 mount from ``/proc/self/mountinfo``); an operator
can name another with ``TAPO_SANDBOX_CGROUP`` (absolute, or relative to our own cgroup: ``..``). The
kernel lets a cgroup other than the root enable controllers for its children only while it holds no
processes itself, so a server whose own cgroup holds processes (a login session, a container's init)
needs ``TAPO_SANDBOX_CGROUP`` pointing at an empty delegated cgroup (systemd: ``Delegate=yes`` with
``DelegateSubgroup=``). Elsewhere nothing changes: the rlimits, the uids and the RSS poll stay, and
the pool says at start-up what is missing.

How: each worker gets ``<parent>/tapo-sandbox-<server pid>-<n>``; the worker's command starts with a
shell that moves itself into it (``echo 0 > cgroup.procs``) and then execs ``prlimit``, so no process
of the worker ever runs outside it. On disposal everything in it is killed (``cgroup.kill``) and the
directory is removed.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from agent_runtime.sandbox.limits import SandboxLimits

PARENT_ENV = "TAPO_SANDBOX_CGROUP"  # a delegated cgroup v2 directory for the workers' cgroups
CONTROLLERS = ("memory", "pids")
NAME_PREFIX = "tapo-sandbox-"
BWRAP_PROCESSES = 2  # bubblewrap's monitor and the namespace's init, besides the worker and its calls
WORKER_RESERVE_MB = 128  # the warm worker itself (about 70 MB with numpy and sympy) and bubblewrap
REMOVE_DEADLINE_S = 5.0

_names = itertools.count(1)


@dataclass(frozen=True)
class CgroupLimits:
    """The values written into each worker's cgroup."""

    pids_max: int
    memory_max_bytes: int
    swap_max_bytes: int = 0

    @classmethod
    def for_limits(cls, limits: SandboxLimits) -> CgroupLimits:
        """``pids.max``: the worker and its calls get ``max_processes`` (as the per-uid rlimit does).

        ``memory.max``: a call's memory bound, plus what its tmpfs (/tmp and /dev/shm) can hold (their
        pages are charged here too), plus a reserve for the warm worker and bubblewrap.
        """
        shm_mb = max(1, limits.tmp_mb // 4)
        memory_mb = limits.call_memory_mb + limits.tmp_mb + shm_mb + WORKER_RESERVE_MB
        return cls(pids_max=limits.max_processes + BWRAP_PROCESSES, memory_max_bytes=memory_mb << 20)

    def files(self, swap_present: bool) -> dict[str, str]:
        """Interface file → value, in the order they are written."""
        values = {"pids.max": str(self.pids_max), "memory.max": str(self.memory_max_bytes)}
        if swap_present:
            values["memory.swap.max"] = str(self.swap_max_bytes)
        return values


# ---------------------------------------------------------------- where our cgroup is


def unified_path(proc_cgroup: str) -> str | None:
    """The cgroup v2 path in the text of ``/proc/<pid>/cgroup`` (its ``0::<path>`` line)."""
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "" and path.startswith("/"):
            return path
    return None


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    return _OCTAL.sub(lambda match: chr(int(match.group(1), 8)), field)


def cgroup2_mounts(mountinfo: str) -> list[tuple[str, str]]:
    """``(root within the hierarchy, mount point)`` of each cgroup2 mount in ``/proc/<pid>/mountinfo``."""
    found = []
    for line in mountinfo.splitlines():
        before, separator, after = line.partition(" - ")
        fields = before.split()
        if separator and after.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            found.append((_unescape(fields[3]), _unescape(fields[4])))
    return found


def cgroup_directory(path: str, mounts: list[tuple[str, str]]) -> Path | None:
    """Where the cgroup ``path`` appears in the file system, through the first mount that shows it."""
    for root, mount_point in mounts:
        if root == "/":
            relative = path
        elif path == root or path.startswith(root.rstrip("/") + "/"):
            relative = path[len(root.rstrip("/")) :]
        else:
            continue
        directory = Path(mount_point) / relative.lstrip("/")
        if directory.is_dir():
            return directory
    return None


def own_cgroup_directory() -> Path | str:
    """This process's cgroup v2 directory, or why there is none."""
    try:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError as exc:
        return f"cannot read /proc/self/cgroup or mountinfo: {exc}"
    path = unified_path(proc_cgroup)
    if path is None:
        return "this process is in no cgroup v2 hierarchy (cgroup v1 only)"
    mounts = cgroup2_mounts(mountinfo)
    if not mounts:
        return "no cgroup2 file system is mounted"
    directory = cgroup_directory(path, mounts)
    if directory is None:
        return f"this process's cgroup {path} is not visible under the cgroup2 mounts {[m for _, m in mounts]}"
    return directory


# ---------------------------------------------------------------- the parent of the workers' cgroups


def relative_to_own(value: str, own: Path) -> Path:
    """``value`` (``..``, ``../sandbox``) from our own cgroup directory ``own``, normalised."""
    return Path(os.path.normpath(own / value))


def _words(path: Path) -> list[str]:
    return path.read_text().split()


def prepare_parent(parent: Path, own: Path | None = None) -> str | None:
    """Makes ``parent`` ready to hold the workers' cgroups; None when it is, else why it cannot.

    The ``memory`` and ``pids`` controllers must be available in it (``cgroup.controllers``) and
    enabled for its children (``cgroup.subtree_control``, enabled here if they are not yet); we must
    be able to create directories in it and move processes into them: the kernel asks for write
    access to ``cgroup.procs`` of the nearest cgroup above both ours (``own``) and the target.
    """
    try:
        available = _words(parent / "cgroup.controllers")
        enabled = _words(parent / "cgroup.subtree_control")
    except OSError as exc:
        return f"{parent} is not a cgroup v2 directory we can read ({exc.strerror or exc})"
    missing = [name for name in CONTROLLERS if name not in available]
    if missing:
        return (
            f"the {' and '.join(missing)} controller{'s are' if len(missing) > 1 else ' is'} not available in "
            f"{parent} (cgroup.controllers: {' '.join(available) or 'none'})"
        )
    common = Path(os.path.commonpath([own, parent])) if own is not None else parent
    if not (common / "cgroup.procs").exists():  # not in our hierarchy: nothing to ask of a common cgroup
        common = parent
    for path, mode in ((parent, os.W_OK | os.X_OK), (common / "cgroup.procs", os.W_OK)):
        if not os.access(path, mode):
            return f"{path} is not writable by this process (uid {os.geteuid()})"
    needed = [name for name in CONTROLLERS if name not in enabled]
    if needed:
        try:
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{name}" for name in needed))
        except OSError as exc:
            hint = (
                ": the cgroup holds processes (the kernel allows controllers for children only in a "
                f"cgroup without any); set {PARENT_ENV} to an empty delegated cgroup"
                if exc.errno == errno.EBUSY
                else ""
            )
            return f"cannot enable {' and '.join(needed)} in {parent}/cgroup.subtree_control ({exc.strerror}){hint}"
    return None


def remove_stale(parent: Path) -> list[Path]:
    """Removes empty worker cgroups left in ``parent`` by servers that are gone; returns them."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        match = re.fullmatch(re.escape(NAME_PREFIX) + r"(\d+)-\d+", entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False) or _pid_alive(int(match.group(1))):
            continue
        try:
            os.rmdir(entry.path)
            removed.append(Path(entry.path))
        except OSError:  # still populated (a process that outlived its server): leave it
            pass
    return removed


def _pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


@dataclass(frozen=True)
class CgroupSetup:
    """Where the workers' cgroups go, and what is written into each."""

    parent: Path
    limits: CgroupLimits

    def new_name(self) -> str:
        return f"{NAME_PREFIX}{os.getpid()}-{next(_names)}"

    def create(self, name: str | None = None) -> Path:
        """A new worker cgroup with its limits written (removed again if writing fails)."""
        path = self.parent / (name or self.new_name())
        os.mkdir(path)
        try:
            write_limits(path, self.limits)
        except BaseException:
            remove(path)
            raise
        return path


def detect(limits: SandboxLimits, parent: str | None = None) -> CgroupSetup | str:
    """The cgroup setup for ``limits`` on this machine, or why per-worker cgroups are not possible.

    ``parent``: a cgroup v2 directory; by default ``$TAPO_SANDBOX_CGROUP``, else our own cgroup. A
    relative path is taken from our own cgroup: ``..`` is its parent (systemd's ``DelegateSubgroup=``
    puts the service in a leaf below the cgroup delegated to it).
    """
    chosen = parent if parent is not None else os.environ.get(PARENT_ENV) or None
    own = own_cgroup_directory()
    if chosen is not None and os.path.isabs(chosen):
        directory = Path(chosen)
    elif isinstance(own, str):
        return own
    else:
        directory = own if chosen is None else relative_to_own(chosen, own)
    if not directory.is_dir():
        return f"{PARENT_ENV}={chosen} is not a directory"
    if shutil.which("sh") is None:
        return "no sh to move a worker into its cgroup"
    reason = prepare_parent(directory, own if isinstance(own, Path) else None)
    if reason is not None:
        return reason
    remove_stale(directory)
    return CgroupSetup(directory, CgroupLimits.for_limits(limits))


# ---------------------------------------------------------------- one worker's cgroup


def write_limits(path: Path, limits: CgroupLimits) -> None:
    """Writes ``pids.max``, ``memory.max`` and, where the kernel has swap accounting, ``memory.swap.max``."""
    for name, value in limits.files(swap_present=(path / "memory.swap.max").exists()).items():
        (path / name).write_text(value)


def enter_command(path: Path) -> list[str]:
    """A prefix for a command: a shell that moves itself into ``path``, then execs the command.

    Writing 0 to ``cgroup.procs`` moves the writer; ``echo`` is a builtin, so that is the shell, and
    every process the command starts is born inside the cgroup.
    """
    return ["sh", "-c", 'echo 0 > "$1" && shift && exec "$@"', "tapo-cgroup", str(path / "cgroup.procs")]


def member_pids(path: Path) -> list[int]:
    try:
        return [int(word) for word in _words(path / "cgroup.procs")]
    except (OSError, ValueError):
        return []


def oom_kills(path: Path) -> int:
    """How many processes the kernel killed in ``path`` for going over ``memory.max``."""
    try:
        for line in (path / "memory.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def kill_all(path: Path) -> None:
    """SIGKILL to every process in ``path`` (``cgroup.kill`` where the kernel has it, 5.14 on)."""
    if (path / "cgroup.kill").exists():
        try:
            (path / "cgroup.kill").write_text("1")
            return
        except OSError:
            pass
    for pid in member_pids(path):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def remove(path: Path, deadline_s: float = REMOVE_DEADLINE_S) -> bool:
    """Kills what is left in ``path`` and removes it; True once it is gone."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
        kill_all(path)
        time.sleep(0.01)
