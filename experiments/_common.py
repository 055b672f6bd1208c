"""What the evaluation scripts of ``experiments/`` share: provenance of a result, the CAVE evaluation data
(made by the datamodule, exactly as training and ``sschsr-eval`` make it), loading the alignment stages of
any checkpoint, pooled means per scene, and rich tables.

Not a script: ``eval_flow.py``, ``eval_warp.py`` and ``eval_sr.py`` import it (they put ``experiments/``
on ``sys.path`` by being run from it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sschsr.checkpoints import load_alignment_stages
from sschsr.cli._common import add_flow_factor_option, add_flow_refine_option, add_tta_option
from sschsr.data.io import write_json
from sschsr.data.spectral import render_rgb
from sschsr.errors import InputError
from sschsr.inference import resolve_device
from sschsr.models.ensemble import dihedral_flow
from sschsr.ops.coarse_flow import coarse_flow
from sschsr.ops.degrade import content_shift, degrade, upsample
from sschsr.ops.flow_refine import checked_settings, refiner_for, refiner_settings
from sschsr.ops.warp import move_content
from sschsr.provenance import commit_label

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"  # conf/paths: ../shared/data, relative to the repository


# ------------------------------------------------------------------------------------------ provenance


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model (with the number of logical cores)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {model} ({os.cpu_count()} logical cores)"


def provenance(device: torch.device) -> dict[str, Any]:
    """``command``, ``commit`` (``-dirty`` with local changes), ``device``, ``date``, ``torch`` of this run."""
    return {
        "command": shlex.join(["python", *sys.argv]),
        "commit": commit_label(),
        "device": device_name(device),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
    }


def write_result(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON (atomically, folders made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
    return path


# ------------------------------------------------------------------------------------------------ data


def data_config(scale: int, data: str = "cave", overrides: Sequence[str] = ()):
    """The composed ``sschsr-eval`` config for ``data`` at ``scale``: ``cfg.data`` builds the datamodule.

    Loading stays in this process (no DataLoader workers); the shared data folder is the repository's
    ``../shared/data`` unless ``SSCHSR_SHARED_DATA`` says otherwise.
    """
    from sschsr.cli.train import compose

    base = [f"data={data}", f"scale={scale}", "data.num_workers=0"]
    if "SSCHSR_SHARED_DATA" not in os.environ:
        base.append(f"paths.shared_data={SHARED_DATA}")
    return compose([*base, *overrides], config_name="eval")


def test_batches(scale: int, data: str = "cave", overrides: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
    """The batches of the test split of ``data`` at ``scale`` (``HSIDataModule.test_dataloader``)."""
    import hydra

    datamodule = hydra.utils.instantiate(data_config(scale, data, overrides).data)
    datamodule.setup("test")
    yield from datamodule.test_dataloader()


def scene_batches(scale: int, scenes: Sequence[str], data: str = "cave") -> list[dict[str, Any]]:
    """One whole-scene evaluation batch per named scene of ``data`` (as the test split is served), in the
    data config's order."""
    overrides = ["data.eval_batch_size=1", "data.lists.val=null", f"data.lists.test=[{','.join(scenes)}]"]
    return list(test_batches(scale, data, overrides))


def shift_lr_side(batch: dict[str, Any], scale: int, shift: float) -> dict[str, Any]:
    """``batch`` with ``lr_up`` and ``rgb_hsi`` made again from ``hr`` moved by ``shift`` px (x and y), with
    the paper's degradation (:func:`sschsr.ops.degrade.degrade`) and the batch's camera response; ``hr``
    and ``ref`` are kept. ``shift`` 0 returns ``batch`` itself."""
    if shift == 0:
        return batch
    lr_up = upsample(degrade(move_content(batch["hr"].float(), shift, shift), scale), scale)
    return {**batch, "lr_up": lr_up, "rgb_hsi": render_rgb(lr_up, batch["srf"], batch["ref"].float())}


def held_out_scenes(data: str = "cave") -> list[str]:
    """The data config's validation and test scenes (``data.lists``), validation first."""
    lists = data_config(4, data).data.lists
    return [*lists.val, *lists.test]


def training_scenes(data: str = "cave") -> list[str]:
    """The scenes the data config trains on (:meth:`sschsr.data.datamodules.HSIDataModule.split`)."""
    import hydra

    return hydra.utils.instantiate(data_config(4, data).data).split()["train"]


