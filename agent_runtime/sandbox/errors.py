"""Errors of the code sandbox."""

from __future__ import annotations


class SandboxError(RuntimeError):
    """The sandbox machinery failed (not the model's code: that is an in-band result)."""


class SandboxUnavailableError(SandboxError):
    """bubblewrap cannot run here, and the operator did not opt into running code unsandboxed."""


class SeccompUnavailableError(SandboxUnavailableError):
    """libseccomp is missing, and the operator did not accept running the sandbox without its filter."""


def unavailable_message(reason: str) -> str:
    return (
        f"cannot sandbox model-written code here: {reason} "
        "To run it without any isolation (trusted, local use only) pass unsafe_unsandboxed=True."
    )
