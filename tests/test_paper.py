"""``experiment=paper``: the network as the paper and its official code build it (docs/paper.md).

The official ``FusionWarpNetHSI`` has 27.45 M parameters (DESIGN.md, "Anchor"): registration (RAFT 5.26 M
and WarpNet 0.14 M) 5.40 M, fusion (RGB encoders 1.67 M, HSI encoder 3.36 M, decoder 17.03 M) 22.06 M.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import hydra
import pytest
import torch
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import open_dict

from helpers import compose_run
from sschsr.cli.train import train
from sschsr.models.fusion import FusionBlock
from sschsr.models.sschsr import SSCHSR

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = {"total": 27.45e6, "registration": 5.26e6 + 0.14e6, "fusion": 1.67e6 + 3.36e6 + 17.03e6}
TOLERANCE = 0.02


def _experiment(module: str):
    spec = importlib.util.spec_from_file_location(module, ROOT / "experiments" / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def paper_net(*overrides: str) -> SSCHSR:
    cfg = compose_run(None, ["experiment=paper", "scale=4", *overrides])
    return hydra.utils.instantiate(cfg.model.net)


def n_params(*modules) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


def test_paper_network_is_the_official_one_within_two_percent():
    net = paper_net()
    split = {
        "total": n_params(net),
        "registration": n_params(net.flow_net, net.warpnet),
        "fusion": n_params(
            net.hsi_encoder, net.match_encoder, net.texture_encoder, net.aggregation, net.fusion
        ),
    }
    assert split["registration"] + split["fusion"] == split["total"]
    for part, official in OFFICIAL.items():
        assert abs(split[part] / official - 1) <= TOLERANCE, (part, split[part], official)
    # the parts the official code names, closer still: RAFT 5.26 M, the decoder 17.03 M
    assert abs(n_params(net.flow_net) / 5.26e6 - 1) <= 0.005
    assert abs(n_params(net.aggregation, net.fusion) / 17.03e6 - 1) <= 0.005
    # and the choices the official network makes
    assert net.matching.matching == "global" and net.head == "residual" and net.texture_input == "repair"
    assert net.preset == "paper" and net.iterative and net.iterative_guide == "concat" and net.use_rmca
    assert net.flow_net.preset == "base" and not net.freeze_flow
    assert net.warpnet.widths == (16, 32, 64) and net.warpnet.extra_channels == 0 and net.warpnet.use_ref


def test_paper_training_settings():
    cfg = compose_run(None, ["experiment=paper", "scale=8"])
    assert cfg.task_name == "paper" and cfg.scale == 8
    assert cfg.model.optimizer._target_ == "torch.optim.AdamW"
    assert cfg.model.optimizer.lr == 1e-5 and cfg.model.optimizer.weight_decay == 5e-5
    assert cfg.model.scheduler is None and cfg.trainer.gradient_clip_val is None
    assert list(cfg.data.crop_size) == [320, 512] and cfg.data.batch_size == 1
    assert cfg.data.source.size >= 512 and cfg.trainer.max_epochs == 150
    assert cfg.model.warp_weight == 1.0


@pytest.mark.parametrize("ablation", ["full", "no_warpnet", "no_iterative", "no_rmca"])
def test_ablations_compose_with_the_paper_network(ablation):
    """The ablation configs change one switch of the paper's network and nothing else."""
    cfg = compose_run(None, ["experiment=paper", f"ablation={ablation}"])
    assert cfg.variant == ablation
    net = cfg.model.net
    assert (net.matching, net.head, net.preset) == ("global", "residual", "paper")
    assert net.flow_net.preset == "base"
    assert net.use_warpnet == (ablation != "no_warpnet")
    assert net.iterative == (ablation != "no_iterative")
    assert net.use_rmca == (ablation != "no_rmca")
    if ablation == "no_rmca":
        assert net.rmca_replacement == "self_attention"


