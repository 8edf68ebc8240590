"""`python -m service …` is the `vitcube` command (used where the console script is not on PATH)."""

from service.cli import app

app()
