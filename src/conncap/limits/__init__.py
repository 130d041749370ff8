"""Read this host's connection limits: one reader module per OS, one shared type.

``read_limits()`` picks the reader for this OS once (psutil's ``_pslinux``/``_psosx``/
``_pswindows`` shape). Every reader takes injectable sources so tests feed recorded output.
"""

from __future__ import annotations

from conncap.limits._common import Fact, HostLimits, PortRange, SockStat

__all__ = ["Fact", "HostLimits", "PortRange", "SockStat", "read_limits"]


def read_limits() -> HostLimits:
    """Read the limits of the host this process runs on."""
    import sys

    if sys.platform.startswith("linux"):
        from conncap.limits import _linux

        return _linux.read()
    if sys.platform == "darwin":
        from conncap.limits import _macos

        return _macos.read()
    if sys.platform == "win32":
        from conncap.limits import _windows

        return _windows.read()
    return HostLimits(os=sys.platform)
