"""Declared machines and PCI topologies, and the guest view they imply."""

from cocolab.topology.layout import ExpectedView, Placed, expected_view
from cocolab.topology.schema import (
    Device,
    Machine,
    Topology,
    load_machine,
    load_topology,
    machine_names,
    topology_names,
)

__all__ = [
    "Device",
    "ExpectedView",
    "Machine",
    "Placed",
    "Topology",
    "expected_view",
    "load_machine",
    "load_topology",
    "machine_names",
    "topology_names",
]
