"""A seccomp filter for the sandbox, compiled by libseccomp (through ctypes) and loaded by bwrap.

Why: as root, bwrap runs without a user namespace and ``--disable-userns`` is not available, so the
code could create user namespaces of its own (measured: ``unshare(CLONE_NEWUSER)`` succeeded) and,
as "root" there, mount an unbounded tmpfs or reach kernel interfaces meant for administrators. The
filter refuses that and a few more interfaces a code sandbox has no use for (Docker's default profile
refuses them too). SysV IPC is refused as well: its segments hold memory outside every rlimit.

Optional: without libseccomp (``libseccomp2``) the sandbox runs without the filter, with a warning.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os

log = logging.getLogger(__name__)

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


def _load_libseccomp() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
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


@functools.lru_cache(maxsize=1)
def filter_program() -> bytes | None:
    """The compiled BPF program (native architecture; other ABIs are killed), or None without libseccomp."""
    lib = _load_libseccomp()
    if lib is None:
        log.warning("libseccomp not found: the sandbox runs without its seccomp filter (install libseccomp2)")
        return None
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        return None
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
            return b"".join(chunks)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
    except OSError as exc:
        log.warning("could not build the sandbox's seccomp filter (%s); running without it", exc)
        return None
    finally:
        lib.seccomp_release(ctx)


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
