"""idx commands (see idx/cli.py)."""
from idx.cli import cli, emit, json_option  # noqa: F401
