"""A full model with another flow network: the SR branch and WarpNet of one file, the flow network of another.

    .venv/bin/python experiments/swap_flow.py --model shipped --scale 4 \
        --flow outputs/s27/flowft_x4/checkpoints/last.ckpt --out outputs/s27/candidate/sschsr_x4.safetensors

To score a newly trained flow network inside a trained model without retraining the rest (``eval_sr.py
--model NAME=OUT``): ``--model`` is a full model (``shipped``, a ``.safetensors`` or a full-model ``.ckpt``),
``--flow`` any file :func:`sschsr.checkpoints.load_flow_net` reads (a stage-1 ``.ckpt``, a flow
``.safetensors``), loaded as ``model.flow_ckpt`` loads it in training
(:func:`sschsr.checkpoints.load_earlier_stages`): it must be built as the model's (same preset and widths; the
number of updates stays the model's). ``export_weights.py --flow-ckpt`` does the same from a training
checkpoint into the package. ``--out`` gets the model in float32 (``--half``: float16, as shipped) with
the flow network and WarpNet in part files beside it, as ``export_weights.py`` writes them; the metadata
names both sources.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sschsr.checkpoints import WEIGHTS_DIR, load_earlier_stages, load_model, save_model
from sschsr.cli._common import InputError, exit_on_input_error


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="'shipped', a full-model .safetensors or .ckpt")
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--flow", required=True, help="the flow network's file (.ckpt or .safetensors)")
    p.add_argument("--out", required=True, help=".safetensors to write")
    p.add_argument("--half", action="store_true", help="store float16 (as shipped); default float32")
    return p.parse_args(argv)


@exit_on_input_error
def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    if Path(args.out).resolve().parent == WEIGHTS_DIR.resolve():
        raise InputError(
            f"--out {args.out}: the package's weights are written by export_weights.py --flow-ckpt (it checks them)"
        )
    model = load_model(None if args.model == "shipped" else args.model, args.scale)
    load_earlier_stages(model, flow_ckpt=args.flow)  # as model.flow_ckpt loads it in training
    out = save_model(
        model,
        args.out,
        args.scale,
        model.info["camera"],
        dtype=torch.float16 if args.half else torch.float32,
        metadata={"source": str(model.info["path"]), "flow_source": str(args.flow)},
        parts=("flow_net", "warpnet"),
    )
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