def test_no_rmca_replaces_only_the_cross_attention():
    """The paper's R-MCA ablation: the cross-attention becomes a self-attention of the same size; the FFN
    after it and every other parameter stay, and the reference still reaches the output."""
    full, ablated = paper_net(), paper_net("ablation=no_rmca")
    assert n_params(ablated) == n_params(full)
    blocks = [b for level in ablated.fusion for b in level.blocks]
    assert all(not hasattr(b, "rmca") and hasattr(b, "ref_smsa") and hasattr(b, "ffn2") for b in blocks)
    assert not ablated.concat_ref and ablated.config["rmca_replacement"] == "self_attention"


def test_fusion_block_self_attention_replacement():
    torch.manual_seed(0)
    dim, heads = 8, 2
    cross = FusionBlock(dim, heads, use_rmca=True)
    replaced = FusionBlock(dim, heads, use_rmca=False, rmca_replacement="self_attention")
    dropped = FusionBlock(dim, heads, use_rmca=False)
    assert n_params(replaced) == n_params(cross) > n_params(dropped)
    x, a = torch.randn(2, 1, dim, 6, 6)
    assert not torch.allclose(replaced(x, a), replaced(x, torch.zeros_like(a)))  # the reference counts
    with pytest.raises(ValueError, match="needs a_ref"):
        replaced(x)
    with pytest.raises(ValueError, match="rmca_replacement"):
        FusionBlock(dim, heads, rmca_replacement="nothing")


def test_self_attention_ablation_runs_and_trains_the_aggregation():
    net = SSCHSR(5, "lite", use_rmca=False, rmca_replacement="self_attention")
    assert net.fusion[0].embed.in_channels == net.cfg.dims[0]  # A_ref is not concatenated
    g = torch.Generator().manual_seed(0)
    lr_up, ref, rgb = torch.rand(1, 5, 32, 32, generator=g), *torch.rand(2, 1, 3, 32, 32, generator=g)
    net(lr_up, ref, rgb)["sr"].square().mean().backward()
    assert all(idfa.dcn.weight.grad is not None for idfa in net.aggregation)
    assert all(b.ref_smsa.qkv.weight.grad is not None for level in net.fusion for b in level.blocks)


def test_default_rmca_ablation_is_unchanged():
    """``use_rmca=False`` alone is the ablation of the earlier records: A_ref concatenated to the input."""
    net = SSCHSR(5, "lite", use_rmca=False)
    assert net.rmca_replacement == "concat" and net.concat_ref
    assert net.fusion[0].embed.in_channels == 2 * net.cfg.dims[0]


def test_make_ablations_takes_the_experiment_from_args():
    def command(*args: str) -> str:
        done = subprocess.run(
            ["make", "-n", "-o", ".venv/.installed", "ablations", "SCALE=4", "SEEDS=1", *args],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return " ".join(
            line for line in done.stdout.splitlines() if "sschsr-train" in line or "ablation=" in line
        )

    paper = command("ARGS=experiment=paper debug=tiny")
    assert "experiment=paper" in paper and "experiment=full" not in paper
    assert "experiment=full" in command()


def test_docs_tables_are_the_records(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))  # the scripts import _common from beside them
    doc = (ROOT / "docs" / "paper.md").read_text()
    for name, record in (("paper_params", "paper_params.json"), ("paper_memory", "paper_memory_cpu.json")):
        module = _experiment(name)
        data = json.loads((ROOT / "experiments" / "results" / record).read_text())
        assert module.MARKER.search(doc), f"docs/paper.md holds no {name} table"
        assert module.fill(doc, data) == doc, f"run: python experiments/{name}.py --write"


def test_params_record_is_this_network():
    record = json.loads((ROOT / "experiments" / "results" / "paper_params.json").read_text())
    net = paper_net()
    assert record["total"]["here"] == n_params(net)
    assert record["groups"]["registration"]["here"] == n_params(net.flow_net, net.warpnet)


