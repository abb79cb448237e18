"""The server that runs inside one sandbox: it forks a fresh child for every call.

Started as ``python -I worker_main.py [--sandboxed] [--once] [--preload=numpy,sympy]`` with
``framing.py`` beside it; standard library only, since it runs under whatever Python the sandbox
binds. Requests and replies are frames on fds 0 and 1, which are moved to private descriptors at
start so that nothing else writes there.

Why fork per call: the worker has already paid for interpreter start-up and the heavy imports
(numpy, sympy), and each call still starts from the same clean state. The worker is a child
subreaper and, after every call, kills and reaps every process the call left behind.

``--sandboxed`` says the worker owns its PID namespace (bubblewrap's init is pid 1, we are its child),
so ``kill(-1)`` reaches exactly the call's processes. Without it (the unsandboxed fallback) strays are
found as our descendants in /proc, since ``kill(-1)`` would hit every process of the host's user.
``--once`` serves one request and exits (the unsandboxed fallback runs one process per call).
"""

from __future__ import annotations

import base64
import builtins
import ctypes
import importlib.util
import io
import linecache
import math
import os
import resource
import select
import signal
import stat
import sys
import time
import traceback
from typing import Any, NoReturn

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("_tapo_sandbox_framing", os.path.join(_HERE, "framing.py"))
assert _spec is not None and _spec.loader is not None
framing = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(framing)

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
CODE_FILENAME = "<code>"
STRAY_KILL_DEADLINE_S = 2.0
MEMORY_CHECK_PERIOD_S = 0.1  # unless the host says otherwise; calls shorter than this never pay for a check
SANDBOXED = "--sandboxed" in sys.argv
# Figures the code leaves open in matplotlib are saved by the call's process in this directory of
# its temporary directory (the sandbox's /tmp; unsandboxed, the call's own), then read as untrusted
# files and removed by the worker, which returns them as PNG images. Their total stays well inside a
# reply frame (worker.REPLY_LIMIT_BYTES, 8 MiB, with two output captures and base64's third).
FIGURE_DIR_NAME = ".tapo-figures"
MAX_FIGURES = 8
MAX_FIGURE_BYTES = 2 << 20
MAX_FIGURES_BYTES = 4 << 20
FIGURE_DPI = 100


def _option(name: str, default: str) -> str:
    for arg in sys.argv[1:]:
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


PRELOAD_MODULES = tuple(name for name in _option("--preload", "numpy,sympy").split(",") if name)

_libc = ctypes.CDLL(None, use_errno=True)
_reaped: dict[int, int] = {}  # pid -> wait status, for children reaped while sweeping


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


# ---------------------------------------------------------------- start-up


def _prepare_worker() -> tuple[int, int]:
    """Private protocol fds, quiet standard fds, subreaper, not dumpable, first to be OOM-killed."""
    request_fd, reply_fd = os.dup(0), os.dup(1)  # os.dup: not inheritable, so no child gets them
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    try:  # raising it needs no privilege; children inherit it and cannot lower it again
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of a call come to us, so we reap (and kill) them
    # Not dumpable: a call's code (same uid) cannot ptrace us or open /proc/<worker>/fd and mem.
    # A child sets itself dumpable again so that its own /proc/self behaves normally.
    _prctl(PR_SET_DUMPABLE, 0)
    os.environ["MPLBACKEND"] = "Agg"  # figures are drawn to files, never to a display
    if SANDBOXED:  # matplotlib's cache in the sandbox's own /tmp (home is read-only or absent)
        os.environ["MPLCONFIGDIR"] = "/tmp/.matplotlib"
    for name in PRELOAD_MODULES:  # warm forks; optional
        try:
            importlib.import_module(name)
        except Exception:
            pass
    return request_fd, reply_fd


# ---------------------------------------------------------------- the call's process


