"""The code sandbox against the real bubblewrap: isolation, limits, clean-up, the pool. No mocks.

Runs where bubblewrap works (the probe says so); elsewhere the module is skipped with the probe's
reason, except the tests of the unavailable path and of the explicit unsandboxed fallback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from agent_runtime.sandbox import (
    CodeTool,
    SandboxLimits,
    SandboxPool,
    SandboxUnavailableError,
    bwrap,
    exec_once,
    procs,
)
from agent_runtime.sandbox.uids import ALLOCATOR
from agent_runtime.tools import Tool, ToolOutput

PROJECT = Path(__file__).resolve().parents[1]
# CI installs bubblewrap (make setup): there a failing probe is a failure, never a skip.
PROBE_FAILURE = None if os.environ.get("CI") else bwrap.probe(SandboxLimits())
needs_sandbox = pytest.mark.skipif(PROBE_FAILURE is not None, reason=f"no sandbox here: {PROBE_FAILURE}")
LIMITS = SandboxLimits(timeout_s=5.0, max_output_chars=2000, call_memory_mb=512)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[SandboxPool]:
    if PROBE_FAILURE is not None:
        pytest.skip(f"no sandbox here: {PROBE_FAILURE}")
    sandbox_pool = SandboxPool(size=3, limits=LIMITS, max_sessions=2)
    await sandbox_pool.start()
    yield sandbox_pool
    await sandbox_pool.close()


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: state, ppid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def sandbox_processes(uids: set[int]) -> list[str]:
    """Command lines of live processes of ``uids`` (zombies excluded: they hold nothing)."""
    found = []
    for pid in procs.pids_of_uids(uids):
        try:
            state = _stat_fields(pid)[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError):
            continue
        if state != "Z":
            found.append(cmdline)
    return found


def only_workers_left(pool: SandboxPool) -> list[str]:
    """Live processes of the pool's uids other than the workers themselves.

    A worker's parent is bubblewrap's init (root); anything whose parent is a sandbox uid's process
    (a call's fork has the worker's command line, so names do not tell) was left by a call.
    """
    left = []
    for pid in procs.pids_of_uids(pool.uids):
        try:
            state, parent = _stat_fields(pid)[:2]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError):
            continue
        if state != "Z" and procs.real_uid_of(int(parent)) in pool.uids:
            left.append(f"{pid}: {cmdline}")
    return left


async def wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


# ---------------------------------------------------------------- basics


@needs_sandbox
async def test_print(pool: SandboxPool) -> None:
    result = await pool.run("print(1+1)")
    assert result.ok and result.output == "2\n" and result.sandboxed


@needs_sandbox
async def test_exception_keeps_traceback_and_fails(pool: SandboxPool) -> None:
    result = await pool.run("def f():\n    return 1/0\nf()")
    assert not result.ok and result.exit_code == 1
    assert result.output.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "return 1/0" in result.output  # the source line is shown


@needs_sandbox
async def test_exit_status(pool: SandboxPool) -> None:
    failed = await pool.run("import sys; sys.exit(3)")
    assert not failed.ok and failed.exit_code == 3 and "Exit status 3" in failed.output
    assert (await pool.run("import sys; print('bye'); sys.exit(0)")).ok


@needs_sandbox
async def test_long_output_drops_middle_keeps_error_last_line(pool: SandboxPool) -> None:
    code = "for i in range(100_000):\n    print(i)\nraise ValueError('the very end')"
    result = await pool.run(code)
    assert not result.ok and result.truncated
    assert len(result.output) <= LIMITS.max_output_chars + 100
    assert result.output.startswith("0\n1\n2\n")
    assert "characters omitted" in result.output
    assert result.output.rstrip().endswith("ValueError: the very end")


@needs_sandbox
async def test_stdout_and_stderr_merged_in_order(pool: SandboxPool) -> None:
    code = "import sys\nprint('a', end='')\nsys.stderr.write('b')\nprint('c')\nsys.stderr.write('d\\n')"
    assert (await pool.run(code)).output == "abc\nd\n"


@needs_sandbox
async def test_state_is_fresh_per_call(pool: SandboxPool) -> None:
    first = await pool.run("secret = 41\nopen('/tmp/left-behind', 'w').write('x')\nimport json")
    assert first.ok
    for _ in range(4):  # whichever worker answers
        result = await pool.run("import os\nprint('secret' in globals(), os.listdir('/tmp'))")
        assert result.output == "False []\n"


# ---------------------------------------------------------------- time, processes, memory, disk


@needs_sandbox
async def test_infinite_loop_times_out_and_pool_keeps_serving(pool: SandboxPool) -> None:
    started = time.monotonic()
    result = await pool.run("while True:\n    pass", timeout_s=1.0)
    assert not result.ok and result.timed_out and "Timed out" in result.output
    assert time.monotonic() - started < 3.0
    assert (await pool.run("print('still here')")).output == "still here\n"


@needs_sandbox
async def test_process_limit_stops_forking(pool: SandboxPool) -> None:
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print(n, e.errno)\n"
    )
    result = await pool.run(code)
    if os.geteuid() == 0:  # a uid per worker: the kernel's RLIMIT_NPROC stops the call's forks
        count, errno_value = map(int, result.output.split())
        assert 0 < count < LIMITS.max_processes and errno_value == 11  # EAGAIN
    else:  # a shared uid: the worker's own count stops the call
        assert not result.ok and "more processes than allowed" in result.output
    assert await wait_until(lambda: not only_workers_left(pool), 2.0), only_workers_left(pool)


@needs_sandbox
async def test_fork_bomb_is_contained(pool: SandboxPool) -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = await pool.run(bomb, timeout_s=2.0)
    assert not result.ok
    assert await wait_until(lambda: not only_workers_left(pool), 3.0), only_workers_left(pool)
    assert (await pool.run("print(6*7)")).output == "42\n"


@needs_sandbox
@pytest.mark.parametrize(
    "code",
    ["x = bytearray(10 * 1024**3)", "import numpy as np\nx = np.ones(10 * 1024**3 // 8)"],
    ids=["bytearray", "numpy"],
)
async def test_ten_gigabytes_fail(pool: SandboxPool, code: str) -> None:
    if "numpy" in code:
        pytest.importorskip("numpy")
    result = await pool.run(code)
    assert not result.ok
    assert "MemoryError" in result.output or result.signal is not None


@needs_sandbox
async def test_memory_of_all_processes_together_is_bounded(pool: SandboxPool) -> None:
    code = (
        "import os, time\n"
        "for _ in range(4):\n"  # each under RLIMIT_AS, together over call_memory_mb
        "    if os.fork() == 0:\n"
        "        data = b'x' * (200 << 20)\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "time.sleep(30)"
    )
    started = time.monotonic()
    result = await pool.run(code, timeout_s=20)
    assert not result.ok and result.memory_exceeded and "512 MB of memory" in result.output
    assert time.monotonic() - started < 5
    assert await wait_until(lambda: not only_workers_left(pool), 2.0), only_workers_left(pool)


@needs_sandbox
async def test_no_user_namespaces_or_sysv_memory(pool: SandboxPool) -> None:
    code = (
        "import ctypes, subprocess\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.unshare(0x10000000), libc.shmget(0, 1 << 20, 0o1600))\n"
        "print(subprocess.run(['unshare', '-U', 'true'], capture_output=True).returncode)\n"
    )
    if bwrap.seccomp.filter_program() is None:
        pytest.skip("libseccomp is not installed: no seccomp filter")
    result = await pool.run(code)
    assert result.output.split() == ["-1", "-1", "1"]


@needs_sandbox
async def test_filling_the_disk_is_bounded(pool: SandboxPool) -> None:
    one_file = "with open('/tmp/big', 'wb') as f:\n    for _ in range(1024):\n        f.write(bytes(1 << 20))"
    result = await pool.run(one_file)
    assert not result.ok and "File too large" in result.output  # RLIMIT_FSIZE
    many_files = (
        "for i in range(40):\n"
        "    with open(f'/tmp/part{i}', 'wb') as f:\n"
        "        for _ in range(25):\n"
        "            f.write(bytes(1 << 20))"
    )
    result = await pool.run(many_files)
    assert not result.ok and "No space left on device" in result.output  # the tmpfs size
    assert (await pool.run("import os; print(os.listdir('/tmp'))")).output == "[]\n"


@needs_sandbox
async def test_child_left_running_is_killed(pool: SandboxPool) -> None:
    code = (
        "import os, subprocess\n"
        "subprocess.Popen(['sleep', '100'])\n"
        "subprocess.Popen(['sleep', '101'], start_new_session=True)\n"
        "if os.fork() == 0:\n"  # a double-forked orphan
        "    if os.fork() == 0:\n"
        "        os.execvp('sleep', ['sleep', '102'])\n"
        "    os._exit(0)\n"
        "print('started')"
    )
    result = await pool.run(code)
    assert result.ok and result.output == "started\n"
    assert await wait_until(lambda: not only_workers_left(pool), 2.0), only_workers_left(pool)
    everywhere = subprocess.run(["ps", "-eo", "uid,args"], capture_output=True, text=True).stdout
    assert not [line for line in everywhere.splitlines() if "sleep 10" in line and "ps -eo" not in line]


@needs_sandbox
async def test_segfault_fails_and_pool_keeps_serving(pool: SandboxPool) -> None:
    result = await pool.run("import ctypes\nctypes.string_at(0)")
    assert not result.ok and result.signal == 11 and "SIGSEGV" in result.output
    assert (await pool.run("print('ok')")).ok


@needs_sandbox
async def test_killing_the_worker_is_survived(pool: SandboxPool) -> None:
    result = await pool.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time; time.sleep(1)")
    assert not result.ok
    results = await asyncio.gather(*(pool.run(f"print({i})") for i in range(6)))
    assert [r.output for r in results] == [f"{i}\n" for i in range(6)]


@needs_sandbox
async def test_cancellation_kills_the_call_within_a_second(pool: SandboxPool) -> None:
    task = asyncio.create_task(pool.run("import subprocess\nsubprocess.run(['sleep', '37'])", timeout_s=30))

    def sleeping() -> list[str]:
        return [line for line in sandbox_processes(set(ALLOCATOR.range)) if line == "sleep 37"]

    assert await wait_until(lambda: bool(sleeping()), 5.0)
    task.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_until(lambda: not sleeping(), 1.0)
    assert time.monotonic() - cancelled_at < 1.0


@needs_sandbox
async def test_fifty_concurrent_calls(pool: SandboxPool) -> None:
    results = await asyncio.gather(*(pool.run(f"print({i} * {i})") for i in range(50)))
    assert all(r.ok for r in results)
    assert [r.output for r in results] == [f"{i * i}\n" for i in range(50)]


@needs_sandbox
async def test_numpy(pool: SandboxPool) -> None:
    pytest.importorskip("numpy")
    result = await pool.run("import numpy as np\nprint(int(np.arange(5).sum()))")
    assert result.ok and result.output == "10\n"


# ---------------------------------------------------------------- isolation


@needs_sandbox
async def test_no_loopback_to_the_host(pool: SandboxPool) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the host reaches it
        result = await pool.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
    assert not result.ok and "ConnectionRefusedError" in result.output


@pytest.fixture(scope="module")
def outside_peer() -> Iterator[tuple[str, int]]:
    """A TCP listener on a non-loopback address in a network namespace of its own (veth peer)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a network-namespace peer needs root and iproute2")
    tag = os.getpid() % 100_000
    namespace, host_if, peer_if = f"tapo-sbx-{tag}", f"tsh{tag}", f"tsp{tag}"
    subnet = 16 + tag % 200
    host_ip, peer_ip = f"10.200.{subnet}.1", f"10.200.{subnet}.2"
    port = 8765

    def ip(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", *args], capture_output=True, text=True)

    listener = None
    try:
        made = ip("netns", "add", namespace)
        if made.returncode != 0:
            pytest.skip(f"ip netns unavailable: {made.stderr.strip()}")
        for step in (
            ("link", "add", host_if, "type", "veth", "peer", "name", peer_if),
            ("link", "set", peer_if, "netns", namespace),
            ("addr", "add", f"{host_ip}/30", "dev", host_if),
            ("link", "set", host_if, "up"),
            ("-n", namespace, "addr", "add", f"{peer_ip}/30", "dev", peer_if),
            ("-n", namespace, "link", "set", peer_if, "up"),
            ("-n", namespace, "link", "set", "lo", "up"),
        ):
            done = ip(*step)
            assert done.returncode == 0, (step, done.stderr)
        serve = (
            "import socket\n"
            f"s = socket.create_server(('{peer_ip}', {port}))\n"
            "print('listening', flush=True)\n"
            "while True:\n"
            "    c, _ = s.accept(); c.sendall(b'hello'); c.close()\n"
        )
        listener = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", serve], stdout=subprocess.PIPE, text=True
        )
        assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
        yield peer_ip, port
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        ip("netns", "del", namespace)  # takes the veth pair with it
        ip("link", "del", host_if)


