"""The results table of docs/degradations.md, made from the records of ``experiments/eval_lr_variants.sh``.

    .venv/bin/python experiments/table_lr_variants.py            # print the tables
    .venv/bin/python experiments/table_lr_variants.py --write    # put them into docs/degradations.md

Each table is one (tag, split, scale): a row per way of making the LR data, PSNR / SAM of every model
and of bicubic (the better of the centre- and corner-aligned cubic upsampling, as the targets of the
degradation work compare), and each model's gain over that bicubic. README.md and docs/degradations.md
hold each table between
``<!-- table:TAG:SPLIT:xS -->`` and ``<!-- /table -->``; ``tests/test_docs.py`` checks that they equal what
this script makes from the records.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
DOC = ROOT / "docs" / "degradations.md"
DOCS = (ROOT / "README.md", DOC)  # the files whose marked tables this script writes
VARIANTS = {
    "paper": "the paper's (8 x 8 Gaussian, sigma 3, every s-th pixel)",
    "block": "block means, block-centred (`--lr-grid block`)",
    "gauss2_n0.005": "Gaussian sigma 2 px at block centres, 0.5% noise (`--lr-grid block`)",
    "gauss4_n0.01": "Gaussian sigma 4 px on the paper's grid, 1% noise",
}
BICUBICS = ("bicubic", "bicubic_corner")
MARKER = re.compile(r"<!-- table:([^:]+):([^:]+):x(\d+) -->\n.*?<!-- /table -->", re.S)


def record(tag: str, split: str, scale: int, variant: str) -> dict | None:
    path = RESULTS / f"sr_lr_{tag}_{split}_x{scale}_{variant}.json"
    return json.loads(path.read_text()) if path.exists() else None


def table(tag: str, split: str, scale: int) -> str:
    """The markdown table of one (tag, split, scale)."""
    rows, models = [], None
    for variant, label in VARIANTS.items():
        rec = record(tag, split, scale, variant)
        if rec is None:
            continue
        means = rec["means"]
        models = models or list(rec["models"])
        best = max(BICUBICS, key=lambda b: means[b]["psnr"])
        cells = [f"{means[best]['psnr']:.2f} / {means[best]['sam']:.2f}"]
        for m in models:
            cells.append(
                f"{means[m]['psnr']:.2f} / {means[m]['sam']:.2f} ({means[m]['psnr'] - means[best]['psnr']:+.2f})"
            )
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    if not rows:
        raise SystemExit(f"no records sr_lr_{tag}_{split}_x{scale}_*.json")
    head = "| LR data | bicubic | " + " | ".join(models) + " |"
    rule = "|---|" + "---|" * (1 + len(models))
    return "\n".join([head, rule, *rows])


def fill(text: str) -> str:
    """``text`` with every marked table made again from the records."""

    def again(m: re.Match) -> str:
        tag, split, scale = m.group(1), m.group(2), int(m.group(3))
        return f"<!-- table:{tag}:{split}:x{scale} -->\n{table(tag, split, scale)}\n<!-- /table -->"

    return MARKER.sub(again, text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--write", action="store_true", help="rewrite the tables in README.md and docs/degradations.md"
    )
    args = p.parse_args()
    for doc in DOCS:
        new = fill(doc.read_text())
        if args.write:
            doc.write_text(new)
            print(f"wrote {doc.relative_to(ROOT)}")
        else:
            for m in MARKER.finditer(new):
                print(m.group(0), end="\n\n")


if __name__ == "__main__":
    main()
