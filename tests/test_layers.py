"""The layers of ARCHITECTURE.md hold: ``tapo_cli`` (the command, the composition root) above ``server``,
``training`` and ``clients``, which never import each other, above ``agent_runtime``, which imports
none of them; ``clients`` import no project package (they speak HTTP). ``lint-imports`` checks the
contracts in pyproject.toml, imports inside functions included; the same contracts are shown to fail
on a copy of the code with one forbidden import added."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("tapo_cli", "server", "training", "clients", "agent_runtime")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    assert LINT_IMPORTS.exists(), "import-linter is in the [dev] extra"
    # --no-cache: no .import_linter_cache directory left in the checkout.
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_lint_imports_keeps_every_contract():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken", done.stdout), done.stdout


def test_the_contracts_cover_every_package_that_ships():
    """A new top-level package is packaged, copied into both images and placed in the layers, or none."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = {p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    linted = config["tool"]["importlinter"]
    assert set(linted["root_packages"]) == shipped == set(PACKAGES)
    layers = next(c["layers"] for c in linted["contracts"] if c["type"] == "layers")
    assert {p.strip() for layer in layers for p in re.split(r"[|:]", layer)} == shipped
    assert layers[0] == "tapo_cli" and layers[-1] == "agent_runtime"
    assert config["project"]["scripts"]["tapo"].startswith("tapo_cli.")
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in PACKAGES:
        assert dockerfile.count(f"COPY {package} ./{package}\n") == 2, package  # the cpu and the gpu image
    assert not (ROOT / "agent_runtime" / "cli.py").exists()


def _copy_of_the_code(tmp_path: Path) -> Path:
    """The five packages' Python files and pyproject.toml, nothing else (no weights, no data)."""
    def keep_python(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if not (n.endswith(".py") or (Path(directory) / n).is_dir()) or n == "__pycache__"]

    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=keep_python)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "source"),
    [
        # lazy, inside a function: what agent_runtime/cli.py did
        ("agent_runtime/upward.py", "def build():\n    from server.app import create_app\n    return create_app\n"),
        ("agent_runtime/upward.py", "import training.evaluate\n"),
        ("agent_runtime/upward.py", "def main():\n    from tapo_cli.app import app\n    app()\n"),
        ("agent_runtime/upward.py", "import clients.reply_view\n"),
        ("agent_runtime/upward.py", "def serve(api):\n    import uvicorn\n    uvicorn.run(api)\n"),
        ("server/sideways.py", "from training.data import load_rows\n"),
        ("training/sideways.py", "import server.app\n"),
        ("clients/downward.py", "from agent_runtime.records import write_records\n"),
    ],
    ids=["runtime-lazy-server", "runtime-training", "runtime-cli", "runtime-clients", "runtime-uvicorn",
         "server-training", "training-server", "clients-runtime"],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, source: str):
    copy = _copy_of_the_code(tmp_path)
    assert lint_imports(copy).returncode == 0  # the copy as it is keeps the contracts
    (copy / module).write_text(source)
    done = lint_imports(copy)
    assert done.returncode != 0, done.stdout
    assert "BROKEN" in done.stdout and module.removesuffix(".py").replace("/", ".") in done.stdout, done.stdout