@needs_sandbox
async def test_no_network_to_an_outside_address(pool: SandboxPool, outside_peer: tuple[str, int]) -> None:
    address, port = outside_peer
    with socket.create_connection((address, port), timeout=2) as conn:  # the host reaches the peer
        assert conn.recv(16) == b"hello"
    code = f"import socket\nprint(socket.create_connection(('{address}', {port}), timeout=2).recv(16))"
    result = await pool.run(code)
    assert not result.ok and "hello" not in result.output
    assert "Network is unreachable" in result.output
    interfaces = await pool.run("import socket\nprint(sorted(name for _, name in socket.if_nameindex()))")
    assert interfaces.output == "['lo']\n"


@needs_sandbox
async def test_host_environment_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPO_TEST_API_KEY", "secret-value-123")
    fresh = SandboxPool(size=1, limits=LIMITS, preload=())  # started after the variable was set
    try:
        code = (
            "import os\n"
            "print(sorted(os.environ))\n"
            "for pid in os.listdir('/proc'):\n"
            "    if pid.isdigit():\n"
            "        try:\n"
            "            print(open(f'/proc/{pid}/environ', 'rb').read())\n"
            "        except OSError as e:\n"
            "            print(pid, type(e).__name__)\n"
        )
        result = await fresh.run(code)
    finally:
        await fresh.close()
    assert result.ok
    assert "TAPO_TEST_API_KEY" not in result.output and "secret-value-123" not in result.output


