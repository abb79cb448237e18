"""Writes docs/cli.md from the ``tapo`` command itself, so the reference cannot drift from the code.

    python docs/gen_cli.py          # rewrite docs/cli.md
A test checks that the committed file is what this writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from tapo_cli.app import app

OUT = Path(__file__).with_name("cli.md")
ROOT = OUT.parents[1]
# The training entry points (argparse): their --help, as printed at 100 columns.
MODULES = ("training.tasks", "training.sft", "training.tapo", "training.publish", "training.eval_report")


def _commands(group, prefix: str) -> list[tuple[str, object]]:
    """Every subcommand under ``group`` (typer's click objects), depth first, in help order."""
    out = []
    ctx = group.context_class(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        out.append((f"{prefix} {name}", cmd))
        if hasattr(cmd, "list_commands"):
            out += _commands(cmd, f"{prefix} {name}")
    return out


def _param_row(p) -> str:
    if p.param_type_name == "argument":
        name = f"`{(p.metavar or p.name).upper()}`"
        kind = "argument" + ("" if p.required else ", optional")
        return f"| {name} | {kind} | {getattr(p, 'help', '') or ''} |"
    names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
    default = "" if getattr(p, "is_flag", False) and not p.default else (f"default `{p.default}`" if p.default not in (None, ()) else "")
    if p.required:
        default = "required"
    env = f"env `{p.envvar}`" if getattr(p, "envvar", None) else ""
    detail = "; ".join(x for x in (default, env) if x)
    return f"| {names} | {detail} | {(p.help or '').replace('|', '/')} |"


def render() -> str:
    root = typer.main.get_command(app)
    lines = ["# `tapo` command reference", "",
             "Generated from the command itself by `python docs/gen_cli.py`; `tapo COMMAND --help` says the same.", ""]
    for path, cmd in _commands(root, "tapo"):
        lines += [f"## `{path}`", "", (cmd.help or "").strip().split("\n\n")[0], ""]
        params = [p for p in cmd.params if p.name != "help" and not getattr(p, "hidden", False)]
        if params:
            lines += ["| parameter | default | what it does |", "|---|---|---|"]
            lines += [_param_row(p) for p in params]
            lines.append("")
    lines += ["# Training commands", ""]
    for module in MODULES:
        env = dict(os.environ, COLUMNS="100", PYTHONPATH=str(ROOT))
        text = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env, capture_output=True,
                              text=True, check=True).stdout
        lines += [f"## `python -m {module}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
