"""``python -m netspec ...`` runs the CLI (netspec/cli.py)."""
import sys

from .cli import main

sys.exit(main())