class _OrderedStderr(io.TextIOBase):
    """Unbuffered stderr that flushes stdout first, so the merged stream keeps the order of writes."""

    def __init__(self, out: io.TextIOWrapper, err: io.TextIOWrapper) -> None:
        self._out, self._err = out, err

    def write(self, text: str) -> int:
        self._out.flush()
        written = self._err.write(text)
        self._err.flush()
        return written

    def flush(self) -> None:
        self._err.flush()

    def fileno(self) -> int:
        return self._err.fileno()

    @property
    def buffer(self) -> Any:
        self._out.flush()
        return self._err.buffer

    def __getattr__(self, name: str) -> Any:  # errors, line_buffering, reconfigure, ...
        return getattr(self._err, name)

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._err.encoding


def _text_stream(fd: int) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", errors="backslashreplace", line_buffering=True)


def _lower_limit(which: int, soft: int, hard: int | None = None) -> None:
    """Sets a limit no higher than the ceiling the host put on the worker (which we cannot raise)."""
    hard = soft if hard is None else hard
    ceiling = resource.getrlimit(which)[1]
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(which, (soft, hard))


def _set_cpu_budget(seconds: float, within_hard_limit: bool = False) -> None:
    """SIGXCPU after ``seconds`` more CPU time (then SIGKILL a second later, unless in a session)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(used.ru_utime + used.ru_stime + math.ceil(seconds)) + 1
    if within_hard_limit:  # a session sets a new budget per call, so it must keep room to raise it
        ceiling = resource.getrlimit(resource.RLIMIT_CPU)[1]
        if ceiling == resource.RLIM_INFINITY or soft <= ceiling:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, ceiling))
    else:
        _lower_limit(resource.RLIMIT_CPU, soft, soft + 1)


def _apply_call_limits(limits: dict[str, Any], cpu_budget_s: float | None) -> None:
    if cpu_budget_s is not None:
        _set_cpu_budget(cpu_budget_s)
    _lower_limit(resource.RLIMIT_AS, int(limits["memory_mb"]) << 20)
    _lower_limit(resource.RLIMIT_FSIZE, int(limits["max_file_mb"]) << 20)
    _lower_limit(resource.RLIMIT_NOFILE, int(limits["max_open_files"]))
    _lower_limit(resource.RLIMIT_CORE, 0)


def _become_call_process(
    output_fd: int, close_fds: list[int], limits: dict[str, Any], cpu_budget_s: float | None
) -> None:
    """In a freshly forked child: output to the pipe, own process group, limits, default signals."""
    os.setpgid(0, 0)
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGALRM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    for fd in {output_fd, *close_fds}:
        try:
            os.close(fd)
        except OSError:
            pass
    _apply_call_limits(limits, cpu_budget_s)
    _prctl(PR_SET_DUMPABLE, 1)
    out = _text_stream(1)
    sys.stdout = out
    sys.stderr = _OrderedStderr(out, _text_stream(2))  # type: ignore[assignment]
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    sys.argv = [""]  # the working directory stays the worker's: /tmp in the sandbox


def _run_user_code(code: str, namespace: dict[str, Any], filename: str = CODE_FILENAME) -> int:
    """Runs ``code`` as a script would run; returns the exit status Python itself would give."""
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)  # tracebacks show lines
    try:
        compiled = compile(code, filename, "exec")
    except (SyntaxError, ValueError) as exc:  # ValueError: source with NUL bytes
        traceback.print_exception(type(exc), exc, None)
        return 1
    try:
        exec(compiled, namespace)
    except SystemExit as exc:
        return _exit_status(exc)
    except BaseException as exc:
        try:
            traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
        except BaseException:  # formatting can fail too (MemoryError): say at least what it was
            os.write(2, f"\n{type(exc).__name__}\n".encode())
        return 1
    return 0


def _save_figures() -> None:
    """Save the figures the code left open (matplotlib, if it was used) and close them."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    try:
        directory = _figure_dir()
        os.makedirs(directory, exist_ok=True)
        for n, number in enumerate(pyplot.get_fignums()[:MAX_FIGURES]):
            pyplot.figure(number).savefig(os.path.join(directory, f"{n:02d}.png"), format="png", dpi=FIGURE_DPI)
        pyplot.close("all")
    except BaseException as exc:
        print(f"[the figures could not be saved: {type(exc).__name__}: {exc}]", file=sys.stderr)


