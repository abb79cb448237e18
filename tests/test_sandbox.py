"""The code sandbox against the real bubblewrap: isolation, limits, clean-up, the pool. No mocks.

Runs where bubblewrap works (the probe says so); elsewhere the module is skipped with the probe's
reason, except the tests of the unavailable path and of the explicit unsandboxed fallback.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from agent_runtime.sandbox import (
    CodeTool,
    SandboxLimits,
    SandboxPool,
    SandboxUnavailableError,
    SeccompUnavailableError,
    bwrap,
    cgroups,
    exec_once,
    procs,
    seccomp,
)
from agent_runtime.sandbox.protections import LimitsInForce
from agent_runtime.sandbox.uids import ALLOCATOR
from agent_runtime.sandbox.worker import SandboxWorker, WorkerDied
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
    """Polls ``predicate``; ``timeout_s`` only catches a hang (it returns as soon as the predicate holds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


# How long a clean-up may take before a test calls it a leak: long on a slow, loaded machine, yet well
# under what a leaked process would last (the calls that leave processes make them sleep 30 s or more).
CLEANUP_S = 15.0


def record_retirements(pool: SandboxPool, monkeypatch: pytest.MonkeyPatch) -> list[SandboxWorker]:
    """The workers ``pool`` kills (``_retire``) from now until the test ends, in order."""
    retired: list[SandboxWorker] = []
    retire = pool._retire

    def recording(worker: SandboxWorker, **kwargs) -> None:
        retired.append(worker)
        retire(worker, **kwargs)

    monkeypatch.setattr(pool, "_retire", recording)
    return retired


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
async def test_infinite_loop_times_out_and_pool_keeps_serving(
    pool: SandboxPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    retired = record_retirements(pool, monkeypatch)
    result = await pool.run("while True:\n    pass", timeout_s=1.0)
    # The call's own 1 s (not the pool's 5 s) ended it, in the worker: the CPU limit would have
    # ended it with a signal instead, and the host's deadline (time-out + grace) by killing the worker.
    assert not result.ok and result.timed_out and result.signal is None
    assert "Timed out after 1 s" in result.output
    assert result.seconds >= 1.0  # the worker's clock: the loop ran until its deadline
    assert retired == []  # the worker ended the call itself and stays in the pool
    assert (await pool.run("print('still here')")).output == "still here\n"
    assert retired == []


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
    in_force = pool.limits_in_force
    assert in_force is not None
    if in_force.uid_per_worker or in_force.cgroup_pids:  # the kernel (RLIMIT_NPROC, pids.max) stops the forks
        count, errno_value = map(int, result.output.split())
        assert 0 < count < LIMITS.max_processes and errno_value == 11  # EAGAIN
    else:  # a shared uid and no cgroup: the worker's own count stops the call
        assert not result.ok and "more processes than allowed" in result.output
    assert await wait_until(lambda: not only_workers_left(pool), CLEANUP_S), only_workers_left(pool)


@needs_sandbox
async def test_fork_bomb_is_contained(pool: SandboxPool) -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = await pool.run(bomb, timeout_s=2.0)
    assert not result.ok
    assert await wait_until(lambda: not only_workers_left(pool), CLEANUP_S), only_workers_left(pool)
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
    result = await pool.run(code, timeout_s=20)
    # The memory limit killed the call, not its 20 s time-out (nor the host's deadline after it).
    assert not result.ok and result.memory_exceeded and "512 MB of memory" in result.output
    assert not result.timed_out and "Timed out" not in result.output
    assert await wait_until(lambda: not only_workers_left(pool), CLEANUP_S), only_workers_left(pool)


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
    assert await wait_until(lambda: not only_workers_left(pool), CLEANUP_S), only_workers_left(pool)
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
async def test_cancellation_kills_the_call_at_once(pool: SandboxPool, monkeypatch: pytest.MonkeyPatch) -> None:
    task = asyncio.create_task(pool.run("import subprocess\nsubprocess.run(['sleep', '37'])", timeout_s=30))

    def sleeping() -> list[str]:
        return [line for line in sandbox_processes(set(ALLOCATOR.range)) if line == "sleep 37"]

    assert await wait_until(lambda: bool(sleeping()), 20.0)
    retired = record_retirements(pool, monkeypatch)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The worker running the call was killed before the cancellation reached the caller, not left
    # to finish it (the sleep lasts 37 s, the call's time-out 30 s).
    assert len(retired) == 1
    assert await wait_until(lambda: not sleeping(), CLEANUP_S), sleeping()


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


PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 1, 9])\nplt.title('drawn')\nprint('plotted')"