@pytest.mark.parametrize("debug", ["fdr", "tiny"])
def test_paper_debug_runs_on_a_cpu(debug, tmp_path):
    """``sschsr-train experiment=paper scale=4 debug=fdr`` (and ``tiny``): about 10 s on 2 cores; the model
    summary's total is the paper's 27.45 M within 2 %."""
    cfg = compose_run(tmp_path, ["experiment=paper", "scale=4", f"debug={debug}", "logger=none"])
    _, objects = train(cfg)
    assert objects["record"]["status"] == "finished"
    total = ModelSummary(objects["model"]).total_parameters
    assert abs(total / OFFICIAL["total"] - 1) <= TOLERANCE


def test_earlier_stage_search_passes_over_other_architectures(tmp_path):
    """A stage-2 checkpoint of the default network does not feed the paper's, nor the other way round."""
    from sschsr.lit.runs import architecture_filter
    from sschsr.models.flow import RAFT
    from sschsr.models.warpnet import WarpNet

    def stage2_file(name: str, flow: RAFT, warpnet: WarpNet) -> str:
        path = tmp_path / name
        torch.save({"state_dict": {}, "flow_net_config": flow.config, "warpnet_config": warpnet.config}, path)
        return str(path)

    with torch.device("meta"):
        default = stage2_file("default.ckpt", RAFT("small"), WarpNet())
        paper = stage2_file("paper.ckpt", RAFT("base", iters=24), WarpNet((16, 32, 64), extra_channels=0))
    (tmp_path / "other.safetensors").touch()
    accept_paper = architecture_filter(compose_run(None, ["experiment=paper"]), "full")
    accept_full = architecture_filter(compose_run(None, ["experiment=full"]), "full")
    assert accept_paper(paper) and not accept_paper(default)  # the flow's iterations do not count
    assert accept_full(default) and not accept_full(paper)
    assert accept_paper(str(tmp_path / "other.safetensors"))  # stores nothing to compare: loading decides
    # without WarpNet only the flow network counts; stage 2 looks at stage 1's flow network
    no_warpnet = architecture_filter(compose_run(None, ["experiment=paper", "ablation=no_warpnet"]), "full")
    mixed = stage2_file("mixed.ckpt", RAFT("base"), WarpNet())
    assert no_warpnet(mixed) and not accept_paper(mixed)
    stage2 = compose_run(None, ["experiment=stage2", "model.flow_net.preset=base"])
    assert architecture_filter(stage2, "stage2")(mixed) and not architecture_filter(stage2, "stage2")(default)


def test_paper_chain_builds_on_its_own_stages_beside_the_default_ones(tmp_path):
    """Default stage-1/2 runs and the paper's in one log directory: each network takes its own."""
    paper_stages = {
        "stage1": ["model.net.preset=base"],
        "stage2": [
            "model.flow_net.preset=base",
            "model.warpnet.widths=[16,32,64]",
            "model.warpnet.extra_channels=0",
        ],
    }
    runs = {}
    for name, extra in (("stage1", []), ("stage2", []), *paper_stages.items()):
        cfg = compose_run(
            tmp_path / f"{name}_{len(runs)}", [f"experiment={name}", "debug=tiny", "logger=none", *extra]
        )
        with open_dict(cfg):
            cfg.paths.log_dir = str(tmp_path)
        runs[f"{name}_{len(runs)}"] = train(cfg)[1]["record"]
    assert runs["stage2_3"]["parents"]["flow_ckpt"].startswith(str(tmp_path / "stage1_2"))
    for experiment, stage2 in (("paper", "stage2_3"), ("full", "stage2_1")):
        cfg = compose_run(tmp_path / experiment, [f"experiment={experiment}", "debug=tiny", "logger=none"])
        with open_dict(cfg):
            cfg.paths.log_dir = str(tmp_path)
        record = train(cfg)[1]["record"]
        assert record["parents"]["warp_ckpt"].startswith(str(tmp_path / stage2)), experiment