def parse_refiner_settings(text: str, option: str, exclude: Sequence[str] = ("scale",)) -> dict[str, Any]:
    """A JSON object of :class:`FlowRefiner` fields other than ``exclude`` (``option``'s value, e.g.
    ``'{"window": [1, 4]}'``) -> settings for :meth:`FlowRefiner.from_settings`; bad JSON, an excluded or
    unknown field and bad values raise InputError naming ``option``."""
    try:
        return checked_settings(json.loads(text), exclude)  # bad JSON raises a ValueError too
    except ValueError as e:
        raise InputError(f"{option} {text!r}: {e}") from None


def pair_overrides(args: argparse.Namespace) -> list[str]:
    """Datamodule overrides that make the alignment pairs of :func:`alignment_parser`'s arguments: every
    scene of ``--scenes`` in the test split, ``--pairs`` synthetic views each (seeded by the data's
    ``view_seed``, scene and view: the same on every machine), central ``--size`` crops."""
    out = [
        "data.lists.val=null",
        f"data.lists.test=[{','.join(args.scenes)}]",
        f"data.eval_pairs_per_scene={args.pairs}",
        f"data.eval_crop_size={args.size}",
        f"data.eval_batch_size={args.batch_size}",
    ]
    if args.flow_range:
        lo, hi = args.flow_range
        out.append(f"+data.synth.geometry.flow_range=[{lo},{hi}]")
    return [*out, *args.override]


def add_lr_shift_option(p: argparse.ArgumentParser) -> None:
    """``--lr-shift D`` (:func:`shift_lr_side`), for ``eval_sr.py``, ``eval_flow.py`` and ``eval_warp.py``."""
    p.add_argument(
        "--lr-shift",
        type=float,
        default=0.0,
        metavar="D",
        help="make the LR side from the scene moved by D px in x and y, as LR data degraded with the blur "
        "centred D px elsewhere look (a centred Gaussian: 0.5; OpenCV's filter2D with the even kernel: 1); "
        "default 0",
    )


def add_flow_refiner_option(p: argparse.ArgumentParser) -> None:
    """``--flow-refiner JSON``, the flow refinement's settings other than its steps (read with
    :func:`parse_refiner_settings`), for ``eval_sr.py``, ``eval_flow.py`` and ``eval_warp.py``."""
    p.add_argument(
        "--flow-refiner",
        default="{}",
        metavar="JSON",
        help="the refinement's other settings, FlowRefiner fields but scale and iters "
        "(e.g. '{\"window\": 2}', the default up to fc17515); default: its defaults",
    )


def refiner_option(args: argparse.Namespace) -> dict[str, Any]:
    """The settings of :func:`add_flow_refiner_option`'s ``--flow-refiner`` (InputError when bad)."""
    return parse_refiner_settings(args.flow_refiner, "--flow-refiner", exclude=("scale", "iters"))


def alignment_parser(doc: str, default_out: str) -> argparse.ArgumentParser:
    """The options of ``eval_flow.py`` and ``eval_warp.py``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--ckpt", required=True, help="FlowModule / WarpModule / SRModule .ckpt, or a .safetensors"
    )
    p.add_argument("--scales", type=int, nargs="+", default=[4, 8], help="LR degradations to evaluate")
    p.add_argument("--scenes", nargs="+", default=None, help="default: the data's validation + test scenes")
    p.add_argument("--pairs", type=int, default=4, help="synthetic views per scene")
    p.add_argument(
        "--size", type=int, default=512, help="central crop in HR pixels (a multiple of each scale)"
    )
    p.add_argument(
        "--flow-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="target mean |flow| in px of the views (default: the data config's, 5-12)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override of the data config, repeatable; e.g. pairs with no camera motion (a "
        "homography and an elastic field only): --override +data.synth.geometry.camera=false",
    )
    add_lr_shift_option(p)
    p.add_argument("--iters", type=int, default=None, help="flow updates (default: the checkpoint's)")
    add_tta_option(
        p,
        "flow self-ensemble over this many flips/transpositions (the flow of sschsr-predict --tta; "
        "1: the network alone)",
        flag="--flow-tta",
    )
    add_flow_factor_option(p, default=1)
    add_flow_refine_option(p, default=0)
    add_flow_refiner_option(p)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--data", default="cave", help="data config (conf/data)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--out", default=str(RESULTS / default_out))
    return p


def pair_settings(args: argparse.Namespace, alignment: Alignment) -> dict[str, Any]:
    """What a result of ``eval_flow.py`` / ``eval_warp.py`` was measured on, for its JSON."""
    return {
        "ckpt": args.ckpt, "kind": alignment.kind, "flow_iters": alignment.iters,
        "flow_tta": alignment.tta, "flow_factor": alignment.factor, "flow_refine": alignment.refine,
        "flow_refiner": refiner_settings(alignment.refine, alignment.refiner),
        "data": args.data,
        "scenes": args.scenes, "pairs_per_scene": args.pairs, "size": args.size,
        "flow_range": args.flow_range or "data config", "overrides": args.override,
        "lr_shift": args.lr_shift,
        "view_seed": int(data_config(4, args.data).data.view_seed),
    }  # fmt: skip


def scene_of(label: str) -> str:
    """``balloons#2`` (scene, view) -> ``balloons``."""
    return label.split("#", 1)[0]