def _figure_dir() -> str:
    import tempfile

    return os.path.join(tempfile.gettempdir(), FIGURE_DIR_NAME)


def _collect_figures() -> tuple[list[str], int]:
    """The saved figures as base64 PNG, and how many were left out as too large; the files are
    removed. They are the call's, so hostile: the directory and its entries are opened without
    following links, only regular files whose bytes are a PNG are taken, sizes are bounded."""
    images: list[str] = []
    dropped = 0
    try:
        directory = os.open(_figure_dir(), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return images, dropped
    try:
        names = sorted(os.listdir(directory))
        total = 0
        for name in names[:MAX_FIGURES]:
            data = _read_figure(directory, name)
            if data is None:
                continue
            if len(data) > MAX_FIGURE_BYTES or total + len(data) > MAX_FIGURES_BYTES:
                dropped += 1
                continue
            total += len(data)
            images.append(base64.b64encode(data).decode("ascii"))
        for name in names:
            try:
                os.unlink(name, dir_fd=directory)
            except OSError:
                pass
    finally:
        os.close(directory)
    return images, dropped


def _read_figure(directory: int, name: str) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        data = os.read(fd, MAX_FIGURE_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if data.startswith(b"\x89PNG\r\n\x1a\n") else None


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _finish_like_interpreter() -> None:
    """What Python does at exit before flushing: wait for non-daemon threads, run atexit handlers."""
    threading = sys.modules.get("threading")
    try:
        if threading is not None:
            threading._shutdown()  # type: ignore[attr-defined]
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        pass


def _flush_and_exit(status: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(status)


def _fresh_namespace() -> dict[str, Any]:
    return {"__name__": "__main__", "__builtins__": builtins, "__doc__": None}


# ---------------------------------------------------------------- collecting a call


class _Capture:
    """The first and the last ``limit`` bytes of a stream, and how much fell between them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.limit:
                del self.tail[: len(self.tail) - self.limit]

    def as_reply(self) -> dict[str, Any]:
        omitted = self.total - len(self.head) - len(self.tail)
        if omitted == 0:  # decode in one piece so a character split between head and tail survives
            return {"head": (self.head + self.tail).decode("utf-8", "replace"), "tail": "", "omitted_bytes": 0}
        return {
            "head": self.head.decode("utf-8", "replace"),
            "tail": self.tail.decode("utf-8", "replace"),
            "omitted_bytes": omitted,
        }


def _read_available(fd: int, capture: _Capture) -> bool:
    """Reads what is there; False at end of file."""
    try:
        data = os.read(fd, 1 << 16)
    except BlockingIOError:
        return True
    if not data:
        return False
    capture.add(data)
    return True


def _read_pending(fd: int, capture: _Capture) -> None:
    """Reads what is waiting in a pipe whose writer stays open."""
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if not data:
            return
        capture.add(data)


def _drain(fd: int, capture: _Capture, deadline: float) -> None:
    """Reads until every writer is gone (they have been killed) or the deadline passes."""
    os.set_blocking(fd, False)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while (left := deadline - time.monotonic()) > 0:
        if poller.poll(left * 1000) and not _read_available(fd, capture):
            return


def _pid_watch(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # old kernel: poll with a short period instead


def _exited(pid: int) -> int | None:
    """The wait status of ``pid`` if it has exited (reaping it), else None."""
    if pid in _reaped:
        return _reaped.pop(pid)
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0
    return status if done else None


# ---------------------------------------------------------------- cleaning up after a call


def _reap_children() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _reaped[pid] = status


def _proc_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _stray_pids(keep: set[int]) -> list[int]:
    me = os.getpid()
    if SANDBOXED:  # everything in our PID namespace but its init, us and what we keep
        return [pid for pid in _proc_pids() if pid not in keep and pid not in (1, me)]
    children: dict[int, list[int]] = {}
    for pid in _proc_pids():
        parent = _parent_of(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    found, stack = [], list(children.get(me, []))
    while stack:
        pid = stack.pop()
        if pid in keep:
            continue
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _proc_field_kb(path: str, field: bytes) -> int | None:
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _limit_exceeded(limit_kb: int, max_processes: int) -> str | None:
    """Says "memory" or "processes" when the call's processes (a session's too) hold too much together.

    The process count matters where the sandbox uid is shared (not root): RLIMIT_NPROC is pool-wide
    then. As root the kernel's per-uid limit stops a call before this check can see too many.

    RssAnon (cheap, readable for every process) counts pages a fork still shares with its parent in
    each process: a bound from above, enough when under the limit. Above it, the proportional share
    (Pss_Anon, needs the process to be dumpable) decides; RssAnon stands in where it is unreadable.
    """
    pids = _stray_pids(set())
    if len(pids) > max_processes:
        return "processes"
    rss = {pid: _proc_field_kb(f"/proc/{pid}/status", b"RssAnon:") or 0 for pid in pids}
    if sum(rss.values()) <= limit_kb:
        return None
    total = 0
    for pid in pids:
        pss = _proc_field_kb(f"/proc/{pid}/smaps_rollup", b"Pss_Anon:")
        total += rss[pid] if pss is None else pss
    return "memory" if total > limit_kb else None


def _kill_strays(keep: set[int]) -> bool:
    """Kills and reaps every process the call left; True when none is left."""
    deadline = time.monotonic() + STRAY_KILL_DEADLINE_S
    while True:
        _reap_children()
        if SANDBOXED and not keep:
            try:  # in our own PID namespace this reaches exactly the call's processes, atomically
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                return True
        else:
            victims = _stray_pids(keep)
            # Zombies still show in /proc until they are reaped: they only need reaping.
            live = [pid for pid in victims if pid not in _reaped]
            if not live:
                return True
            for pid in live:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0005)


def _empty_dir(path: str) -> None:
    """Deletes what a call left in a scratch directory (the next call may be another user's)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                os.chmod(entry.path, 0o700)  # a call may have made it unreadable; we own it
                _empty_dir(entry.path)
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


def _remove_sysv_ipc() -> None:
    """SysV shared memory, queues and semaphores outlive processes: remove the call's ones."""
    ipc_rmid = 0
    for name, remove in (
        ("shm", lambda ident: _libc.shmctl(ident, ipc_rmid, None)),
        ("msg", lambda ident: _libc.msgctl(ident, ipc_rmid, None)),
        ("sem", lambda ident: _libc.semctl(ident, 0, ipc_rmid)),
    ):
        try:
            with open(f"/proc/sysvipc/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 1 and fields[1].isdigit():
                remove(int(fields[1]))


def _reset_scratch() -> None:
    if SANDBOXED:  # unsandboxed, /tmp is the host's: never empty it
        _empty_dir("/tmp")
        _empty_dir("/dev/shm")
        _remove_sysv_ipc()


# ---------------------------------------------------------------- one call, fresh state


def _forget_reaped(keep: set[int]) -> None:
    """Statuses of strays reaped by earlier sweeps are of no more use (a fork bomb leaves thousands)."""
    for pid in [pid for pid in _reaped if pid not in keep]:
        del _reaped[pid]


def run_fresh(request: dict[str, Any], protocol_fds: list[int], keep: set[int]) -> dict[str, Any]:
    """One call in a fresh fork; ``keep``: processes that are not the call's (a session's process)."""
    _forget_reaped(keep)
    code = str(request["code"])
    timeout_s = float(request["timeout_s"])
    limits = request["limits"]
    capture = _Capture(int(request["capture_bytes"]))
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            _become_call_process(write_fd, protocol_fds, limits, cpu_budget_s=timeout_s)
            status = _run_user_code(code, _fresh_namespace())
            _save_figures()
            _finish_like_interpreter()
        except BaseException:
            status = 1
        _flush_and_exit(status)
    os.close(write_fd)
    kind, wait_status = _watch_call(pid, read_fd, capture, start + timeout_s, None, limits)
    seconds = time.monotonic() - start
    clean = _kill_strays(keep)
    _drain(read_fd, capture, time.monotonic() + 0.5)
    os.close(read_fd)
    images, dropped = _collect_figures()
    _reset_scratch()
    reply_status = _status_reply(wait_status, kind=kind)
    return {
        **reply_status,
        **capture.as_reply(),
        "images": images,
        "images_dropped": dropped,
        "seconds": seconds,
        "clean": clean,
        "call_memory_mb": limits["call_memory_mb"],
    }


def _watch_call(
    pid: int, output_fd: int, capture: _Capture, deadline: float, status_fd: int | None, limits: dict[str, Any]
) -> tuple[str, int | None]:
    """Reads output until ``pid`` exits, or (a session) reports on ``status_fd``, or time is up.

    Returns ("exit", exit code reported by a session), ("wait", wait status of the exited process),
    ("timeout", None), ("memory", None) or ("processes", None); in the last three the process is
    killed and reaped here.
    The memory check bounds what all of the call's processes hold together: RLIMIT_AS bounds each
    one, but a call may have as many as the process limit allows.
    """
    os.set_blocking(output_fd, False)
    pidfd = _pid_watch(pid)
    poller = select.poll()
    poller.register(output_fd, select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    if status_fd is not None:
        poller.register(status_fd, select.POLLIN)
    memory_check_s = float(limits.get("memory_check_s", MEMORY_CHECK_PERIOD_S))
    next_memory_check = time.monotonic() + memory_check_s
    try:
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                _wait_for(pid)
                return "timeout", None
            if now >= next_memory_check:
                exceeded = _limit_exceeded(int(limits["call_memory_mb"]) << 10, int(limits["max_processes"]))
                cost = time.monotonic() - now  # many big processes make a check slow: check less often
                next_memory_check = now + max(memory_check_s, 10 * cost)
                if exceeded:
                    os.kill(pid, signal.SIGKILL)
                    _wait_for(pid)
                    return exceeded, None
            period = min(left, next_memory_check - now)
            if pidfd is None:
                period = min(period, 0.01)
            for fd, _ in poller.poll(period * 1000):
                if fd == output_fd and not _read_available(output_fd, capture):
                    poller.unregister(output_fd)
                elif fd == status_fd:
                    _read_pending(output_fd, capture)
                    try:
                        return "exit", int(framing.read_frame(status_fd).get("exit", 1))
                    except EOFError:  # it died or closed the pipe: its exit (or the clock) decides
                        poller.unregister(status_fd)
            status = _exited(pid)
            if status is not None:
                return "wait", status
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _wait_for(pid: int) -> int:
    if pid in _reaped:
        return _reaped.pop(pid)
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return 0


def _status_reply(value: int | None, *, kind: str) -> dict[str, Any]:
    """ok/exit_code/signal/timed_out/memory_exceeded from how ``_watch_call`` saw the call end."""
    reply: dict[str, Any] = {
        "ok": False,
        "timed_out": kind == "timeout",
        "memory_exceeded": kind == "memory",
        "processes_exceeded": kind == "processes",
        "exit_code": None,
        "signal": None,
    }
    if kind == "exit" and value is not None:  # a session's code reported its exit status
        reply.update(ok=value == 0, exit_code=value)
    elif kind == "wait" and value is not None:
        code = os.waitstatus_to_exitcode(value)
        if code < 0:
            reply["signal"] = -code
        else:
            reply.update(ok=code == 0, exit_code=code)
    return reply


# ---------------------------------------------------------------- session: state kept across calls


class Session:
    """A forked child that keeps its globals; each call runs in it. Lost on time-out or crash."""

    def __init__(self, protocol_fds: list[int]) -> None:
        self.protocol_fds = protocol_fds
        self.pid: int | None = None
        self.code_fd = self.status_fd = self.output_fd = -1
        self.calls = 0

    @property
    def fds(self) -> list[int]:
        return [fd for fd in (self.code_fd, self.status_fd, self.output_fd) if fd >= 0]

    def _start(self, limits: dict[str, Any]) -> None:
        code_r, code_w = os.pipe()
        status_r, status_w = os.pipe()
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                for fd in (code_w, status_r, out_r):
                    os.close(fd)
                _become_call_process(out_w, self.protocol_fds, limits, cpu_budget_s=None)
                self._serve(code_r, status_w, _fresh_namespace())
            except BaseException:
                pass
            _flush_and_exit(1)
        for fd in (code_r, status_w, out_w):
            os.close(fd)
        self.pid, self.code_fd, self.status_fd, self.output_fd = pid, code_w, status_r, out_r
        self.calls = 0

    @staticmethod
    def _serve(code_fd: int, status_fd: int, namespace: dict[str, Any]) -> NoReturn:
        """The session process's loop: one frame of code in, its output on fds 1/2, its status out."""
        while True:
            try:
                request = framing.read_frame(code_fd)
            except EOFError:
                _flush_and_exit(0)
            _set_cpu_budget(float(request["timeout_s"]), within_hard_limit=True)
            status = _run_user_code(str(request["code"]), namespace, str(request["filename"]))
            _save_figures()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:
                    pass
            framing.write_frame(status_fd, {"exit": status})

    def _discard(self) -> None:
        """Kills the session process (if any) and closes its pipes."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _wait_for(self.pid)
            self.pid = None
        for fd in self.fds:
            os.close(fd)
        self.code_fd = self.status_fd = self.output_fd = -1

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        timeout_s = float(request["timeout_s"])
        capture = _Capture(int(request["capture_bytes"]))
        start = time.monotonic()
        _forget_reaped({self.pid} if self.pid else set())
        if self.pid is not None and _exited(self.pid) is not None:
            self.pid = None  # died between calls (killed by a stray of the last call, say)
            self._discard()
        new = self.pid is None
        if new:
            self._start(request["limits"])
        assert self.pid is not None
        self.calls += 1
        filename = CODE_FILENAME if self.calls == 1 else f"<code #{self.calls}>"
        try:
            framing.write_frame(
                self.code_fd, {"code": str(request["code"]), "timeout_s": timeout_s, "filename": filename}
            )
            kind, value = _watch_call(
                self.pid, self.output_fd, capture, start + timeout_s, self.status_fd, request["limits"]
            )
        except (OSError, EOFError, ValueError):  # the session's code broke its own pipes
            kind, value = "exit", 1
            self._discard()
        seconds = time.monotonic() - start
        reply_status = _status_reply(value, kind=kind)
        if kind != "exit":  # it died, or was killed for time or memory (and reaped)
            self.pid = None
        lost = self.pid is None
        clean = _kill_strays(set() if self.pid is None else {self.pid})
        if lost:
            self._discard()
        else:
            _read_pending(self.output_fd, capture)  # its end stays open: no EOF to wait for
        images, dropped = _collect_figures()
        return {
            **reply_status,
            **capture.as_reply(),
            "images": images,
            "images_dropped": dropped,
            "seconds": seconds,
            "clean": clean,
            "call_memory_mb": request["limits"]["call_memory_mb"],
            "session_new": new,
            "session_lost": lost,
        }


# ---------------------------------------------------------------- the request loop


def serve(request_fd: int, reply_fd: int, once: bool) -> None:
    protocol_fds = [request_fd, reply_fd]
    session = Session(protocol_fds)
    framing.write_frame(
        reply_fd, {"ready": True, "pid": os.getpid(), "preloaded": sorted(set(PRELOAD_MODULES) & set(sys.modules))}
    )
    while True:
        try:
            request = framing.read_frame(request_fd)
        except EOFError:
            return
        op = request.get("op")
        if op == "run":
            reply = run_fresh(request, protocol_fds + session.fds, keep={session.pid} if session.pid else set())
        elif op == "session_run":
            reply = session.run(request)
        elif op == "ping":
            reply = {"ok": True}
        else:
            reply = {"error": f"unknown op {op!r}"}
        framing.write_frame(reply_fd, reply)
        if once:
            return


def main() -> None:
    request_fd, reply_fd = _prepare_worker()
    try:
        serve(request_fd, reply_fd, once="--once" in sys.argv)
    except (BrokenPipeError, EOFError):
        pass
    except Exception as exc:  # the host sees EOF and replaces us; leave a trace for its log
        try:
            os.write(2, f"sandbox worker failed: {exc!r}\n".encode())
        except OSError:
            pass
    os._exit(0)


if __name__ == "__main__":
    main()
