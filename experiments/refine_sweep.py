"""Compare settings of the test-time flow refinement on synthetic pairs, by default of the CAVE training
scenes (where settings are chosen; ``--scenes`` for others): the end-point error of each candidate, per
scale and per scene.

    .venv/bin/python experiments/refine_sweep.py --ckpt src/sschsr/weights/sschsr_x4.safetensors \
        --scales 4 --pairs 2 --size 256 --variant '{"window": 2, "cells": [64, 32, 16]}' \
        --variant '{"window": 1, "cells": [128, 64, 32, 16]}' --variant '{"window": 1, "cells": [64, 32, 16]}' \
        --out experiments/results/refine_sweep_x4.json

The pairs and the network's flow are ``eval_flow.py``'s (same options; default scenes here: the data's
training scenes): the flow is predicted once per pair (self-ensembled over ``--flow-tta``, on the pair
shrunk by ``--flow-factor``), then refined by each ``--variant``, a JSON object of
:class:`~sschsr.ops.flow_refine.FlowRefiner` fields other than ``scale`` (``{}``: the defaults). Columns:
``net`` (the network's flow, unrefined), then ``v0``, ``v1``, ... in the order given, each an EPE pooled
over valid pixels; the record lists every variant's full settings. ``--start true`` starts each refinement
from the pair's true flow instead of the network's (an oracle, for diagnosis): what is left then is the error
the refinement's objective itself brings to a perfect flow. ``--start A`` (a number in [0, 1]) starts it from
the true flow plus ``A`` times the network's error (``true`` is 0, ``net`` 1): how good a flow network the
refinement needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from _common import Alignment, parse_refiner_settings, run_pair_eval, training_scenes
from eval_flow import flow_errors
from torch import Tensor

from sschsr.cli._common import exit_on_input_error
from sschsr.errors import InputError
from sschsr.ops.flow_refine import FlowRefiner


def start_weight(text: str) -> float:
    """``--start``: ``net`` (1), ``true`` (0) or a number in [0, 1], the share of the network's error kept."""
    try:
        weight = float({"net": "1", "true": "0"}.get(text, text))
    except ValueError:
        weight = float("nan")  # refused below
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"--start {text!r}: expected net, true or a number in [0, 1]")
    return weight


def measure_variants(variants: list[dict[str, Any]], start: float = 1.0, rewarm: int = 0):
    """``eval_flow``-style ``measure``: per item, the EPE of the network's flow (``net``) and of each
    variant's refinement (``v<i>``) of the true flow plus ``start`` times the network's error (1: the
    network's flow itself), per valid pixel; with ``rewarm`` updates, also the network's flow started from
    each refinement (``v<i>w``) and that flow refined again (``v<i>wr``)."""

    def measure(alignment: Alignment, batch: dict[str, Any], device: torch.device) -> list[dict[str, Tensor]]:
        rgb_hsi, ref = batch["rgb_hsi"].to(device).float(), batch["ref"].to(device).float()
        flow = alignment.flow(rgb_hsi, ref).float()
        flows = {"net": flow}
        if start == 1.0:
            flow0 = flow
        else:
            true = batch["flow"].to(device).float()
            flow0 = true + start * (flow - true)
        for i, settings in enumerate(variants):
            refiner = FlowRefiner.from_settings(alignment.scale, settings)
            flows[f"v{i}"] = refiner(flow0, rgb_hsi, ref)
            if rewarm:
                with torch.inference_mode():
                    again = alignment.flow_net(
                        rgb_hsi, ref, iters=rewarm, flow_init=flows[f"v{i}"], test_mode=True
                    )
                flows[f"v{i}w"] = again.float()
                flows[f"v{i}wr"] = refiner(flows[f"v{i}w"], rgb_hsi, ref)
        out = []
        for j, (gt, valid) in enumerate(zip(batch["flow"], batch["valid"], strict=True)):
            out.append({k: flow_errors(f[j].cpu(), gt, valid)["epe"] for k, f in flows.items()})
        return out

    return measure


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--variant", action="append", default=[])
    pre.add_argument("--start", default="net")
    pre.add_argument("--rewarm", type=int, default=0)
    known, rest = pre.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print("--variant JSON   FlowRefiner fields other than scale, repeatable (default: '{}')")
        print(
            "--start net|true|A the flow each refinement starts from: the network's (default), the true one,"
        )
        print("                 or the true one plus A (0 to 1) times the network's error")
        print(
            "--rewarm N       the flow network again, N updates from each refined flow, then refined again\n"
        )
    variants = [parse_refiner_settings(text, "--variant") for text in known.variant or ["{}"]]
    if not any(a == "--scenes" or a.startswith("--scenes=") for a in rest):
        rest += ["--scenes", *training_scenes()]
    if any(a.split("=")[0] in ("--flow-refine", "--flow-refiner") for a in rest):
        raise InputError("--flow-refine, --flow-refiner: give the refinement's settings in each --variant")
    if known.rewarm < 0:
        raise InputError(f"--rewarm {known.rewarm}: expected a number of updates >= 0")
    suffixes = ("", "w", "wr") if known.rewarm else ("",)
    names = ["net", *(f"v{i}{s}" for i in range(len(variants)) for s in suffixes)]
    columns = {k: (f"{k} EPE", "{:.3f}") for k in names}
    named = {f"v{i}": FlowRefiner.from_settings(1, v).settings() for i, v in enumerate(variants)}
    for name, settings in named.items():
        print(name, json.dumps(settings))
    measure = measure_variants(variants, start_weight(known.start), known.rewarm)
    extra = {"variants": named, "start": known.start, "rewarm": known.rewarm}
    return run_pair_eval(__doc__, "refine_sweep.json", measure, columns, "refinement", rest, extra=extra)


if __name__ == "__main__":
    main()