@needs_sandbox
async def test_project_and_home_are_not_visible(pool: SandboxPool) -> None:
    home = Path.home()
    with tempfile.NamedTemporaryFile(dir=home, prefix="tapo-sandbox-probe-") as marker:
        host_entries = set(os.listdir(home))
        code = (
            "import os\n"
            f"for path in [{str(PROJECT / 'pyproject.toml')!r}, {marker.name!r}, '/etc/passwd', '/etc/shadow']:\n"
            "    try:\n"
            "        open(path).read(); print('READ', path)\n"
            "    except OSError as e:\n"
            "        print(type(e).__name__, path)\n"
            f"print(sorted(os.listdir({str(home)!r})))\n"
            f"print(sorted(os.listdir({str(PROJECT)!r})) if os.path.isdir({str(PROJECT)!r}) else [])\n"
        )
        result = await pool.run(code)
    assert result.ok and "READ" not in result.output
    home_seen, project_seen = (eval(line) for line in result.output.splitlines()[-2:])  # noqa: S307 - our own print
    # Only the path down to this Python's installation (e.g. pyenv's under /root) may show.
    python_parts = {
        Path(p).relative_to(home).parts[0] for p in bwrap.interpreter_dirs() if Path(p).is_relative_to(home)
    }
    assert set(home_seen) <= python_parts and not (set(home_seen) & (host_entries - python_parts))
    venv_parts = {
        Path(p).relative_to(PROJECT).parts[0] for p in bwrap.interpreter_dirs() if Path(p).is_relative_to(PROJECT)
    }
    assert set(project_seen) <= venv_parts  # the venv (read-only) at most, never the sources


