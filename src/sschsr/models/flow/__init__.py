"""Stage 1 of SSC-HSR: a RAFT-style flow network.

    >>> from sschsr.checkpoints import load_flow_net
    >>> net = load_flow_net("outputs/stage1/runs/<run>/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> flow = net(rgb_hsi, ref, iters=12, test_mode=True)  # doctest: +SKIP

Trained weights are saved and loaded by :mod:`sschsr.checkpoints` (``save_flow_net``, ``load_flow_net``),
with the network's constructor arguments under :data:`CONFIG_KEY`, so the preset need not be repeated.
"""

from __future__ import annotations

from sschsr.models.flow.raft import PRESETS, RAFT, RAFTConfig, count_parameters

__all__ = ["CONFIG_KEY", "PRESETS", "RAFT", "RAFTConfig", "count_parameters"]

CONFIG_KEY = "flow_net_config"  # where the constructor arguments live in a .ckpt and .safetensors metadata
