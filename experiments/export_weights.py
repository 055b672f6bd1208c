"""Export a trained full-model checkpoint as the package's shipped weights (one float16 .safetensors).

    .venv/bin/python experiments/export_weights.py --ckpt outputs/full/runs/<run>/checkpoints/last.ckpt \
        --scale 4 --out src/sschsr/weights/sschsr_x4.safetensors

The checkpoint is an ``SRModule`` ``.ckpt`` of ``sschsr-train experiment=full`` (flow network, WarpNet and
SR branch). The network goes into ``--out``, floating-point tensors in float16, with its architecture spec,
scale, band count and camera in the file's metadata (``sschsr_model``): the file rebuilds it without Hydra
(:func:`sschsr.checkpoints.load_model`, which upcasts to float32). The children named by ``--parts``
(default: ``flow_net warpnet``) go into files of their own beside it, named by their content
(``flow_net-<sha256[:12]>.safetensors``): models that share a part (a flow network used at two scales)
share its file, every file stays small, and part files no shipped model names any more are removed.

Before writing, the float16 network is checked against the float32 one on a seeded scene-like input (mean
absolute difference of ``sr`` at most 1e-3; mean and largest difference reported). Files written into the package's weights folder must be named
``sschsr_x{scale}.safetensors``, hold a 31-band model, and keep all shipped weights together within
25 MB. A record goes to ``experiments/results/weights_x{scale}.json`` (source checkpoint, its SHA-256 and
training step, the command, commit, device, date, file size, parameters, the float16 check).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SHIPPED_BANDS = 31  # the shipped models are trained on natural 31-band scenes (CONTRACTS.md)
SHIPPED_BUDGET_MB = 25.0  # all shipped weights together
SHIPPED_FILE_MB = 5.0  # each file in the package's weights folder
CHECK_SIZE = 64  # HR pixels of the float16 check's random input
CHECK_TOLERANCE = 1e-3  # largest mean |sr_fp16 - sr_fp32| accepted (data in [0, 1])


def commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def training_state(ckpt: Path) -> dict:
    """Step, epoch and the best validation score Lightning recorded in the checkpoint (where present)."""
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = {"global_step": raw.get("global_step"), "epoch": raw.get("epoch")}
    for key, value in (raw.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(value, dict):
            score = value.get("best_model_score")
            state["best_score"] = None if score is None else float(score)
            state["monitor"] = value.get("monitor")
            break
    return state


def check_input(n_bands: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A seeded scene-like input: a smooth random cube, its 3-band rendering, and that shifted as the
    reference (pure noise would flip the discrete matching decisions at a few pixels, which says nothing
    about the storage precision)."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, n_bands, CHECK_SIZE // 8, CHECK_SIZE // 8, generator=g)
    lr_up = torch.nn.functional.interpolate(coarse, size=(CHECK_SIZE, CHECK_SIZE), mode="bicubic").clamp(0, 1)
    idx = torch.linspace(0.8 * (n_bands - 1), 0.2 * (n_bands - 1), 3).round().long()
    rgb = lr_up[:, idx]
    return lr_up, torch.roll(rgb, (2, 3), (2, 3)), rgb


def fp16_check(net32: torch.nn.Module, path: Path, scale: int) -> dict[str, float]:
    """How far the exported file's ``sr`` is from ``net32``'s on :func:`check_input`."""
    from sschsr.checkpoints import load_model

    net16 = load_model(path, scale=scale)
    x = check_input(int(getattr(net32, "n_bands", None) or SHIPPED_BANDS))
    with torch.inference_mode():
        d = (net32(*x)["sr"] - net16(*x)["sr"]).abs()
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean())}


def referenced_parts(model_file: Path) -> set[str]:
    """The part files a model file names (see ``sschsr.checkpoints.save_model``'s ``parts``)."""
    from safetensors import safe_open

    from sschsr.checkpoints import MODEL_KEY

    with safe_open(str(model_file), framework="pt") as f:
        info = json.loads((f.metadata() or {}).get(MODEL_KEY, "{}"))
    return {entry["file"] for entry in (info.get("parts") or {}).values()}


def shipped_files(weights_dir: Path, replacing: Path, new: Path) -> dict[str, int]:
    """Name -> size of the files the weights folder will hold once ``new`` replaces ``replacing``: the
    model files and the parts they name."""
    models = {p.name: p for p in weights_dir.glob("sschsr_x*.safetensors")}
    models[replacing.name] = new
    names = {name: path for name, path in models.items()}
    for path in models.values():
        names.update({part: weights_dir / part for part in referenced_parts(path)})
    return {name: path.stat().st_size for name, path in names.items()}


def remove_orphans(weights_dir: Path) -> list[str]:
    """Delete part files that no model file in ``weights_dir`` names; returns their names."""
    used = set().union(*(referenced_parts(p) for p in weights_dir.glob("sschsr_x*.safetensors")))
    orphans = [p for p in weights_dir.glob("*-*.safetensors") if p.name not in used]
    for p in orphans:
        p.unlink()
    return sorted(p.name for p in orphans)


def main(argv: list[str] | None = None) -> int:
    from sschsr.checkpoints import WEIGHTS_DIR, export_weights, load_earlier_stages, read_training_checkpoint
    from sschsr.errors import InputError

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, type=Path, help="SRModule .ckpt of sschsr-train experiment=full")
    p.add_argument("--scale", required=True, type=int, help="the scale it was trained for (4, 8 or 16)")
    p.add_argument("--out", required=True, type=Path, help="e.g. src/sschsr/weights/sschsr_x4.safetensors")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument(
        "--parts", nargs="*", default=["flow_net", "warpnet"], help="children stored in files of their own"
    )
    p.add_argument(
        "--record", type=Path, help="record JSON (default: experiments/results/weights_x{scale}.json)"
    )
    p.add_argument(
        "--flow-ckpt",
        type=Path,
        help="stage-1 weights (.ckpt / .safetensors) that replace the checkpoint's frozen flow network",
    )
    args = p.parse_args(argv)

    out = args.out.resolve()
    shipped = out.parent == WEIGHTS_DIR.resolve()
    try:
        if out.suffix != ".safetensors":
            raise InputError(f"--out {args.out}: expected a .safetensors file")
        if shipped and out.name != f"sschsr_x{args.scale}.safetensors":
            raise InputError(
                f"--out {args.out}: shipped weights for x{args.scale} must be named sschsr_x{args.scale}.safetensors"
            )
        net32, info = read_training_checkpoint(args.ckpt)
        if args.flow_ckpt is not None:
            load_earlier_stages(net32, str(args.flow_ckpt))
        if shipped and info.get("n_bands") != SHIPPED_BANDS:
            raise InputError(
                f"{args.ckpt}: a {info.get('n_bands')}-band model; the shipped weights take {SHIPPED_BANDS} bands"
            )
        tmp = out.with_name(f".{out.name}.export.safetensors")
        try:
            parts = [p for p in args.parts if getattr(net32, p, None) is not None]
            export_weights(
                args.ckpt,
                tmp,
                scale=args.scale,
                dtype=getattr(torch, args.dtype),
                parts=parts,
                flow_ckpt=args.flow_ckpt,
            )
            files = {
                tmp.name: tmp.stat().st_size,
                **{f: (out.parent / f).stat().st_size for f in referenced_parts(tmp)},
            }
            size = sum(files.values())
            if shipped:
                sizes = shipped_files(out.parent, out, tmp)
                if (total := sum(sizes.values()) / 1e6) > SHIPPED_BUDGET_MB:
                    raise InputError(
                        f"shipped weights would take {total:.1f} MB, over the {SHIPPED_BUDGET_MB:g} MB budget"
                    )
                if big := [f"{n} ({b / 1e6:.2f} MB)" for n, b in files.items() if b > SHIPPED_FILE_MB * 1e6]:
                    raise InputError(
                        f"over {SHIPPED_FILE_MB:g} MB a file: {', '.join(big)}; pass more --parts"
                    )
            check = fp16_check(net32, tmp, args.scale)
            if not check["mean_abs_diff"] <= CHECK_TOLERANCE:
                raise InputError(
                    f"the {args.dtype} network's sr differs from the checkpoint's by {check['mean_abs_diff']:.3g} "
                    f"on average (> {CHECK_TOLERANCE})"
                )
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
            if shipped:
                removed = remove_orphans(out.parent)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    record = {
        "what": "exported weights",
        "out": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
        "size_bytes": size,
        "size_mb": round(size / 1e6, 3),
        "sha256": sha256(out),
        "files": {(out.name if n == tmp.name else n): b for n, b in files.items()},
        "dtype": args.dtype,
        "scale": args.scale,
        "n_bands": info.get("n_bands"),
        "camera": info.get("camera"),
        "parameters": sum(t.numel() for t in net32.state_dict().values()),
        "net": info["net"],
        "source_ckpt": str(args.ckpt),
        "source_sha256": sha256(args.ckpt),
        "training": training_state(args.ckpt),
        **(
            {}
            if args.flow_ckpt is None
            else {
                "flow_ckpt": str(args.flow_ckpt),
                "flow_sha256": sha256(args.flow_ckpt),
                "flow_training": training_state(args.flow_ckpt) if args.flow_ckpt.suffix == ".ckpt" else None,
            }
        ),
        "check": {
            "input": f"check_input({info.get('n_bands')}): smooth seeded {CHECK_SIZE}x{CHECK_SIZE} scene",
            **check,
        },
        "command": shlex.join([Path(sys.executable).name, *sys.argv])
        if argv is None
        else shlex.join(["export_weights.py", *argv]),
        "commit": commit(),
        "device": f"cpu ({platform.processor() or platform.machine()})",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path = args.record or RESULTS / f"weights_x{args.scale}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    print(
        f"wrote {out} and its parts ({size / 1e6:.2f} MB in {len(files)} files, {args.dtype}; sr vs the "
        f"checkpoint: mean |diff| {check['mean_abs_diff']:.1e}, max {check['max_abs_diff']:.1e}) and {path}"
        + (f"; removed the unused {', '.join(removed)}" if shipped and removed else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
