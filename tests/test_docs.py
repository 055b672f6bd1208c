"""The documents cite their numbers by record file: every record they name must exist in experiments/results.

A name may stand for several records: ``x{8,4}`` for alternatives, ``[_refined]`` for an optional part,
``*`` for any text (at least one record must match).
"""

import fnmatch
import itertools
import json
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

    record = json.loads((RESULTS / "train_defaults_cpu_x4.json").read_text())
    minutes = {r["stage"]: r["estimate_min"] for r in record["stages"]}
    text = " ".join((ROOT / "README.md").read_text().split())
    cited = (
        f"about {round(record['chain_estimate_min'] / 60)} hours at x4 on this project's 2-core CPU "
        f"(stage 1 {minutes['stage1']:.0f} min, stage 2 {minutes['stage2']:.0f}, full network {minutes['full']:.0f};"
    )
    assert cited in text


# ------------------------------------------------------------------------------ every number and its record

# A decimal number, or an integer with a unit (dB, s, ms, GB, MB, %), in README.md or docs/ is a measurement
# unless it is written in a code span (settings, commands) or listed here with what it is. A measurement
# stands in a block (paragraph, list item, table) that names its records (or, for settings, its config file
# ``conf/...yaml``), and equals, at its printed precision, a value of those records or the difference or
# ratio of two comparable values (a gain, a speed-up). Generated tables (between ``<!-- table:... -->`` and
# ``<!-- /table -->``) are checked against their records by their own tests.
# What this cannot see: which of the cited values a number is (a gain of 1.8 dB may match another pair of
# methods than the one the sentence names); it catches numbers that no cited record holds (stale, mistyped,
# uncited), the failure that matters for a record that changes.
NOT_MEASURED = {
    "README.md": {"2505.02109": "the paper's arXiv number"},
}
# decimals, and integers followed by a unit of measurement (integers alone are mostly sizes and counts set)
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d+|\d+(?= ?(?:dB|ms|s|GB|MB|%)(?!\w)))(?![\w.])")
GENERATED = re.compile(r"<!-- table:[^>]*-->.*?<!-- /table -->", re.S)


def numbers(obj, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], float]]:
    """The numbers in a parsed JSON or YAML value with their paths of keys and list positions."""
    if isinstance(obj, bool) or obj is None:
        return []
    if isinstance(obj, int | float):
        return [(path, float(obj))]
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    return [found for k, v in items for found in numbers(v, (*path, str(k)))]


def record_values(name: str) -> list[tuple[tuple[str, ...], float]]:
    """The numbers of a record with their paths: ``(("name.json", "means", "full", "psnr"), 32.18)``."""
    return numbers(json.loads((RESULTS / name).read_text()), (name,))


def comparable(values: list[tuple[tuple[str, ...], float]]) -> list[list[float]]:
    """Groups of values that differ in one named place of their paths (one method, setting or record against
    another, the rest alike: the same metric, the same scene), or in their record and one named place (a
    method of one record against another of another): the pairs a gain or a speed-up is taken between."""
    groups: dict[tuple, list[float]] = {}
    for path, v in values:
        # not the metric (the last key) nor a list position (scene i against scene j is no gain)
        places = [i for i in range(len(path) - 1) if not path[i].isdigit()]
        for i in places:
            groups.setdefault((len(path), i, path[:i], path[i + 1 :]), []).append(v)
            if i:
                groups.setdefault((len(path), 0, i, path[1:i], path[i + 1 :]), []).append(v)
    return [g for g in groups.values() if len(g) > 1]


def config_values(path: str) -> list[float]:
    """The numbers of a config file the docs cite for settings."""
    from omegaconf import OmegaConf

    return [v for _, v in numbers(OmegaConf.to_container(OmegaConf.load(ROOT / path)))]


def blocks(text: str) -> list[str]:
    """Paragraphs, list items and tables of a markdown text (generated tables left out)."""
    out = []
    for para in re.split(r"\n\s*\n", GENERATED.sub("", text)):
        cur: list[str] = []
        for line in para.split("\n"):
            if re.match(r"\s*(?:[-*]|\d+\.) ", line) and cur:
                out.append("\n".join(cur))
                cur = []
            cur.append(line)
        out.append("\n".join(cur))
    return out