# ----------------------------------------------------------------------------------- alignment stages


@dataclass
class Alignment:
    """The alignment stages of a checkpoint: the flow network, WarpNet (None for stage 1) and the
    number of flow updates; ``kind`` is ``stage1``, ``stage2`` or ``full``. The flow is self-ensembled
    over ``tta`` flips/transpositions, ``shift`` being the pairs' :func:`~sschsr.ops.degrade.content_shift`
    (set per scale by :func:`run_pair_eval`), each pass on the pair shrunk by ``factor``
    (:func:`~sschsr.ops.coarse_flow.coarse_flow`)."""

    flow_net: nn.Module
    warpnet: nn.Module | None
    iters: int
    kind: str
    tta: int = 1
    shift: float = 0.0
    refine: int = 0
    scale: int = 1
    factor: int = 1
    refiner: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device) -> Alignment:
        for net in (self.flow_net, self.warpnet):
            if net is not None:
                net.to(device).eval()
        return self

    @torch.inference_mode()
    def flow(self, rgb_hsi: Tensor, ref: Tensor) -> Tensor:
        """``(B, 2, H, W)`` flow from the HSI's grid to ``ref`` (stage 1), refined by ``refine`` steps of
        :class:`~sschsr.ops.flow_refine.FlowRefiner` at ``scale`` after the self-ensemble."""

        def flow_fn(a: Tensor, b: Tensor) -> Tensor:
            return self.flow_net(a, b, iters=self.iters, test_mode=True)

        flow = dihedral_flow(
            lambda a, b: coarse_flow(flow_fn, a, b, self.factor, self.shift),
            rgb_hsi,
            ref,
            self.tta,
            self.shift,
        )
        refiner = refiner_for(self.scale, self.refine, self.refiner)
        return refiner(flow, rgb_hsi, ref) if refiner else flow

    @torch.inference_mode()
    def align(self, rgb_hsi: Tensor, ref: Tensor) -> dict[str, Tensor]:
        """Both stages as stage 2 trains and validates them (:meth:`sschsr.lit.warp.WarpModule.align`):
        ``flow``, ``ref_warp0`` (plain backward warp), ``ref_warp`` (WarpNet's repair)."""
        from sschsr.lit.warp import WarpModule

        if self.warpnet is None:
            raise InputError(f"a {self.kind} checkpoint holds no WarpNet: pass a stage-2 or full checkpoint")
        module = WarpModule(self.warpnet, self.flow_net, flow_iters=self.iters).eval()
        return module.align(rgb_hsi, ref, flow=self.flow(rgb_hsi, ref))


def load_alignment(path: str | Path, iters: int | None = None) -> Alignment:
    """The alignment stages of any checkpoint that holds them (:func:`sschsr.checkpoints.load_alignment_stages`),
    ready to run."""
    stages = load_alignment_stages(path, iters)
    return Alignment(stages.flow_net, stages.warpnet, stages.iters, stages.kind)


# ---------------------------------------------------------------------------------------- aggregation


