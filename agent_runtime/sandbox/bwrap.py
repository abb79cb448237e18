"""The bubblewrap command line of a sandbox worker, and the probe that says whether it can run here.

Two ways to drop privileges, chosen by who we are:

* As root (the intended deployment): bwrap runs as root *without* a user namespace, builds the mounts
  and namespaces, then ``setpriv`` switches to a host uid of the worker's own (60000 + n) with no
  capabilities and no_new_privs. A real non-root uid is what makes RLIMIT_NPROC count (the kernel
  exempts uid 0), and a distinct uid per worker makes that count per worker. bwrap as an
  unprivileged uid cannot be used here: it could not bind a Python that lives under ``/root`` (0700).
* As another user: bwrap creates a user namespace as that user; all workers share its uid, so the
  process limit is pool-wide (see ``nproc_limit_for_shared_uid``).

Either way, where a cgroup v2 is writable the pool starts each worker's command in a cgroup of its
own with ``pids.max`` and ``memory.max`` (``cgroups``), which bound it per worker without root.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agent_runtime.sandbox import seccomp
from agent_runtime.sandbox.limits import SandboxLimits

log = logging.getLogger(__name__)

WORKER_DIR = "/opt/tapo-sandbox"  # where the worker's two files appear inside the sandbox
WORKER_FILES = ("worker_main.py", "framing.py")
SANDBOX_UID_INSIDE = 1000  # the uid the code sees in user-namespace mode
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class Tools:
    bwrap: str
    prlimit: str
    setpriv: str | None  # needed as root only


def find_tools() -> Tools | str:
    """The binaries we need, or why they are missing."""
    bwrap, prlimit, setpriv = shutil.which("bwrap"), shutil.which("prlimit"), shutil.which("setpriv")
    if bwrap is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if prlimit is None:
        return "prlimit is not installed (util-linux)"
    if os.geteuid() == 0 and setpriv is None:
        return "setpriv is not installed (util-linux); as root it is needed to drop to a sandbox uid"
    return Tools(bwrap, prlimit, setpriv)


def running_as_root() -> bool:
    return os.geteuid() == 0


def _is_under(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def interpreter_dirs() -> list[str]:
    """Directories that this Python (a venv and its base installation, symlinks resolved) needs."""
    found: list[str] = []
    for raw in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        for path in (os.path.abspath(raw), os.path.realpath(raw)):
            if path not in found:
                found.append(path)
    return found


# The sandbox's /tmp is its own empty tmpfs: an interpreter that lives under the host's /tmp (a CI
# clone's venv) is bound here instead, and run from here. A venv finds its prefix from where its
# executable is (pyvenv.cfg beside bin/), so it works from the new place.
RELOCATED_ROOT = "/opt/tapo-python"


def interpreter_binds() -> list[tuple[str, str]]:
    """``(host path, path inside the sandbox)`` for each directory this Python needs."""
    return [
        (path, f"{RELOCATED_ROOT}/{i}" if _is_under(path, ["/tmp"]) else path)
        for i, path in enumerate(interpreter_dirs())
    ]


def sandbox_path(host_path: str) -> str:
    """Where a file of this Python's directories appears inside the sandbox."""
    for host, inside in sorted(interpreter_binds(), key=lambda pair: len(pair[0]), reverse=True):
        if _is_under(host_path, [host]):
            return inside + host_path[len(host):]
    return host_path


def sandbox_python() -> str:
    return sandbox_path(os.path.abspath(sys.executable))


def _mount_args() -> list[str]:
    """Read-only system and interpreter mounts, with every parent directory made traversable."""
    args: list[str] = []
    bound: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
            bound.append(path)
    made: set[str] = set()
    for host, inside in [(f, f) for f in SYSTEM_ETC_FILES] + interpreter_binds():
        if not os.path.exists(host) or _is_under(inside, bound):
            continue
        # bwrap makes missing parents 0700 as root: a /root/.pyenv parent would stop the sandbox uid.
        for parent in reversed(Path(inside).parents):
            name = str(parent)
            if name != "/" and name not in made and not _is_under(name, bound):
                args += ["--perms", "0755", "--dir", name]
                made.add(name)
        args += ["--ro-bind", host, inside]
        bound.append(inside)
    return args


def _env_args(python: str) -> list[str]:
    venv_bin = os.path.dirname(python)
    env = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "PYTHONDONTWRITEBYTECODE": "1",
        **{name: "1" for name in THREAD_ENV},  # every thread counts against the process limit
    }
    args: list[str] = []
    for name, value in env.items():
        args += ["--setenv", name, value]
    return args


def worker_source_dir() -> str:
    return str(Path(__file__).resolve().parent)


