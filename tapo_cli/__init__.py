"""The ``tapo`` command: the composition root that wires ``agent_runtime``, ``server``, ``training`` and
``clients`` together. Nothing imports this package; it imports everything (see the import-linter
contracts in pyproject.toml).

- ``app``: the typer app, its global options and the small commands (``version``, ``tiny-model``, ``exec``);
  it mounts the others.
- ``options``: the options shared by ``run``, ``serve``, ``demo`` and ``eval``, and the error exit.
- ``run``: ``tapo run``, the agent loop on one question in this process.
- ``serve``: ``tapo serve`` and ``tapo demo`` (``server``, plus the page from ``clients``).
- ``eval``: ``tapo eval`` (the loop over benchmark rows, judged by ``training``).
- ``chat``: ``tapo chat``, the terminal client of a running server.
- ``tapo index`` and ``tapo search`` come from ``agent_runtime.search.commands``.
"""
