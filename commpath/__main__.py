"""`python -m commpath`."""
from .cli import run

run()
