"""A seccomp filter for the sandbox, compiled by libseccomp (through ctypes) and loaded by bwrap.

Why: as root, bwrap runs without a user namespace and ``--disable-userns`` is not available, so the
code could create user namespaces of its own (measured: ``unshare(CLONE_NEWUSER)`` succeeded) and,
as "root" there, mount an unbounded tmpfs or reach kernel interfaces meant for administrators. The
filter refuses that and a few more interfaces a code sandbox has no use for (Docker's default profile
refuses them too). SysV IPC is refused as well: its segments hold memory outside every rlimit.

Required by default: without libseccomp (``libseccomp2``) the pool refuses to start, unless the
operator accepts running without the filter with ``TAPO_SANDBOX_ALLOW_NO_SECCOMP=1`` (then it starts,
with a warning). ``unavailable_reason`` says why the filter is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os

from agent_runtime.sandbox.errors import SeccompUnavailableError

ALLOW_WITHOUT_ENV = "TAPO_SANDBOX_ALLOW_NO_SECCOMP"  # =1: accept running the sandbox without the filter

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
CLONE_NEWUSER = 0x10000000

REFUSED = (
    "unshare",  # new namespaces
    "setns",
    "keyctl",  # kernel keyrings are not namespaced
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "shmget",  # SysV IPC: memory outside rlimits, shared across calls
    "msgget",
    "semget",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_by_handle_at",
    "kexec_load",
    "init_module",
    "finit_module",
    "delete_module",
    "acct",
    "swapon",
    "swapoff",
    "syslog",
)


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _load_libseccomp() -> ctypes.CDLL:
    """libseccomp through ctypes; OSError where it is not installed (or cannot be loaded)."""
    name = ctypes.util.find_library("seccomp")
    if name is None:
        raise OSError(errno.ENOENT, "libseccomp is not installed (Debian/Ubuntu: apt-get install libseccomp2)")
    lib = ctypes.CDLL(name)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def filter_program() -> bytes | None:
    """The compiled BPF program (native architecture; other ABIs are killed), or None without libseccomp."""
    return _build()[0]


def unavailable_reason() -> str | None:
    """Why there is no filter (libseccomp missing, a rule it refused), or None when there is one."""
    return _build()[1]


def cache_clear() -> None:
    """Forgets the compiled filter (and why it was missing): the next call loads libseccomp again."""
    _build.cache_clear()


@functools.lru_cache(maxsize=1)
def _build() -> tuple[bytes | None, str | None]:
    try:
        lib = _load_libseccomp()
    except OSError as exc:
        return None, f"libseccomp cannot be loaded: {exc}"
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        return None, "seccomp_init failed"
    try:

        def refuse(name: str, code: int, *conditions: _ArgCmp) -> None:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a syscall on this architecture
                return
            array = (_ArgCmp * len(conditions))(*conditions) if conditions else None
            result = lib.seccomp_rule_add_array(ctx, _errno_action(code), number, len(conditions), array)
            if result != 0:
                raise OSError(-result, f"seccomp rule for {name}: {os.strerror(-result)}")

        for name in REFUSED:
            refuse(name, errno.EPERM)
        # clone: refuse only a new user namespace (flags are its first argument on x86-64 and arm64).
        refuse("clone", errno.EPERM, _ArgCmp(0, SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
        # clone3 passes flags in memory a filter cannot read: ENOSYS makes glibc fall back to clone.
        refuse("clone3", errno.ENOSYS)
        read_fd, write_fd = os.pipe()
        try:
            result = lib.seccomp_export_bpf(ctx, write_fd)
            os.close(write_fd)
            write_fd = -1
            if result != 0:
                raise OSError(-result, f"seccomp export: {os.strerror(-result)}")
            chunks = []
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks), None
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
    except OSError as exc:
        return None, f"libseccomp could not build the filter: {exc}"
    finally:
        lib.seccomp_release(ctx)


def running_without_accepted() -> bool:
    """Whether the operator accepted a sandbox without the filter (``TAPO_SANDBOX_ALLOW_NO_SECCOMP=1``)."""
    return os.environ.get(ALLOW_WITHOUT_ENV, "").strip().lower() in ("1", "true", "yes")


def required_program() -> bytes | None:
    """The filter; None only where it is missing and running without it was accepted.

    Raises ``SeccompUnavailableError`` (naming the flag) where it is missing and not accepted.
    """
    program, reason = _build()
    if program is not None:
        return program
    if not running_without_accepted():
        raise SeccompUnavailableError(
            f"the sandbox's seccomp filter is not available: {reason}. Without it, code in the sandbox "
            "could create user namespaces and reach kernel interfaces it has no use for (as root), and "
            "SysV shared memory outside every limit. Install libseccomp2, or accept running without the "
            f"filter by setting {ALLOW_WITHOUT_ENV}=1 in the environment."
        )
    return None


def program_fd(program: bytes) -> int:
    """A readable fd holding ``program`` for ``bwrap --seccomp FD`` (the caller closes it after spawning)."""
    read_fd, write_fd = os.pipe()
    try:
        view = memoryview(program)
        while view:  # a filter is a few hundred bytes: far below a pipe's capacity
            view = view[os.write(write_fd, view) :]
    finally:
        os.close(write_fd)
    return read_fd
