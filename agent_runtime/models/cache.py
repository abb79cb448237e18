"""The project's cache of built models (``$TAPO_CACHE_DIR``, default ``~/.cache/tapo``), built once."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["cache_dir", "build_once", "source_digest"]


def cache_dir() -> Path:
    return Path(os.environ.get("TAPO_CACHE_DIR", Path.home() / ".cache" / "tapo"))


def source_digest(sources: tuple[str, ...]) -> str:
    """A short hash of ``agent_runtime`` source files (paths relative to the package): a built model
    keyed by the sources its weights depend on is never stale after an edit."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for relative in sources:
        digest.update((root / relative).read_bytes())
    return digest.hexdigest()[:12]


def build_once(target: Path, done_file: str, build: Callable[[Path], object]) -> Path:
    """``target``, built by ``build(tmp_dir)`` unless ``target / done_file`` already exists.

    Safe across processes: one builds under an exclusive lock (``target.lock`` next to it) into a
    temporary directory beside ``target`` that is renamed into place atomically; the others wait on
    the lock and then find it built. ``build`` must write ``done_file`` last.
    """
    if (target / done_file).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (target / done_file).exists():  # another process built it while we waited
                return target
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            os.chmod(tmp, 0o755)  # mkdtemp makes it private
            try:
                build(tmp)
                if not (tmp / done_file).exists():
                    raise RuntimeError(f"building {target} did not write {done_file}")
                if target.exists():  # a partial leftover without the done file
                    shutil.rmtree(target)
                os.rename(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target