class Pooled:
    """Means of values pooled per scene and over everything: each element added counts once (a valid
    pixel for flow errors, a pair for PSNRs)."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, scene: str, values: dict[str, Tensor]) -> None:
        """``values``: tensors of one shape (the elements of this scene to pool)."""
        n = next(iter(values.values())).numel()
        for group in (scene, "all"):
            self.counts[group] += n
            for k, v in values.items():
                self.sums[group][k] += float(v.double().sum())

    def summary(self) -> dict[str, Any]:
        """``{"all": {key: mean, ..., "count": n}, "scenes": {scene: {...}}}``."""

        def means(group: str) -> dict[str, float]:
            n = self.counts[group]
            return {**{k: s / n if n else float("nan") for k, s in self.sums[group].items()}, "count": n}

        return {"all": means("all"), "scenes": {s: means(s) for s in sorted(self.counts) if s != "all"}}


def run_pair_eval(
    doc: str,
    default_out: str,
    measure: Callable[[Alignment, dict[str, Any], torch.device], list[dict[str, Tensor]]],
    columns: dict[str, tuple[str, str]],
    title: str,
    argv: Sequence[str] | None = None,
    needs_warpnet: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The main of ``eval_flow.py`` / ``eval_warp.py``: parse :func:`alignment_parser`'s options, load the
    checkpoint, make the pairs of each scale, pool ``measure``'s values per scene (one dict per item of a
    batch), write the JSON record (with ``extra``'s entries) and print the table."""
    args = alignment_parser(doc, default_out).parse_args(argv)
    refiner = refiner_option(args)
    args.scenes = args.scenes or held_out_scenes(args.data)
    device = resolve_device(args.device)
    alignment = load_alignment(args.ckpt, args.iters).to(device)
    alignment.tta, alignment.refine, alignment.factor = args.flow_tta, args.flow_refine, args.flow_factor
    alignment.refiner = refiner
    if needs_warpnet and alignment.warpnet is None:
        raise InputError(
            f"{args.ckpt}: a {alignment.kind} checkpoint holds no WarpNet: pass a stage-2 or full one"
        )
    results = {}
    for scale in args.scales:
        alignment.shift, alignment.scale = content_shift(scale), scale
        pooled = Pooled()
        for batch in test_batches(scale, args.data, pair_overrides(args)):
            batch = shift_lr_side(batch, scale, args.lr_shift)
            for label, values in zip(batch["name"], measure(alignment, batch, device), strict=True):
                pooled.add(scene_of(label), values)
        results[str(scale)] = pooled.summary()
    record = {
        **provenance(device),
        "settings": pair_settings(args, alignment),
        **(extra or {}),
        "scales": results,
    }
    out = write_result(args.out, record)
    print_by_scale(
        f"{title}: {args.ckpt} ({alignment.kind}, {alignment.iters} flow updates)", results, columns
    )
    print(f"wrote {out}")
    return record


def print_table(
    title: str,
    columns: dict[str, tuple[str, str]],
    rows: list[tuple[list[str], dict[str, float]]],
    labels: Sequence[str],
) -> None:
    """A rich table: ``labels`` columns of text, then ``columns`` ``{key: (heading, format)}`` of each row's
    values (``rows``: ``(label values, {key: value})``)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for label in labels:
        table.add_column(label)
    for heading, _ in columns.values():
        table.add_column(heading, justify="right")
    for texts, values in rows:
        table.add_row(*texts, *(fmt.format(values[k]) for k, (_, fmt) in columns.items()))
    Console().print(table)


def print_by_scale(
    title: str, results: dict[str, dict[str, Any]], columns: dict[str, tuple[str, str]]
) -> None:
    """One table of :meth:`Pooled.summary` results keyed by scale: per scene, then the pooled mean."""
    rows = []
    for scale, summary in results.items():
        rows += [([f"x{scale}", name], v) for name, v in summary["scenes"].items()]
        rows.append(([f"x{scale}", "[bold]all[/bold]"], summary["all"]))
    print_table(title, columns, rows, labels=("scale", "scene"))


def fill_doc(doc: Path, marker: Any, fill: Callable[[str], str]) -> None:
    """Write ``fill(text)`` over ``doc``'s text, whose generated table ``marker`` (a compiled pattern of the
    ``<!-- table:... -->`` block) must find; exits with a message when the doc holds no such block."""
    text = doc.read_text()
    if not marker.search(text):
        raise SystemExit(f"{doc} holds no generated table {marker.pattern!r}")
    doc.write_text(fill(text))
    print(f"filled {doc.relative_to(ROOT)}", file=sys.stderr)