@needs_sandbox
async def test_writes_outside_tmp_fail(pool: SandboxPool) -> None:
    targets = [
        "/x",
        "/usr/x",
        "/etc/x",
        "/opt/tapo-sandbox/worker_main.py",
        sys.prefix + "/x",
        str(Path.home() / "x"),
        "/dev/x",
    ]
    code = (
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('x'); print('WROTE', path)\n"
        "    except OSError as e:\n"
        "        print(type(e).__name__, path)\n"
        "open('/tmp/ok', 'w').write('fine'); print('tmp ok')"
    )
    result = await pool.run(code)
    assert result.ok and "WROTE" not in result.output and "tmp ok" in result.output


@needs_sandbox
async def test_code_cannot_reach_its_worker(pool: SandboxPool) -> None:
    code = (
        "import ctypes, os\n"
        "worker = os.getppid()\n"
        "for path in [f'/proc/{worker}/mem', f'/proc/{worker}/fd/3', f'/proc/{worker}/environ']:\n"
        "    try:\n"
        "        open(path, 'rb').read(1); print('OPENED', path)\n"
        "    except OSError as e:\n"
        "        print(type(e).__name__)\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.ptrace(16, worker, 0, 0), sorted(os.readlink(f'/proc/self/fd/{fd}') for fd in (0, 1, 2)))\n"
    )
    result = await pool.run(code)
    lines = result.output.splitlines()
    assert lines[:3] == ["PermissionError"] * 3  # the worker is not dumpable: no /proc access, no ptrace
    assert lines[3].startswith("-1 ['/dev/null', 'pipe:")  # and only the output pipe is open