def explained(number: str, values: list[float], pairs: list[list[float]] = (), after: str = "") -> bool:
    """Whether ``number`` (as printed, ``after`` the text that follows it) is one of ``values`` (in
    thousands, millions, GB, percent or seconds of milliseconds when ``after`` says k, M, G, % or s), or,
    below 10 (a gain, a loss), the difference of two values of a group of ``pairs``, or, followed by "x" or
    "times", their ratio."""
    value = abs(float(number))
    tol = 0.5 * 10 ** -len((number.split(".") + [""])[1]) + 1e-9
    # a count in thousands or millions, bytes or MB in GB, a fraction in %, milliseconds in s
    units = {"k": {1e3}, "M": {1e6}, "G": {1e9, 1024}, "%": {0.01}, "s": {1e3}}.get(after.lstrip()[:1], set())
    units = {1.0, *units}
    if any(abs(abs(v) / u - value) <= tol for v in values for u in units):
        return True
    ratio = re.match(r"\s*(x|times)\b", after) is not None
    for group in pairs:
        for a, b in itertools.combinations(sorted(set(group)), 2):
            if value < 10 and any(abs(abs(a - b) / u - value) <= tol for u in units):
                return True
            if ratio and a and b and min(abs(abs(b / a) - value), abs(abs(a / b) - value)) <= tol:
                return True
    return False


def unexplained_numbers(doc: Path) -> list[str]:
    records = sorted(p.name for p in RESULTS.glob("*.json"))
    allowed = NOT_MEASURED.get(doc.name, {})
    bad = []
    for block in blocks(doc.read_text()):
        plain = re.sub(r"\]\([^)]*\)", "]", re.sub(r"`[^`]*`", " ", block))
        if not NUMBER.search(plain):
            continue
        cited = {r for n in cited_records(block) for e in expand(n) for r in fnmatch.filter(records, e)}
        found = [pv for r in sorted(cited) for pv in record_values(r)]
        values = [v for _, v in found]
        values += [
            v for c in re.findall(r"`(conf/[^`\s]+\.yaml)`", block) for v in config_values(c)
        ]  # settings
        pairs = comparable(found)
        context = " ".join(plain.split())[:80]
        bad += [
            f"{m.group()} (in: {context}...)"
            for m in NUMBER.finditer(plain)
            if m.group().lstrip("+-") not in allowed
            and not explained(m.group(), values, pairs, plain[m.end() : m.end() + 8])
        ]
    return bad


def test_explained():
    found = [(("a.json", "means", "full", "psnr"), 32.32), (("a.json", "means", "none", "psnr"), 30.39)]
    found += [(("b.json", "means", "full", "psnr"), 32.0), (("a.json", "means", "full", "sam"), 4.51)]
    values, pairs = [v for _, v in found], comparable(found)
    assert explained("32.32", values, pairs) and explained("4.5", values, pairs)
    assert explained("1.93", values, pairs) and explained("+1.93", values, pairs)  # full against none
    assert explained("0.32", values, pairs) and explained("1.61", values, pairs)  # across records
    other = [(("a.json", "means", "full", "psnr"), 32.32), (("c.json", "scenes", "0", "none", "sam"), 31.0)]
    assert not explained("1.32", [], comparable(other))  # values of unlike places do not make a gain
    assert not explained("4.52", values, pairs) and not explained("2.00", values, pairs)
    assert explained("2.0", [], [[3.0, 6.0]], " x faster") and not explained("2.0", [], [[3.0, 6.0]], " dB")
    assert explained("3.68", [3680195], after=" M parameters") and not explained(
        "3.68", [3680195], after=" dB"
    )
    assert explained("65.1", [0.651], after=" %") and not explained("12.5", [], [[40.0, 27.5]])


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_number_is_its_record(doc):
    bad = unexplained_numbers(doc)
    assert not bad, f"{doc.name}: numbers that no cited record gives:\n" + "\n".join(bad)


def test_readme_is_a_few_screens_with_the_layout_near_the_top():
    """README.md: at most 12 KB, the package layout in its first 80 lines, no commit hashes and nothing
    outside the repository named (the shared data folder, a developer's machine)."""
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 12_000, f"README.md is {len(text.encode())} bytes: move reference to docs/"
    head = "\n".join(text.splitlines()[:80])
    assert "src/sschsr/" in head and "conf/" in head and "tests/" in head, (
        "the layout tree belongs near the top"
    )
    assert not re.search(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b", text), "a commit hash"
    assert "../shared" not in text and "/work/" not in text and "/tmp/" not in text
