"""`python -m vitcube …` is the `vitcube` command (where the console script is not on PATH)."""

from vitcube.cli import app

app()
