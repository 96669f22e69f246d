"""The report is generated from the metrics files: no number in it is typed by hand."""
import json
import re
from pathlib import Path

import pytest

import reproduce

REPORT = Path(reproduce.ROOT) / "report"
pytestmark = pytest.mark.skipif(not (REPORT / "report.md").exists(), reason="no full run recorded yet")


def test_report_is_exactly_what_the_metrics_render():
    assert (REPORT / "report.md").read_text() == reproduce.render_report(REPORT), \
        "report/report.md differs from what report/metrics renders: regenerate it with reproduce.py --profile full"


def test_headline_numbers_come_from_the_metrics():
    text = (REPORT / "report.md").read_text()
    for name in ("student_kd", "student_scratch", "teacher_evaluation"):
        accuracy = json.loads((REPORT / "metrics" / f"{name}.json").read_text())["test_accuracy"]
        assert f"{100 * accuracy:.2f} %" in text


def test_every_figure_in_the_report_exists():
    names = re.findall(r"\(figures/([\w-]+\.png)\)", (REPORT / "report.md").read_text())
    assert names and all((REPORT / "figures" / n).exists() for n in names)


def test_readme_results_are_the_metrics_summary():
    readme = (Path(reproduce.ROOT) / "README.md").read_text()
    assert readme == reproduce.readme_with_results(readme, reproduce.load_metrics(REPORT)), \
        "README's results block differs from report/metrics: regenerate it with reproduce.py --profile full"