def _png_size(b64: str) -> tuple[int, int]:
    data = base64.b64decode(b64)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@needs_sandbox
async def test_a_matplotlib_figure_comes_back_as_a_png(pool: SandboxPool) -> None:
    pytest.importorskip("matplotlib")
    result = await pool.run(PLOT)
    assert result.ok and result.output == "plotted\n[1 figure shown to the user]"  # no font-cache noise
    (image,) = result.images
    assert _png_size(image) == (640, 480)
    two = await pool.run("import matplotlib.pyplot as plt\nplt.figure(); plt.plot([1]); plt.figure(); plt.plot([2])")
    assert len(two.images) == 2 and "[2 figures shown to the user]" in two.output
    assert (await pool.run("print('no figure')")).images == ()  # the next call starts with none


@needs_sandbox
async def test_a_session_returns_each_calls_figures_once(pool: SandboxPool) -> None:
    pytest.importorskip("matplotlib")
    drawn = await pool.run(PLOT, session_id="figures")
    later = await pool.run("print(len(plt.get_fignums()))", session_id="figures")
    await pool.end_session("figures")
    assert len(drawn.images) == 1
    assert later.images == () and later.output == "0\n"  # shown figures are closed


@needs_sandbox
async def test_a_figure_too_large_to_return_is_named_and_the_session_lives_on(pool: SandboxPool) -> None:
    pytest.importorskip("matplotlib")
    noise = ("import numpy as np, matplotlib.pyplot as plt\nx = 41\nplt.figure(figsize=(12, 12))\n"
             "plt.figimage(np.random.default_rng(0).random((1200, 1200, 3)))")
    large = await pool.run(noise, session_id="large")
    after = await pool.run("print(x + 1)", session_id="large")
    await pool.end_session("large")
    assert large.images == () and "1 figure too large to show" in large.output
    assert after.ok and after.output == "42\n"  # the reply stayed a reply: the session is whole


@needs_sandbox
async def test_files_planted_as_figures_are_not_returned(pool: SandboxPool) -> None:
    """Only PNG files written as figures come back: a link (to a file the worker could read) or
    another kind of file in the figure directory is dropped."""
    planted = await pool.run(
        "import os\nos.makedirs('/tmp/.tapo-figures', exist_ok=True)\n"
        "os.symlink('/proc/self/environ', '/tmp/.tapo-figures/00.png')\n"
        "open('/tmp/.tapo-figures/01.png', 'w').write('not a png')\n"
        "os.mkfifo('/tmp/.tapo-figures/02.png')\nprint('planted')", session_id="planted")
    await pool.end_session("planted")
    assert planted.output == "planted\n" and planted.images == ()


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
        assert await wait_until(lambda: len(small.uids) == 1, CLEANUP_S)  # "a" expired (idle for 1 s)
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
    assert await wait_until(lambda: not only_workers_left(pool), CLEANUP_S), only_workers_left(pool)


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


# ---------------------------------------------------------------- limits in force: cgroups and seccomp


def _fake_cgroup(path: Path, controllers: str, enabled: str = "") -> Path:
    """A directory with the files of a cgroup v2 that ``prepare_parent`` reads and writes."""
    path.mkdir()
    (path / "cgroup.controllers").write_text(controllers + "\n")
    (path / "cgroup.subtree_control").write_text(enabled + "\n")
    (path / "cgroup.procs").write_text("")
    return path


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


