"""Helpers shared by test modules (imported as ``helpers``: pytest puts ``tests/`` on the path)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from sschsr.cli._common import CONF_DIR


def quiet_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    """A CPU trainer that logs, checkpoints and prints nothing, rooted in ``tmp_path``; ``kwargs`` add to
    or override that."""
    return L.Trainer(
        **{
            "accelerator": "cpu",
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": tmp_path,
            **kwargs,
        }
    )


def compose_run(tmp_path: Path | None, overrides: list[str], name: str = "train") -> DictConfig:
    """The config ``sschsr-train`` (or ``name``) would run with ``overrides``. With ``tmp_path``: the Hydra
    part included, the run folder set to ``tmp_path`` and registered as the current run (what
    ``@hydra.main`` does); None: the job config alone."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=tmp_path is not None)
    if tmp_path is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
            cfg.paths.log_dir = str(tmp_path)
            cfg.hydra.runtime.output_dir = str(tmp_path)
            cfg.hydra.job.num = 0
        HydraConfig().set_config(cfg)
    return cfg


def check_flow_hook_in_eval_only(attr: str, hook, generator) -> None:
    """Set ``hook`` (a test-time step of :meth:`SSCHSR.estimate_flow` that adds 1 to the flow, e.g.
    ``flow_refiner`` or ``coarse_flow``) as ``attr`` of a small SSCHSR with a flow network: in evaluation mode
    ``estimate_flow`` gives the flow network's flow plus 1; in training mode it is computed too (the hook
    records its calls, which the caller checks)."""
    import torch

    from sschsr.models.flow import RAFT
    from sschsr.models.sschsr import SSCHSR

    net = SSCHSR(4, flow_net=RAFT("small"))
    setattr(net, attr, hook)
    rgb, ref = torch.rand(2, 1, 3, 32, 32, generator=generator)
    net.eval()
    with torch.no_grad():
        plain = net.flow_net(rgb, ref, iters=net.flow_iters, test_mode=True)
        assert torch.allclose(net.estimate_flow(rgb, ref), plain + 1)
    net.train()
    with torch.no_grad():
        net.estimate_flow(rgb, ref)


def randomise_zero_parameters(module: torch.nn.Module, std: float) -> torch.nn.Module:
    """Draw ``module``'s all-zero parameters (the output layers initialised to zero) from N(0, std), as
    after training, so that every weight matters; in place, in parameter order (seed before calling)."""
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.normal_(0.0, std)
    return module