@needs_sandbox
async def test_runs_as_unprivileged_distinct_uids(pool: SandboxPool) -> None:
    result = await pool.run(
        "import os\nprint(os.getuid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
    )
    uid, caps = result.output.split()
    assert caps == "0000000000000000"
    if os.geteuid() == 0:
        assert int(uid) in pool.uids
        # One host uid per worker (replacements of workers retired by earlier tests may still start).
        assert await wait_until(lambda: len(pool.uids) >= 3, 15.0), pool.uids
        outputs = await asyncio.gather(
            *(pool.run("import os, time\ntime.sleep(0.3)\nprint(os.getuid())") for _ in range(3))
        )
        assert len({result.output for result in outputs}) == 3


# ---------------------------------------------------------------- sessions


@needs_sandbox
async def test_session_keeps_variables(pool: SandboxPool) -> None:
    assert (await pool.run("x = 41\nimport math", session_id="trajectory-1")).ok
    kept = await pool.run("print(x + 1, math.pi > 3)", session_id="trajectory-1")
    assert kept.ok and kept.output == "42 True\n"
    other = await pool.run("print(x)", session_id="trajectory-2")
    assert not other.ok and "NameError" in other.output
    assert "NameError" in (await pool.run("print(x)")).output  # not in one-off calls either
    crashed = await pool.run("import ctypes\nctypes.string_at(0)", session_id="trajectory-1")
    assert not crashed.ok and "session was reset" in crashed.output
    after = await pool.run("print(x)", session_id="trajectory-1")
    assert "NameError" in after.output
    await pool.end_session("trajectory-1")
    await pool.end_session("trajectory-2")