async def test_cgroup_v2_path_and_mount_are_read_from_proc_files(tmp_path: Path) -> None:
    hybrid = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/ba31\n0::/\n"
    assert cgroups.unified_path(hybrid) == "/"
    assert cgroups.unified_path("0::/user.slice/user-1000.slice/app.scope\n") == "/user.slice/user-1000.slice/app.scope"
    assert cgroups.unified_path("4:memory:/x\n1:name=systemd:/\n") is None  # cgroup v1 only
    mount_point = tmp_path / "cg 2"  # mountinfo writes the space as \040
    (mount_point / "sub").mkdir(parents=True)
    mountinfo = (
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        f"41 31 0:38 /docker/abc {str(mount_point).replace(' ', chr(92) + '040')} rw shared:9 - cgroup2 cgroup2 rw\n"
    )
    mounts = cgroups.cgroup2_mounts(mountinfo)
    assert mounts == [("/docker/abc", str(mount_point))]
    assert cgroups.cgroup_directory("/docker/abc/sub", mounts) == mount_point / "sub"
    assert cgroups.cgroup_directory("/docker/abc", mounts) == mount_point
    assert cgroups.cgroup_directory("/docker/abcd", mounts) is None  # not below the mount's root
    assert cgroups.cgroup_directory("/docker/abc/gone", mounts) is None
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert cgroups.cgroup_directory("/a/b", [("/", str(tmp_path))]) == tmp_path / "a" / "b"


async def test_own_cgroup_directory_holds_this_process() -> None:
    found = cgroups.own_cgroup_directory()  # the real /proc and cgroupfs of this machine
    if isinstance(found, str):
        pytest.skip(found)
    assert os.getpid() in cgroups.member_pids(found)


async def test_a_parent_needs_memory_and_pids_and_gets_them_enabled(tmp_path: Path) -> None:
    no_memory = _fake_cgroup(tmp_path / "a", "cpu io pids")
    reason = cgroups.prepare_parent(no_memory)
    assert reason is not None and "memory controller is not available" in reason and "cpu io pids" in reason
    assert (no_memory / "cgroup.subtree_control").read_text() == "\n"  # nothing written
    neither = cgroups.prepare_parent(_fake_cgroup(tmp_path / "b", "cpu"))
    assert neither is not None and "memory and pids controllers are not available" in neither
    ready = _fake_cgroup(tmp_path / "c", "cpu io memory pids", "cpu")
    assert cgroups.prepare_parent(ready) is None
    assert (ready / "cgroup.subtree_control").read_text() == "+memory +pids"  # what the kernel is asked
    enabled = _fake_cgroup(tmp_path / "d", "memory pids", "pids memory")
    assert cgroups.prepare_parent(enabled) is None
    assert (enabled / "cgroup.subtree_control").read_text() == "pids memory\n"  # already on: untouched
    missing = cgroups.prepare_parent(tmp_path / "nothing")
    assert missing is not None and "not a cgroup v2 directory" in missing
    # Moving a worker from our cgroup into the parent's child asks for the cgroup above both.
    hierarchy = _fake_cgroup(tmp_path / "hierarchy", "memory pids", "memory pids")
    ours = _fake_cgroup(hierarchy / "server", "memory pids")
    target = _fake_cgroup(hierarchy / "sandbox", "memory pids", "memory pids")
    assert cgroups.prepare_parent(target, own=ours) is None
    if os.geteuid() != 0:  # root may write whatever the modes say
        (hierarchy / "cgroup.procs").chmod(0o444)
        above = cgroups.prepare_parent(target, own=ours)
        assert above is not None and str(hierarchy / "cgroup.procs") in above


async def test_each_worker_cgroup_gets_pids_max_memory_max_and_no_swap(tmp_path: Path) -> None:
    limits = SandboxLimits(max_processes=40, call_memory_mb=700, tmp_mb=32)
    values = cgroups.CgroupLimits.for_limits(limits)
    assert values.pids_max == 40 + cgroups.BWRAP_PROCESSES
    assert values.memory_max_bytes == (700 + 32 + 8 + cgroups.WORKER_RESERVE_MB) << 20  # call, /tmp, /dev/shm
    parent = _fake_cgroup(tmp_path / "parent", "memory pids", "memory pids")
    setup = cgroups.CgroupSetup(parent, values)
    first, second = setup.create(), setup.create()
    assert first != second and first.parent == parent == second.parent
    assert first.name.startswith(f"tapo-sandbox-{os.getpid()}-")
    assert (first / "pids.max").read_text() == "42"
    assert (first / "memory.max").read_text() == str((740 + cgroups.WORKER_RESERVE_MB) << 20)
    assert not (first / "memory.swap.max").exists()  # no swap accounting in this kernel: nothing written
    with_swap = tmp_path / "with-swap"
    with_swap.mkdir()
    (with_swap / "memory.swap.max").write_text("max\n")
    cgroups.write_limits(with_swap, values)
    assert (with_swap / "memory.swap.max").read_text() == "0"


