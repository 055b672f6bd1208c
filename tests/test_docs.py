"""The documents cite their numbers by record file: every record they name must exist in experiments/results.

A name may stand for several records: ``x{8,4}`` for alternatives, ``[_refined]`` for an optional part,
``*`` for any text (at least one record must match).
"""

import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# .json files that the tools write for users, not records
OUTPUTS = {"metrics.json", "results.json", "index.json", "degradation.json", "run.json"}


def expand(name: str) -> list[str]:
    """All names a cited pattern stands for: ``a{b,c}[d]`` -> ``abd, ab, acd, ac``."""
    alt = re.search(r"\{([^{}]*)\}", name)
    if alt:
        head, tail = name[: alt.start()], name[alt.end() :]
        return [n for a in alt.group(1).split(",") for n in expand(head + a + tail)]
    opt = re.search(r"\[([^\[\]]*)\]", name)
    if opt:
        head, tail = name[: opt.start()], name[opt.end() :]
        return expand(head + opt.group(1) + tail) + expand(head + tail)
    return [name]


def cited_records(text: str) -> list[str]:
    """Record names quoted in code spans of a markdown text (the part after the last ``/``)."""
    names = [span.rsplit("/", 1)[-1] for span in re.findall(r"`([^`\s]*\.json)`", text)]
    return [n for n in names if n not in OUTPUTS]


def test_expand():
    assert expand("flow_eval_x{8,4}[_he].json") == [
        "flow_eval_x8_he.json",
        "flow_eval_x8.json",
        "flow_eval_x4_he.json",
        "flow_eval_x4.json",
    ]
    assert expand("a{,_b}.json") == ["a.json", "a_b.json"]
    assert cited_records("see `x/metrics.json` and `experiments/results/a.json`, `b.npy`") == ["a.json"]


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_cited_records_exist(doc):
    records = sorted(p.name for p in RESULTS.glob("*.json"))
    cited = cited_records(doc.read_text())
    assert cited, f"{doc.name} cites no record"
    missing = [(name, e) for name in cited for e in expand(name) if not fnmatch.filter(records, e)]
    assert not missing, f"{doc.name} cites records that do not exist: {missing}"


def test_generated_tables_equal_their_records():
    """The results tables of README.md and docs/degradations.md are what experiments/table_lr_variants.py
    makes from the records."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "table_lr_variants", ROOT / "experiments" / "table_lr_variants.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for doc in module.DOCS:
        text = doc.read_text()
        assert module.MARKER.search(text), f"{doc.name} holds no generated table"
        assert module.fill(text) == text, "run: python experiments/table_lr_variants.py --write"


def test_readme_training_times_are_their_record():
    """README's time of a default chain is what experiments/time_defaults.py recorded."""
    import json

    record = json.loads((RESULTS / "train_defaults_cpu_x4.json").read_text())
    minutes = {r["stage"]: r["estimate_min"] for r in record["stages"]}
    text = " ".join((ROOT / "README.md").read_text().split())
    cited = (
        f"about {round(record['chain_estimate_min'] / 60)} hours at x4 on this project's 2-core CPU "
        f"(stage 1 {minutes['stage1']:.0f} min, stage 2 {minutes['stage2']:.0f}, full network {minutes['full']:.0f};"
    )
    assert cited in text
