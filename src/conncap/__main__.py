"""``python -m conncap``."""

from conncap.cli import main

raise SystemExit(main())
