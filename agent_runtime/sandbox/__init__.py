"""Sandboxed execution of model-written Python: the ``code`` tool.

bubblewrap isolates a pool of warm worker processes (no network, read-only system, a small private
/tmp, their own PID namespace, a non-root uid each, rlimits, a seccomp filter, and a cgroup each
where cgroup v2 is writable); each call runs in a fresh fork.
"""

from agent_runtime.sandbox.errors import SandboxError, SandboxUnavailableError, SeccompUnavailableError
from agent_runtime.sandbox.limits import SandboxLimits
from agent_runtime.sandbox.pool import SandboxPool
from agent_runtime.sandbox.protections import LimitsInForce
from agent_runtime.sandbox.result import ExecResult
from agent_runtime.sandbox.tool import CodeTool, SessionCodeTool, exec_once

__all__ = [
    "CodeTool",
    "ExecResult",
    "LimitsInForce",
    "SandboxError",
    "SandboxLimits",
    "SandboxPool",
    "SandboxUnavailableError",
    "SeccompUnavailableError",
    "SessionCodeTool",
    "exec_once",
]
