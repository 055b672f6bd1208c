"""``sschsr-predict``: super-resolve an LR HSI with an unaligned RGB reference (see CONTRACTS.md).

The argument surface is final; the network it runs arrives with the full model. Until then the command
checks its arguments and says clearly that there is no model to run (exit status 2, nothing written).
"""

from __future__ import annotations

import argparse

from sschsr.cli._common import fail


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sschsr-predict", description=__doc__.splitlines()[0])
    p.add_argument("--lr", required=True, help="LR HSI: .npy/.npz/.mat (HWC unless --layout chw), GeoTIFF, ENVI")
    p.add_argument("--ref", required=True, help="RGB reference photo: PNG/JPEG/TIFF, 8 or 16 bit")
    p.add_argument("--scale", required=True, type=int, help="scale factor (4, 8 or 16)")
    p.add_argument("--out", required=True, help="output: .npy or .tif (format from the extension)")
    p.add_argument("--ckpt", help="checkpoint or .safetensors weights (default: the shipped weights for --scale)")
    p.add_argument("--tile", type=int, help="tile size in HR pixels (bounded memory)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--layout", choices=["hwc", "chw"], default="hwc")
    p.add_argument("--save-intermediates", metavar="DIR", help="write flow.npy, ref_warp.png, ref_refined.png")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    return p


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return fail("sschsr-predict has no network to run yet: this version ships the data pipeline only "
                "(stage 1, stage 2 and the full model are not implemented)")


if __name__ == "__main__":
    raise SystemExit(main())
