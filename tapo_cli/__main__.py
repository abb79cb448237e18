"""``python -m tapo_cli`` is the ``tapo`` command."""

from tapo_cli.app import app

app()
