"""docs/results.md is what experiments/results_doc.py builds from the records in experiments/results."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


@pytest.fixture(scope="module")
def results_doc():
    spec = importlib.util.spec_from_file_location("results_doc", ROOT / "experiments" / "results_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page(results_doc):
    return results_doc.build()


def rows_naming(page: str, record: str) -> list[str]:
    """The table rows of the page that name ``record`` in a code span."""
    return [line for line in page.splitlines() if line.startswith("|") and f"`{record}`" in line]


def test_page_is_what_the_script_builds(page):
    assert (ROOT / "docs" / "results.md").read_text() == page, (
        "run: python experiments/results_doc.py --write"
    )


def test_a_record_value_is_in_the_row_that_names_its_record(page):
    """Known answers: values of two records, formatted by hand, in the rows that cite them."""
    name = "ablations_x8_matched_tta1.json"
    means = json.loads((RESULTS / name).read_text())["means"]
    full, no_warpnet = means["full"]["psnr"], means["no_warpnet"]["psnr"]
    rows = rows_naming(page, name)
    assert len(rows) == 1, rows
    assert f"| {full:.2f} / {means['full']['sam']:.2f}; {means['full/wrong_ref']['psnr']:.2f} |" in rows[0]
    assert f"| {no_warpnet:.2f} ({no_warpnet - full:+.2f}) / {means['no_warpnet']['sam']:.2f};" in rows[0]

    name = "flow_eval_x8_refined.json"
    x8 = json.loads((RESULTS / name).read_text())["scales"]["8"]
    rows = rows_naming(page, name)
    assert any(
        f"| TTA + refine | {x8['all']['epe']:.2f} | {100 * x8['all']['1px']:.0f}% |" in r for r in rows
    ), rows
    assert any(f"| TTA + refine | {x8['scenes']['balloons']['epe']:.2f} |" in r for r in rows), rows


def test_every_record_the_page_names_was_read(results_doc, page):
    """Rows name the records they read: each single name in the page is a record the build loaded."""
    import re

    named = {n for n in re.findall(r"`([^`{}\s,]+\.json)`", page)}
    read = set(results_doc._read_names)
    prose = {"training_shipped_x8_session6.json", "training_shipped_x8_session7.json", "weights_x8.json"}
    assert named - read <= prose, named - read - prose


def test_a_missing_key_names_the_record_and_the_key(results_doc, tmp_path, monkeypatch):
    for path in RESULTS.glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    name = "sr_eval_shipped_x8_factor2_refined_bp.json"
    record = json.loads((tmp_path / name).read_text())
    del record["means"]["shipped"]["sam"]
    (tmp_path / name).write_text(json.dumps(record))
    monkeypatch.setattr(results_doc, "RESULTS", tmp_path)
    with pytest.raises(results_doc.RecordError) as error:
        results_doc.build()
    assert name in str(error.value) and "means/shipped/sam" in str(error.value)

    (tmp_path / "tiny.json").write_text(json.dumps({"means": {}}))
    with pytest.raises(results_doc.RecordError, match=r"tiny\.json: no key 'means/shipped'"):
        results_doc.value("tiny.json", "means", "shipped", "psnr")
    with pytest.raises(results_doc.RecordError, match=r"absent\.json: no such record"):
        results_doc.value("absent.json", "means")


def test_check_fails_with_a_diff_when_the_page_differs(results_doc, tmp_path, monkeypatch, capsys):
    stale = tmp_path / "results.md"
    stale.write_text("# an old page\n")
    monkeypatch.setattr(results_doc, "DOC", stale)
    monkeypatch.setattr(results_doc, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["results_doc.py", "--check"])
    with pytest.raises(SystemExit) as exit_:
        results_doc.main()
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert "-# an old page" in out and "+# sschsr: measured results" in out