def bwrap_args(tools: Tools, limits: SandboxLimits, host_uid: int | None, seccomp_fd: int | None) -> list[str]:
    """bwrap and its options up to (not including) the command. ``host_uid`` given: root mode."""
    python = sandbox_python()
    args = [tools.bwrap, "--die-with-parent", "--new-session", "--clearenv"]
    if host_uid is None:
        args += [
            "--unshare-user",
            "--disable-userns",
            "--uid",
            str(SANDBOX_UID_INSIDE),
            "--gid",
            str(SANDBOX_UID_INSIDE),
        ]
    # --unshare-all would also try a user namespace; as root we want none (setpriv drops us instead).
    args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    args += ["--hostname", "sandbox"]
    tmp_bytes = limits.tmp_mb << 20
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    args += ["--perms", "1777", "--size", str(max(1 << 20, tmp_bytes // 4)), "--tmpfs", "/dev/shm"]
    args += _mount_args()
    source = worker_source_dir()
    args += ["--perms", "0755", "--dir", os.path.dirname(WORKER_DIR), "--perms", "0755", "--dir", WORKER_DIR]
    for name in WORKER_FILES:
        args += ["--ro-bind", os.path.join(source, name), f"{WORKER_DIR}/{name}"]
    # The root and /dev are tmpfs that bwrap made: in a user namespace they belong to the sandbox uid,
    # which could fill them (memory outside /tmp's size). Read-only once everything above is in place
    # (not recursive: /tmp and /dev/shm stay writable; device nodes stay usable).
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]
    args += _env_args(python)
    args += ["--chdir", "/tmp"]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    return args


def rlimit_values(limits: SandboxLimits, nproc: int) -> dict[str, int]:
    """prlimit's resource name → the hard and soft limit put on every sandboxed process."""
    return {
        "nproc": nproc,
        "as": limits.memory_mb << 20,
        "fsize": limits.max_file_mb << 20,
        "nofile": limits.max_open_files,
        "cpu": limits.worker_cpu_s,
        "core": 0,
    }


def prlimit_args(tools: Tools, limits: SandboxLimits, nproc: int) -> list[str]:
    """Hard ceilings set outside the sandbox, before bwrap: the code cannot raise them."""
    return [tools.prlimit, *(f"--{name}={value}" for name, value in rlimit_values(limits, nproc).items()), "--"]


def setpriv_args(host_uid: int) -> list[str]:
    return [
        "setpriv",
        f"--reuid={host_uid}",
        f"--regid={host_uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


def nproc_limit_for_shared_uid(pool_processes: int) -> int:
    """Without root every worker shares our uid, whose processes the kernel counts together."""
    uid = os.getuid()
    mine = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    mine += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                pass
    return mine + pool_processes


def worker_command(
    tools: Tools,
    limits: SandboxLimits,
    host_uid: int | None,
    nproc: int,
    preload: tuple[str, ...],
    seccomp_fd: int | None,
) -> list[str]:
    """The full command of one sandboxed worker (``seccomp_fd`` must be passed to it, if given)."""
    python = sandbox_python()
    command = prlimit_args(tools, limits, nproc) + bwrap_args(tools, limits, host_uid, seccomp_fd)
    command += ["--"]
    if host_uid is not None:
        command += setpriv_args(host_uid)
    command += [python, "-I", f"{WORKER_DIR}/worker_main.py", "--sandboxed", f"--preload={','.join(preload)}"]
    return command


DEFAULT_LIMITS = SandboxLimits()


@functools.lru_cache(maxsize=4)
def probe(limits: SandboxLimits = DEFAULT_LIMITS, probe_uid: int = 59999) -> str | None:
    """Runs a trivial program in the sandbox this module builds; None if it works, else why not.

    Catches what only trying shows: seccomp forbidding namespaces (Docker's default profile), no
    permission to mount /proc, a Python whose files the sandbox cannot see.
    """
    tools = find_tools()
    if isinstance(tools, str):
        return tools
    host_uid = probe_uid if running_as_root() else None
    python = sandbox_python()
    command = prlimit_args(tools, limits, nproc=nproc_limit_for_shared_uid(8) if host_uid is None else 8)
    program = seccomp.filter_program()
    seccomp_fd = seccomp.program_fd(program) if program is not None else None
    command += bwrap_args(tools, limits, host_uid, seccomp_fd) + ["--"]
    if host_uid is not None:
        command += setpriv_args(host_uid)
    command += [python, "-I", "-c", "import os; print('sandbox-ok', os.getuid())"]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            pass_fds=() if seccomp_fd is None else (seccomp_fd,),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not be started: {exc}"
    finally:
        if seccomp_fd is not None:
            os.close(seccomp_fd)
    if done.returncode != 0 or "sandbox-ok" not in done.stdout:
        detail = (done.stderr or done.stdout).strip()[-800:]
        return (
            f"bubblewrap failed (exit {done.returncode}): {detail or 'no message'}. In a container it needs "
            "user/mount/PID namespaces: e.g. Docker with a seccomp profile that allows them and "
            "--security-opt systempaths=unconfined (for /proc)."
        )
    log.debug("sandbox probe passed: %s", done.stdout.strip())
    return None
