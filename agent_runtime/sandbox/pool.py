"""A pool of warm sandbox workers serving concurrent calls, replacing any that time out or die."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from agent_runtime.sandbox import bwrap, cgroups, output, seccomp
from agent_runtime.sandbox.errors import SandboxError, SandboxUnavailableError, unavailable_message
from agent_runtime.sandbox.limits import SandboxLimits
from agent_runtime.sandbox.protections import RSS_POLL_S, LimitsInForce
from agent_runtime.sandbox.result import ExecResult
from agent_runtime.sandbox.sessions import SessionSlot, SessionTable
from agent_runtime.sandbox.uids import ALLOCATOR
from agent_runtime.sandbox.worker import SandboxWorker, WorkerDied, WorkerTimedOut

log = logging.getLogger(__name__)

HOST_GRACE_S = 5.0  # the worker enforces the time-out itself (and cleans up); the host steps in later
RESPAWN_DELAYS_S = (0.2, 1.0, 2.0, 5.0, 10.0, 30.0)
DEFAULT_PRELOAD = ("numpy", "sympy", "matplotlib.pyplot")  # pyplot: its font cache is built once per worker


class SandboxPool:
    """``size`` warm workers for one-off calls, plus up to ``max_sessions`` dedicated session workers.

    Every call gets a fresh forked process in an idle worker; a call that times out, is cancelled or
    kills its worker costs that worker, which is replaced in the background.

    ``start`` refuses (``SeccompUnavailableError``) where libseccomp is missing, unless
    ``TAPO_SANDBOX_ALLOW_NO_SECCOMP=1`` accepts running without the filter. Where a cgroup v2 is
    writable (see ``cgroups``) every worker gets a cgroup of its own with ``pids.max`` and
    ``memory.max``. ``limits_in_force`` says, once started, which limits apply here.
    """

    def __init__(
        self,
        size: int = 2,
        limits: SandboxLimits | None = None,
        *,
        max_sessions: int = 16,
        session_idle_s: float = 600.0,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        startup_timeout_s: float = 60.0,
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        self.size = size
        self.limits = limits or SandboxLimits()
        self.preload = preload
        self.startup_timeout_s = startup_timeout_s
        self._sessions = SessionTable(max_sessions, session_idle_s)
        self._idle: asyncio.Queue[SandboxWorker] = asyncio.Queue()
        self._workers: set[SandboxWorker] = set()  # every live worker, pooled or session
        self._background: set[asyncio.Task[Any]] = set()  # retirements and replacements
        self._expiry: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False
        self._closing = asyncio.Event()  # wakes replacement back-offs when the pool closes
        self._tools: bwrap.Tools | None = None
        self._nproc = self.limits.max_processes
        self._seccomp_program: bytes | None = None
        self._cgroups: cgroups.CgroupSetup | None = None
        self.limits_in_force: LimitsInForce | None = None  # set by start()

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Probes bubblewrap and starts the workers (also done by the first ``run``)."""
        async with self._start_lock:
            if self._started:
                return
            if self._closed:
                raise SandboxError("the sandbox pool is closed")
            reason = await asyncio.to_thread(bwrap.probe, self.limits)
            if reason is not None:
                raise SandboxUnavailableError(unavailable_message(reason))
            tools = bwrap.find_tools()
            assert isinstance(tools, bwrap.Tools)
            self._tools = tools
            self._seccomp_program = seccomp.required_program()  # refuses without the filter, unless accepted
            setup = await asyncio.to_thread(cgroups.detect, self.limits)
            self._cgroups = setup if isinstance(setup, cgroups.CgroupSetup) else None
            if not bwrap.running_as_root():
                budget = (self.size + self._sessions.max_sessions) * self.limits.max_processes
                self._nproc = await asyncio.to_thread(bwrap.nproc_limit_for_shared_uid, budget)
            self.limits_in_force = self._limits_report(None if isinstance(setup, cgroups.CgroupSetup) else setup)
            self.limits_in_force.log()
            spawned = await asyncio.gather(*(self._spawn() for _ in range(self.size)), return_exceptions=True)
            failures = [item for item in spawned if isinstance(item, BaseException)]
            for item in spawned:
                if isinstance(item, SandboxWorker):
                    if failures:
                        await self._dispose(item)
                    else:
                        self._idle.put_nowait(item)
            if failures:
                raise SandboxError(f"sandbox workers failed to start: {failures[0]}") from failures[0]
            self._started = True
            self._expiry = asyncio.create_task(self._expire_sessions(), name="sandbox-session-expiry")
            log.info("sandbox pool ready: %d workers", self.size)

    async def close(self) -> None:
        """Kills every worker and waits until none of their processes is left."""
        self._closed = True  # replacements stop; retirements in flight finish their clean-up
        self._closing.set()
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        for slot in self._sessions.pop_all():
            if slot.worker is not None:
                self._workers.add(slot.worker)
        await asyncio.gather(*(self._dispose(worker) for worker in list(self._workers)))

    def session_pids(self) -> dict[str, int]:
        """The host pid of each session's live worker, by session id."""
        return {sid: slot.worker.pid for sid, slot in self._sessions.items()
                if slot.worker is not None and slot.worker.pid is not None}

    async def __aenter__(self) -> SandboxPool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def uids(self) -> set[int]:
        """Host uids of the live workers (empty in non-root mode, where they share ours)."""
        return {worker.host_uid for worker in self._workers if worker.host_uid is not None}

    @property
    def cgroups(self) -> set[Path]:
        """The cgroups of the live workers (empty where no per-worker cgroups are possible)."""
        return {worker.cgroup for worker in self._workers if worker.cgroup is not None}

    def _limits_report(self, cgroup_reason: str | None) -> LimitsInForce:
        root = bwrap.running_as_root()
        missing = []
        if not root:
            missing.append(
                f"uid per worker: not running as root, so all workers share uid {os.getuid()} and the process "
                f"limit ({self._nproc}) is pool-wide, this server's own processes included"
            )
        if self._seccomp_program is None:
            missing.append(
                f"seccomp filter: {seccomp.unavailable_reason()} "
                f"(running without it, as {seccomp.ALLOW_WITHOUT_ENV}=1 accepts)"
            )
        if self._cgroups is None:
            missing.append(
                f"cgroup per worker: {cgroup_reason}; a call's memory is bounded only by the RSS poll "
                f"(every {RSS_POLL_S:g} s, which a fast allocation can overshoot)"
                + ("" if root else " and its processes by the pool-wide process limit")
            )
        setup = self._cgroups
        return LimitsInForce(
            uid_per_worker=root,
            seccomp_filter=self._seccomp_program is not None,
            cgroup_parent=str(setup.parent) if setup is not None else None,
            cgroup_pids_max=setup.limits.pids_max if setup is not None else None,
            cgroup_memory_max_bytes=setup.limits.memory_max_bytes if setup is not None else None,
            rlimits=bwrap.rlimit_values(self.limits, self._nproc),
            nproc_scope="worker" if root else "pool",
            rss_poll_s=RSS_POLL_S,
            call_memory_mb=self.limits.call_memory_mb,
            missing=tuple(missing),
        )

    # ------------------------------------------------------------ calls

    def _request(self, op: str, code: str, timeout_s: float) -> dict[str, Any]:
        limits = self.limits
        return {
            "op": op,
            "code": code,
            "timeout_s": timeout_s,
            "capture_bytes": limits.capture_bytes,
            "limits": {
                "memory_mb": limits.memory_mb,
                "call_memory_mb": limits.call_memory_mb,
                "max_processes": limits.max_processes,
                "max_file_mb": limits.max_file_mb,
                "max_open_files": limits.max_open_files,
                "memory_check_s": RSS_POLL_S,
            },
        }

    async def _request_on(self, worker: SandboxWorker, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """``worker.request``, marking the reply when the kernel killed the call for its cgroup's memory."""
        before = cgroups.oom_kills(worker.cgroup) if worker.cgroup is not None else 0
        reply = await worker.request(message, timeout_s)
        if worker.cgroup is not None and not reply.get("ok") and cgroups.oom_kills(worker.cgroup) > before:
            assert self._cgroups is not None
            reply["memory_exceeded"] = True
            reply["call_memory_mb"] = self._cgroups.limits.memory_max_bytes >> 20
        return reply

    async def run(self, code: str, *, timeout_s: float | None = None, session_id: str | None = None) -> ExecResult:
        """Runs ``code``; failures of the code are in the result (``ok=False``), never raised."""
        if self._closed:
            raise SandboxError("the sandbox pool is closed")
        if not self._started:
            await self.start()
        timeout = float(timeout_s if timeout_s is not None else self.limits.timeout_s)
        if session_id is not None:
            return await self._run_in_session(session_id, code, timeout)
        worker = await self._take_idle()
        try:
            reply = await self._request_on(worker, self._request("run", code, timeout), timeout + HOST_GRACE_S)
        except WorkerTimedOut:
            self._retire(worker)
            return self._failure(timeout, timed_out=True, message="")
        except WorkerDied as exc:
            log.warning("%s", exc)
            self._retire(worker)
            return self._failure(timeout, message="[The sandbox process died during the call.]")
        except BaseException:  # cancelled: kill the call now, replace the worker later
            self._retire(worker)
            raise
        if reply.get("clean", True):
            self._idle.put_nowait(worker)
        else:
            log.warning("sandbox worker %s could not clean up after a call; replacing it", worker.label)
            self._retire(worker)
        return self._result(reply, timeout)

    async def end_session(self, session_id: str) -> None:
        """Ends a session now (it would otherwise expire after ``session_idle_s``)."""
        slot = self._sessions.pop(session_id)
        if slot is not None:
            async with slot.lock:
                if slot.worker is not None:
                    await self._dispose(slot.worker)
                    slot.worker = None

    async def _run_in_session(self, session_id: str, code: str, timeout: float) -> ExecResult:
        slot = self._sessions.slot(session_id)
        async with slot.lock:
            if self._sessions.slot(session_id) is not slot:  # ended or expired while we waited
                return await self._run_in_session(session_id, code, timeout)
            if slot.worker is None or not slot.worker.alive:
                self._end_session_worker(slot)
                slot.worker = await self._session_worker(session_id)
            worker = slot.worker
            try:
                reply = await self._request_on(
                    worker, self._request("session_run", code, timeout), timeout + HOST_GRACE_S
                )
            except (WorkerTimedOut, WorkerDied) as exc:
                self._end_session_worker(slot)
                return self._failure(
                    timeout,
                    timed_out=isinstance(exc, WorkerTimedOut),
                    message="[The session was reset: its variables are gone.]",
                )
            except BaseException:
                self._end_session_worker(slot)
                raise
            finally:
                slot.last_used = time.monotonic()
            lost_before = bool(reply.get("session_new")) and slot.had_state
            slot.had_state = True
            if not reply.get("clean", True):
                self._end_session_worker(slot)
        result = self._result(reply, timeout)
        prefix = "[New session: variables from earlier calls are gone.]" if lost_before else ""
        suffix = "[The session was reset: its variables are gone.]" if reply.get("session_lost") else ""
        if prefix or suffix:
            text = "\n".join(part for part in (prefix, result.output.rstrip("\n"), suffix) if part)
            result = ExecResult(**{**result.to_dict(), "output": text})
        return result

    def _end_session_worker(self, slot: SessionSlot) -> None:
        if slot.worker is not None:
            self._retire(slot.worker, replace=False)
            slot.worker = None

    async def _session_worker(self, session_id: str) -> SandboxWorker:
        while self._sessions.live_count() >= self._sessions.max_sessions:
            victim = self._sessions.least_recent_live(keep=session_id)
            if victim is None:
                raise SandboxError(f"all {self._sessions.max_sessions} code sessions are busy")
            log.info("closing the least recently used code session to open another")
            self._end_session_worker(victim)
        return await self._spawn()

    async def _expire_sessions(self) -> None:
        period = max(1.0, min(60.0, self._sessions.idle_s / 2))
        while True:
            await asyncio.sleep(period)
            for slot in self._sessions.pop_expired():
                if slot.worker is not None:
                    self._retire(slot.worker, replace=False)
                    slot.worker = None

    # ------------------------------------------------------------ results

    def _result(self, reply: dict[str, Any], timeout: float) -> ExecResult:
        return ExecResult.from_reply(reply, timeout, self.limits.max_output_chars, sandboxed=True)

    def _failure(self, timeout: float, *, timed_out: bool = False, message: str) -> ExecResult:
        note = output.ending_note({"timed_out": True}, timeout, True) if timed_out else ""
        text = "\n".join(part for part in (note, message) if part)
        return ExecResult(ok=False, output=text, seconds=timeout if timed_out else 0.0, timed_out=timed_out)

    # ------------------------------------------------------------ workers

    async def _spawn(self) -> SandboxWorker:
        assert self._tools is not None
        cgroup = await asyncio.to_thread(self._cgroups.create) if self._cgroups is not None else None
        host_uid = None
        seccomp_fd = None
        try:
            host_uid = await asyncio.to_thread(ALLOCATOR.acquire) if bwrap.running_as_root() else None
            program = self._seccomp_program
            seccomp_fd = seccomp.program_fd(program) if program is not None else None
            command = bwrap.worker_command(self._tools, self.limits, host_uid, self._nproc, self.preload, seccomp_fd)
            if cgroup is not None:  # every process of the worker is born in its cgroup
                command = cgroups.enter_command(cgroup) + command
            label = f"sandbox-{host_uid if host_uid is not None else id(self)}"
            worker = SandboxWorker(
                command, host_uid, label, pass_fds=() if seccomp_fd is None else (seccomp_fd,), cgroup=cgroup
            )
            await worker.start(self.startup_timeout_s)
        except BaseException:
            if host_uid is not None:
                ALLOCATOR.release(host_uid)
            if cgroup is not None:
                await asyncio.to_thread(cgroups.remove, cgroup)
            raise
        finally:
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        if self._closed:  # closed while we were starting
            await self._dispose(worker)
            raise SandboxError("the sandbox pool is closed")
        self._workers.add(worker)
        return worker

    async def _take_idle(self) -> SandboxWorker:
        while True:
            worker = await self._idle.get()
            if worker.alive:
                return worker
            self._retire(worker)

    def _retire(self, worker: SandboxWorker, *, replace: bool = True) -> None:
        """Kills ``worker`` now; in the background waits for its processes and starts a replacement."""
        worker.kill()
        self._track(asyncio.create_task(self._dispose_and_replace(worker, replace), name=f"{worker.label}-retire"))

    async def _dispose(self, worker: SandboxWorker) -> None:
        self._workers.discard(worker)
        clean = await worker.close()
        if worker.cgroup is not None and not await asyncio.to_thread(cgroups.remove, worker.cgroup):
            log.error("the cgroup %s of a sandbox worker could not be removed", worker.cgroup)
        if worker.host_uid is not None:
            if clean:
                ALLOCATOR.release(worker.host_uid)
            else:  # never reuse a uid that still owns processes
                log.error("processes of sandbox uid %d survived; the uid is not reused", worker.host_uid)

    async def _dispose_and_replace(self, worker: SandboxWorker, replace: bool) -> None:
        await self._dispose(worker)
        if not replace:
            return
        attempt = 0
        while not self._closed:  # calls wait on the idle queue: keep trying, more slowly
            try:
                self._idle.put_nowait(await self._spawn())
                return
            except Exception as exc:
                log.error("could not start a replacement sandbox worker: %s", exc)
            delay = RESPAWN_DELAYS_S[min(attempt, len(RESPAWN_DELAYS_S) - 1)]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)
            attempt += 1

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)
