"""`python -m minicohere generate --prompt ...` and `python -m minicohere chat` (see minicohere/cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
