"""User-facing configuration: the runtime's MPCConfig (re-exported) and the network model.

`Network` turns a report's bytes and rounds into an estimated latency (report.Report.estimate).
"""
from __future__ import annotations

import dataclasses

from pcformer.runtime.config import MPCConfig

__all__ = ["MPCConfig", "Network", "NETWORKS", "network"]


@dataclasses.dataclass(frozen=True)
class Network:
    """A symmetric full-duplex link: ``bandwidth`` in bits per second, ``rtt`` in seconds.

    Latency of a phase = rounds * rtt + max(bytes sent by P0, bytes sent by P1) * 8 / bandwidth:
    both parties send at the same time on a full-duplex link, so the busier direction bounds the
    transfer time. Every phase (setup, offline, online) uses the same formula.
    """

    bandwidth: float = 5e9
    rtt: float = 1e-3
    name: str = "custom"

    def __post_init__(self):
        if not (self.bandwidth > 0 and self.rtt >= 0):
            raise ValueError(f"need bandwidth > 0 and rtt >= 0, got {self.bandwidth}, {self.rtt}")


# lan: PUMA's evaluation setting (Dong et al., "PUMA: Secure Inference of LLaMA-7B in Five
#   Minutes", 2023): 5 Gbps, 1 ms RTT (its LAN setting).
# wan: 100 Mbps, 80 ms RTT, a common WAN setting in the private transformer inference
#   literature (e.g. BOLT, Pang et al., IEEE S&P 2024, evaluates LAN and WAN settings; these
#   exact figures were taken from the project brief and not re-verified against the paper here).
NETWORKS = {
    "lan": Network(bandwidth=5e9, rtt=1e-3, name="lan"),
    "wan": Network(bandwidth=100e6, rtt=80e-3, name="wan"),
}


def network(net) -> Network:
    """A Network from a preset name ("lan" | "wan") or a Network."""
    if isinstance(net, Network):
        return net
    if isinstance(net, str) and net in NETWORKS:
        return NETWORKS[net]
    raise ValueError(f"unknown network {net!r}: use one of {sorted(NETWORKS)} or a Network")
