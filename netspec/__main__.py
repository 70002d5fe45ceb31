"""``python -m netspec ...`` runs the CLI (netspec/cli.py)."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:     # Ctrl-C while the interpreter imports: no traceback
    print("interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