async def test_detect_takes_the_named_parent_and_clears_stale_worker_cgroups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = _fake_cgroup(tmp_path / "delegated", "cpu memory pids", "memory pids")
    stale, live, other = (
        parent / f"tapo-sandbox-{_dead_pid()}-3",
        parent / f"tapo-sandbox-{os.getpid()}-1",
        parent / "someone-else",
    )
    for path in (stale, live, other):
        path.mkdir()
    monkeypatch.setenv(cgroups.PARENT_ENV, str(parent))
    setup = cgroups.detect(LIMITS)
    assert isinstance(setup, cgroups.CgroupSetup)
    assert setup.parent == parent and setup.limits == cgroups.CgroupLimits.for_limits(LIMITS)
    assert not stale.exists() and live.exists() and other.exists()
    monkeypatch.setenv(cgroups.PARENT_ENV, str(tmp_path / "missing"))
    reason = cgroups.detect(LIMITS)
    assert isinstance(reason, str) and "TAPO_SANDBOX_CGROUP" in reason
    monkeypatch.setenv(cgroups.PARENT_ENV, str(_fake_cgroup(tmp_path / "v1-only", "cpu")))
    assert "not available" in str(cgroups.detect(LIMITS))
    # Relative: from our own cgroup (systemd's DelegateSubgroup= leaves the service one level down).
    assert cgroups.relative_to_own("..", tmp_path / "svc" / "server") == tmp_path / "svc"
    assert cgroups.relative_to_own("../sandbox", tmp_path / "svc" / "server") == tmp_path / "svc" / "sandbox"
    own = cgroups.own_cgroup_directory()
    if not isinstance(own, str):
        monkeypatch.setenv(cgroups.PARENT_ENV, "..")
        via_relative = cgroups.detect(LIMITS)
        via_absolute = cgroups.detect(LIMITS, parent=str(own.parent))
        assert via_relative == via_absolute


async def test_oom_kills_are_read_from_memory_events(tmp_path: Path) -> None:
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n")
    assert cgroups.oom_kills(tmp_path) == 2
    assert cgroups.oom_kills(tmp_path / "gone") == 0


@needs_sandbox
async def test_a_worker_and_its_calls_live_in_the_worker_cgroup() -> None:
    """Against the real cgroupfs: the worker's command enters its cgroup first; removal kills it all."""
    parent = cgroups.own_cgroup_directory()
    if isinstance(parent, str):
        pytest.skip(parent)
    path = parent / f"{cgroups.NAME_PREFIX}{os.getpid()}-0"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup in {parent}: {exc}")
    tools = bwrap.find_tools()
    assert isinstance(tools, bwrap.Tools)
    host_uid = ALLOCATOR.acquire() if bwrap.running_as_root() else None
    nproc = LIMITS.max_processes if host_uid is not None else bwrap.nproc_limit_for_shared_uid(LIMITS.max_processes)
    program = seccomp.filter_program()
    seccomp_fd = seccomp.program_fd(program) if program is not None else None
    command = cgroups.enter_command(path) + bwrap.worker_command(tools, LIMITS, host_uid, nproc, (), seccomp_fd)
    worker = SandboxWorker(command, host_uid, "cgroup-test", () if seccomp_fd is None else (seccomp_fd,), path)
    try:
        await worker.start(30.0)
        # bubblewrap's monitor and init, and the worker: all of them, and nothing else.
        assert len(cgroups.member_pids(path)) == cgroups.BWRAP_PROCESSES + 1
        request = {
            "op": "run",
            "code": "import os, time\nif os.fork() == 0:\n    time.sleep(30)\ntime.sleep(30)",
            "timeout_s": 60.0,
            "capture_bytes": LIMITS.capture_bytes,
            "limits": {
                "memory_mb": LIMITS.memory_mb,
                "call_memory_mb": LIMITS.call_memory_mb,
                "max_processes": LIMITS.max_processes,
                "max_file_mb": LIMITS.max_file_mb,
                "max_open_files": LIMITS.max_open_files,
            },
        }
        call = asyncio.create_task(worker.request(request, 60.0))
        # The call's process and its child are born in the worker's cgroup too.
        assert await wait_until(lambda: len(cgroups.member_pids(path)) == cgroups.BWRAP_PROCESSES + 3, 15.0)
        members = cgroups.member_pids(path)
        assert await asyncio.to_thread(cgroups.remove, path)  # kills everything in it, then removes it
        assert not path.exists()
        assert not any(Path(f"/proc/{pid}").exists() and _stat_fields(pid)[0] != "Z" for pid in members)
        with pytest.raises(WorkerDied):  # the worker died with its cgroup
            await call
        assert await wait_until(lambda: not worker.alive, 5.0)
    finally:
        if seccomp_fd is not None:
            os.close(seccomp_fd)
        worker.kill()
        await worker.wait_closed()
        if path.exists():
            cgroups.remove(path)
        if host_uid is not None:
            ALLOCATOR.release(host_uid)


