"""Network-namespace topologies for isolated experiments, and their clean-up.

``with Topology() as topo: cs = topo.client_server(port_range=(40000, 40999))`` gives two
namespaces joined by a veth, with their own sysctls, and removes them however the block ends.
See docs/netns.md.
"""

from __future__ import annotations

from conncap.netns.cleanup import CleanupPlan, carry_out, plan_cleanup, survey
from conncap.netns.iproute import Shell
from conncap.netns.layouts import ClientServer, ManyClients, Nat
from conncap.netns.naming import PREFIX, namespace_name, parse_namespace
from conncap.netns.registry import Registry, RunRecord
from conncap.netns.signals import Terminated
from conncap.netns.support import Support, check_support, userns_command
from conncap.netns.topology import Host, Lan, Topology, probe_veth

__all__ = [
    "PREFIX",
    "CleanupPlan",
    "ClientServer",
    "Host",
    "Lan",
    "ManyClients",
    "Nat",
    "Registry",
    "RunRecord",
    "Shell",
    "Support",
    "Terminated",
    "Topology",
    "carry_out",
    "check_support",
    "namespace_name",
    "parse_namespace",
    "plan_cleanup",
    "probe_veth",
    "survey",
    "userns_command",
]