@needs_sandbox
async def test_session_timeout_resets_it(pool: SandboxPool) -> None:
    assert (await pool.run("y = 1", session_id="slow")).ok
    result = await pool.run("while True: pass", session_id="slow", timeout_s=1.0)
    assert result.timed_out and "session was reset" in result.output
    result = await pool.run("print(y)", session_id="slow")
    assert not result.ok and "NameError" in result.output
    await pool.end_session("slow")


@needs_sandbox
async def test_sessions_are_bounded_and_expire() -> None:
    small = SandboxPool(size=1, limits=LIMITS, max_sessions=1, session_idle_s=1.0, preload=())
    try:
        assert (await small.run("a = 1", session_id="a")).ok
        assert (await small.run("b = 2", session_id="b")).ok  # closes "a", the least recently used
        again = await small.run("print(a)", session_id="a")
        assert "New session" in again.output and "NameError" in again.output
        assert len(small.uids) == 2  # the pooled worker and session "a"
        assert await wait_until(lambda: len(small.uids) == 1, 5.0)  # "a" expired
    finally:
        await small.close()


@needs_sandbox
async def test_host_deadline_replaces_a_stuck_worker(pool: SandboxPool) -> None:
    # The code stops its own worker, so only the host's deadline (time-out + grace) can end the call.
    result = await pool.run(
        "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\nimport time; time.sleep(60)", timeout_s=0.5
    )
    assert not result.ok and result.timed_out
    assert (await pool.run("print('next')")).output == "next\n"
    assert await wait_until(lambda: not only_workers_left(pool), 3.0), only_workers_left(pool)


# ---------------------------------------------------------------- the tool, the CLI helper, the fallback


@needs_sandbox
async def test_code_tool_is_a_tool() -> None:
    tool = CodeTool(pool_size=1, limits=LIMITS, preload=())
    try:
        assert isinstance(tool, Tool) and tool.name == "code" and tool.sandboxed
        output = await tool("print('from the tool')")
        assert output == ToolOutput("from the tool\n", ok=True)
        assert not (await tool("raise SystemExit(2)")).ok
        session = tool.session("t")
        await session("z = 3")
        assert (await session("print(z)")).text == "3\n"
        await session.close()
    finally:
        await tool.close()


@needs_sandbox
async def test_exec_once() -> None:
    result = exec_once("print(sum(range(10)))", timeout=5)  # from async code it runs on a thread of its own
    assert result["ok"] and result["output"] == "45\n" and result["seconds"] >= 0
    assert not exec_once("while True: pass", timeout=0.5)["ok"]


async def test_unavailable_sandbox_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to be found
    bwrap.probe.cache_clear()
    try:
        with pytest.raises(SandboxUnavailableError, match="bubblewrap is not installed.*unsafe_unsandboxed=True"):
            CodeTool()
        tool = CodeTool(unsafe_unsandboxed=True, limits=LIMITS)
        assert not tool.sandboxed
        with caplog.at_level(logging.WARNING, logger="agent_runtime.sandbox"):
            first = await tool("print(2+3)")
            second = await tool("print(3+4)")
        assert first.text == "5\n" and second.text == "7\n"
        assert sum("WITHOUT a sandbox" in record.getMessage() for record in caplog.records) >= 2
    finally:
        bwrap.probe.cache_clear()


# ---------------------------------------------------------------- last: nothing left behind


@needs_sandbox
async def test_nothing_left_after_close(pool: SandboxPool) -> None:
    uids = pool.uids  # this pool's: another sandbox user on the machine has its own
    assert uids
    await pool.close()
    await asyncio.sleep(0)  # background retirements finish inside close()
    assert procs.pids_of_uids(uids) == []  # zombies included