def _cgroup_of(pid: int) -> str | None:
    try:
        return cgroups.unified_path(Path(f"/proc/{pid}/cgroup").read_text())
    except OSError:
        return None


@needs_sandbox
async def test_limits_in_force_reflect_this_machine(pool: SandboxPool) -> None:
    in_force = pool.limits_in_force
    assert in_force is not None
    missing = " ".join(in_force.missing)
    # Uids: one per worker as root, else none of their own.
    assert in_force.uid_per_worker == (os.geteuid() == 0) == bool(pool.uids)
    assert ("uid per worker" in missing) == (not in_force.uid_per_worker)
    # Seccomp: the call's processes carry one filter more than this process (bwrap's), or none more.
    code = (
        "import resource\n"
        "print(open('/proc/self/status').read().split('Seccomp_filters:')[1].split()[0])\n"
        "for name in ('NPROC', 'AS', 'FSIZE', 'NOFILE', 'CORE'):\n"
        "    print(resource.getrlimit(getattr(resource, 'RLIMIT_' + name))[1])\n"
    )
    result = await pool.run(code)
    assert result.ok, result.output
    filters, *hard_limits = (int(word) for word in result.output.split())
    ours = int(Path("/proc/self/status").read_text().split("Seccomp_filters:")[1].split()[0])
    assert filters == ours + (1 if in_force.seccomp_filter else 0)
    assert ("seccomp" in missing) == (not in_force.seccomp_filter)
    # Rlimits: the hard limits the code sees are the ones reported.
    assert hard_limits == [in_force.rlimits[name] for name in ("nproc", "as", "fsize", "nofile", "core")]
    assert in_force.nproc_scope == ("worker" if in_force.uid_per_worker else "pool")
    # Cgroups: each worker in a cgroup of its own with the reported values, or in ours.
    assert in_force.cgroup_pids == in_force.cgroup_memory == bool(pool.cgroups)
    assert ("cgroup per worker" in missing) == (not in_force.cgroup_memory)
    if in_force.cgroup_memory:
        for path in pool.cgroups:
            assert path.parent == Path(str(in_force.cgroup_parent))
            assert (path / "pids.max").read_text().strip() == str(in_force.cgroup_pids_max)
            assert (path / "memory.max").read_text().strip() == str(in_force.cgroup_memory_max_bytes)
            assert cgroups.member_pids(path), path
    elif pool.uids:
        workers = procs.pids_of_uids(pool.uids)
        assert workers and {_cgroup_of(pid) for pid in workers} <= {_cgroup_of(os.getpid()), None}
    assert in_force.rss_poll_s > 0 and in_force.call_memory_mb == LIMITS.call_memory_mb


