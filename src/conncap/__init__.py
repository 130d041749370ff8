"""conncap: how many TCP connections can this host hold and open, and what stops it."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
