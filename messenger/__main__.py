"""Entry point for `python -m messenger`."""

from messenger.cli import main

raise SystemExit(main())