@needs_sandbox
async def test_start_says_once_which_limits_are_in_force(caplog: pytest.LogCaptureFixture) -> None:
    fresh = SandboxPool(size=2, limits=LIMITS, preload=())
    try:
        with caplog.at_level(logging.INFO, logger="agent_runtime.sandbox"):
            await fresh.start()
            await fresh.run("print(1)")
    finally:
        await fresh.close()
    in_force = fresh.limits_in_force
    assert in_force is not None
    records = [record for record in caplog.records if hasattr(record, "sandbox_limits")]
    assert len(records) == 1
    assert records[0].sandbox_limits == in_force.to_dict()
    assert records[0].levelno == (logging.WARNING if in_force.isolation_weakened else logging.INFO)
    for line in in_force.missing:
        assert line in records[0].getMessage()


async def test_only_weakened_isolation_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A missing per-worker cgroup is reported at INFO (the RSS poll still bounds a call); workers
    sharing a uid or running without the seccomp filter are a WARNING."""
    as_root_without_cgroups = LimitsInForce(
        uid_per_worker=True, seccomp_filter=True, cgroup_parent=None, cgroup_pids_max=None,
        cgroup_memory_max_bytes=None, rlimits={"nproc": 64}, nproc_scope="worker", rss_poll_s=0.1,
        call_memory_mb=512, missing=("cgroup per worker: cgroup v1 only",),
    )
    without_seccomp = replace(as_root_without_cgroups, seccomp_filter=False,
                              missing=as_root_without_cgroups.missing + ("seccomp filter: no libseccomp",))
    shared_uid = replace(as_root_without_cgroups, uid_per_worker=False, nproc_scope="pool")
    with caplog.at_level(logging.INFO, logger="agent_runtime.sandbox"):
        for in_force in (as_root_without_cgroups, without_seccomp, shared_uid):
            in_force.log()
    levels = [record.levelno for record in caplog.records]
    assert levels == [logging.INFO, logging.WARNING, logging.WARNING]
    assert "Missing: cgroup per worker: cgroup v1 only" in caplog.records[0].getMessage()


@needs_sandbox
async def test_without_libseccomp_the_pool_refuses_unless_accepted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import ctypes.util

    find_library = ctypes.util.find_library  # how a machine without libseccomp2 answers: no such library
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None if name == "seccomp" else find_library(name))
    monkeypatch.delenv(seccomp.ALLOW_WITHOUT_ENV, raising=False)
    seccomp.cache_clear()
    try:
        refused = SandboxPool(size=1, limits=LIMITS, preload=())
        with pytest.raises(SeccompUnavailableError, match="libseccomp.*TAPO_SANDBOX_ALLOW_NO_SECCOMP=1"):
            await refused.start()
        await refused.close()
        with pytest.raises(SandboxUnavailableError, match="TAPO_SANDBOX_ALLOW_NO_SECCOMP=1"):
            CodeTool(pool_size=1, limits=LIMITS, preload=())
        monkeypatch.setenv(seccomp.ALLOW_WITHOUT_ENV, "1")
        accepted = SandboxPool(size=1, limits=LIMITS, preload=())
        try:
            with caplog.at_level(logging.WARNING, logger="agent_runtime.sandbox"):
                await accepted.start()
            result = await accepted.run(
                "print(open('/proc/self/status').read().split('Seccomp_filters:')[1].split()[0])"
            )
        finally:
            await accepted.close()
        assert accepted.limits_in_force is not None and not accepted.limits_in_force.seccomp_filter
        ours = Path("/proc/self/status").read_text().split("Seccomp_filters:")[1].split()[0]
        assert result.ok and result.output.strip() == ours  # really no filter of ours
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("seccomp filter: libseccomp cannot be loaded" in text for text in warnings), warnings
    finally:
        monkeypatch.undo()  # the library is back: later pools build the filter again
        seccomp.cache_clear()
    assert seccomp.filter_program() is not None


# ---------------------------------------------------------------- last: nothing left behind


@needs_sandbox
async def test_nothing_left_after_close(pool: SandboxPool) -> None:
    uids = pool.uids  # this pool's: another sandbox user on the machine has its own
    assert uids
    await pool.close()
    await asyncio.sleep(0)  # background retirements finish inside close()
    assert procs.pids_of_uids(uids) == []  # zombies included
