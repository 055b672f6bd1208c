"""Parameters of the paper's network (``experiment=paper``) per component, against the official code's.

    .venv/bin/python experiments/paper_params.py            # count, write experiments/results/paper_params.json
    .venv/bin/python experiments/paper_params.py --write    # and put the table into docs/paper.md

Builds the network ``sschsr-train experiment=paper`` builds (composed from ``conf/`` and instantiated, as the
training does) and each of the paper's ablations (``ablation=no_warpnet|no_iterative|no_rmca``), counts the
parameters of each component and sets them beside the official ``FusionWarpNetHSI``'s (DESIGN.md, "Anchor":
RAFT 5.26 M, WarpNet 0.14 M, RGB encoders 1.67 M, HSI encoder 3.36 M, decoder 17.03 M, 27.45 M in all).
Registration is the flow network and WarpNet; fusion is the rest (encoders, aggregation, attention fusion).

The table in docs/paper.md sits between ``<!-- table:paper_params -->`` and ``<!-- /table -->``; ``--write``
fills it from the record, and ``tests/test_paper.py`` checks that it equals what the record gives.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from _common import RESULTS, ROOT, fill_doc, provenance, write_result
from torch import nn

RECORD = RESULTS / "paper_params.json"
DOC = ROOT / "docs" / "paper.md"
MARKER = re.compile(r"<!-- table:paper_params -->\n.*?<!-- /table -->", re.S)

# the official model's parameters per component, millions (DESIGN.md, "Anchor: the official model's cost")
OFFICIAL_M = {
    "flow network (RAFT)": 5.26,
    "WarpNet": 0.14,
    "RGB encoders (matching + texture)": 1.67,
    "HSI encoder": 3.36,
    "decoder (IDFA + attention fusion)": 17.03,
}
OFFICIAL_TOTAL_M = 27.45
REGISTRATION = ("flow network (RAFT)", "WarpNet")
# this network's children making up each component
CHILDREN = {
    "flow network (RAFT)": ("flow_net",),
    "WarpNet": ("warpnet",),
    "RGB encoders (matching + texture)": ("match_encoder", "texture_encoder"),
    "HSI encoder": ("hsi_encoder",),
    "decoder (IDFA + attention fusion)": ("aggregation", "fusion"),
}
ABLATIONS = ("no_warpnet", "no_iterative", "no_rmca")


def paper_network(overrides: list[str] | None = None) -> nn.Module:
    """The SSC-HSR network of ``sschsr-train experiment=paper scale=4`` (plus ``overrides``), untrained."""
    import hydra
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sschsr.cli._common import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=paper", "scale=4", *(overrides or [])])
    return hydra.utils.instantiate(cfg.model.net)


def count(net: nn.Module) -> dict[str, int]:
    """Parameters per component of :data:`CHILDREN` (0 for a part the network lacks), plus ``total``."""
    counts = {
        name: sum(p.numel() for child in children if (m := getattr(net, child, None)) is not None
                  for p in m.parameters())
        for name, children in CHILDREN.items()
    }  # fmt: skip
    counts["total"] = sum(p.numel() for p in net.parameters())
    if sum(v for k, v in counts.items() if k != "total") != counts["total"]:
        raise RuntimeError("the components do not add up to the network: update CHILDREN")
    return counts


def groups(counts: dict[str, float]) -> dict[str, float]:
    """``registration`` (flow network + WarpNet) and ``fusion`` (the rest) of per-component counts."""
    reg = sum(counts[k] for k in REGISTRATION)
    return {"registration": reg, "fusion": sum(v for k, v in counts.items() if k in CHILDREN) - reg}


def measure() -> dict[str, Any]:
    counts = count(paper_network())
    official_groups = groups(OFFICIAL_M)
    return {
        **provenance(__import__("torch").device("cpu")),
        "config": "sschsr-train experiment=paper scale=4 (model.net)",
        "components": {name: {"here": counts[name], "official_m": OFFICIAL_M[name]} for name in CHILDREN},
        "groups": {
            name: {"here": value, "official_m": round(official_groups[name], 2)}
            for name, value in groups(counts).items()
        },
        "total": {"here": counts["total"], "official_m": OFFICIAL_TOTAL_M},
        "ablations": {name: count(paper_network([f"ablation={name}"]))["total"] for name in ABLATIONS},
    }


def _row(name: str, here: int, official_m: float) -> str:
    diff = round(100 * (here / 1e6 - official_m) / official_m, 1) + 0.0  # no "-0.0"
    return f"| {name} | {here / 1e6:.2f} M | {official_m:.2f} M | {diff:+.1f} % |"


def table(record: dict[str, Any]) -> str:
    """The markdown table of a record of :func:`measure`."""
    lines = ["| component | here | official | difference |", "|---|---|---|---|"]
    lines += [_row(k, v["here"], v["official_m"]) for k, v in record["components"].items()]
    lines += [
        _row(f"**{k}**", v["here"], v["official_m"])
        for k, v in {**record["groups"], "total": record["total"]}.items()
    ]
    abl = ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in record["ablations"].items())
    return "\n".join(lines) + f"\n\nThe ablations (`ablation=...` with `experiment=paper`): {abl}."


def fill(text: str, record: dict[str, Any]) -> str:
    """``text`` with its table between the markers made from ``record``."""
    return MARKER.sub(lambda _: f"<!-- table:paper_params -->\n{table(record)}\n<!-- /table -->", text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help=f"also fill the table of {DOC.relative_to(ROOT)}")
    args = p.parse_args()
    record = measure()
    write_result(RECORD, record)
    print(table(record))
    print(f"wrote {RECORD.relative_to(ROOT)}", file=sys.stderr)
    if args.write:
        fill_doc(DOC, MARKER, lambda text: fill(text, record))


if __name__ == "__main__":
    main()
