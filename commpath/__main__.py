"""`python -m commpath`."""
import sys

from .cli import main

sys.exit(main())
