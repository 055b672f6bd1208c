"""The earlier stages' weights: the flow network (stage 1) and WarpNet (stage 2) saved and loaded with their
constructor arguments, and loaded into a later stage's network."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from sschsr.checkpoints.files import load_net, save_net
from sschsr.errors import InputError
from sschsr.models.flow import CONFIG_KEY as FLOW_CONFIG_KEY
from sschsr.models.flow import RAFT
from sschsr.models.warpnet import CONFIG_KEY as WARPNET_CONFIG_KEY
from sschsr.models.warpnet import WarpNet

log = logging.getLogger(__name__)

CONFIG_KEY_OF = {RAFT: FLOW_CONFIG_KEY, WarpNet: WARPNET_CONFIG_KEY}  # where each network's arguments live


def save_flow_net(net: RAFT, path: str | Path) -> Path:
    """Write a flow network's weights and constructor arguments to a ``.safetensors`` file."""
    return save_net(net, path, CONFIG_KEY_OF[type(net)])


def load_flow_net(path: str | Path, prefix: str | None = None, **overrides: Any) -> RAFT:
    """Build a :class:`RAFT` and load trained weights into it; returned in eval mode on the CPU.

    Args:
        path: a Lightning ``.ckpt`` (of :class:`sschsr.lit.flow.FlowModule` or any module holding the
            flow net) or a ``.safetensors`` file.
        prefix: the key prefix of the flow net in the state dict; default: ``net.`` when the keys
            start with it (a ``FlowModule``), else none.
        **overrides: constructor arguments of :class:`RAFT` (e.g. ``preset="base"``, ``iters=24``); they
            take precedence over those stored in the file, and are needed for files that store none.

    Raises:
        InputError: the file is missing, of an unknown kind, or its weights do not fit the network.
    """
    return load_net(
        RAFT, path, FLOW_CONFIG_KEY, "net.", prefix, overrides, what="flow", arch_hint="preset=..."
    )


def save_warpnet(net: WarpNet, path: str | Path) -> Path:
    """Write a WarpNet's weights and constructor arguments to a ``.safetensors`` file."""
    return save_net(net, path, CONFIG_KEY_OF[type(net)])


def load_warpnet(path: str | Path, prefix: str | None = None, **overrides: Any) -> WarpNet:
    """Build a :class:`WarpNet` and load trained weights into it; returned in eval mode on the CPU.

    Args:
        path: a Lightning ``.ckpt`` of :class:`sschsr.lit.warp.WarpModule` (or of any module holding the
            WarpNet) or a ``.safetensors`` file from :func:`save_warpnet`.
        prefix: the key prefix of the WarpNet in the state dict; default: ``warpnet.`` when the keys start
            with it (a ``WarpModule``), else none.
        **overrides: constructor arguments of :class:`WarpNet`; they take precedence over those stored in
            the file, and are needed for files that store none.

    Raises:
        InputError: the file is missing, of an unknown kind, or its weights do not fit the network.
    """
    return load_net(
        WarpNet,
        path,
        WARPNET_CONFIG_KEY,
        "warpnet.",
        prefix,
        overrides,
        what="WarpNet",
        arch_hint="widths=..., extra_channels=...",
    )


def load_flow_weights(flow_net: nn.Module, path: str | Path) -> nn.Module:
    """Load trained stage-1 weights into ``flow_net`` in place (through :func:`load_flow_net`).

    The architecture is ``flow_net``'s (a :class:`RAFT`); a file that holds another one is refused with
    the setting to change.

    Raises:
        InputError: missing or unreadable file, or weights of another architecture.
    """
    config = getattr(flow_net, "config", None)
    if not isinstance(config, dict):
        raise InputError(
            f"flow_ckpt={path}: loading flow weights needs a sschsr.models.flow.RAFT, not {type(flow_net).__name__}"
        )
    try:
        loaded = load_flow_net(path, **config)
    except InputError as e:
        try:  # say which architecture the file holds, when it stores one
            stored = load_flow_net(path).config
        except InputError:
            raise e from None
        diff = {k: v for k, v in stored.items() if k not in ("iters", "dropout") and config.get(k) != v}
        if not diff:  # the same architecture: the file itself is the problem
            raise e from None
        settings = " ".join(f"model.flow_net.{k}={v}" for k, v in diff.items())
        raise InputError(
            f"{path} holds a RAFT({stored}) but the config builds RAFT({config}): set {settings}"
        ) from None
    flow_net.load_state_dict(loaded.state_dict())
    return flow_net


def load_stage2(path: str | Path) -> tuple[RAFT, WarpNet]:
    """The flow network and the WarpNet of a :class:`WarpModule` checkpoint, in eval mode on the CPU.

    Example:
        >>> flow_net, warpnet = load_stage2("outputs/stage2/runs/<run>/checkpoints/last.ckpt")  # doctest: +SKIP
    """
    return load_flow_net(path, prefix="flow_net."), load_warpnet(path, prefix="warpnet.")


def load_earlier_stages(net: nn.Module, flow_ckpt: str | None = None, warp_ckpt: str | None = None) -> None:
    """Load trained stage-1 / stage-2 weights into ``net.flow_net`` / ``net.warpnet`` in place.

    ``flow_ckpt``: a :class:`sschsr.lit.flow.FlowModule` ``.ckpt`` or a flow ``.safetensors``.
    ``warp_ckpt``: a :class:`sschsr.lit.warp.WarpModule` ``.ckpt`` (its flow network is loaded too unless
    ``flow_ckpt`` is given) or a WarpNet ``.safetensors``.

    Raises:
        InputError: a missing or unreadable file, weights of another architecture, or a network without
            the part to load into.
    """
    if flow_ckpt:
        flow_net = getattr(net, "flow_net", None)
        if flow_net is None:
            raise InputError(
                f"flow_ckpt={flow_ckpt}: {type(net).__name__} has no flow network to load it into"
            )
        load_flow_weights(flow_net, flow_ckpt)
        log.info("stage-1 flow weights from %s", flow_ckpt)
    if warp_ckpt:
        warpnet = getattr(net, "warpnet", None)
        if warpnet is None:
            raise InputError(f"warp_ckpt={warp_ckpt}: {type(net).__name__} has no WarpNet to load it into")
        path = Path(warp_ckpt)
        config = getattr(warpnet, "config", None) or {}
        warpnet.load_state_dict(load_warpnet(path, **config).state_dict())
        log.info("stage-2 WarpNet weights from %s", warp_ckpt)
        flow_net = getattr(net, "flow_net", None)
        if not flow_ckpt and flow_net is not None and path.suffix != ".safetensors":
            try:
                loaded = load_flow_net(path, prefix="flow_net.", **(getattr(flow_net, "config", None) or {}))
            except InputError as e:
                if "no weights under the prefix" not in str(e):
                    raise
                log.warning("%s holds no flow network: the flow keeps its own weights", warp_ckpt)
            else:
                flow_net.load_state_dict(loaded.state_dict())
                log.info("stage-1 flow weights from %s (the flow stage 2 was trained on)", warp_ckpt)
