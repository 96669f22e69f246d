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
        "report/report.md differs from what report/metrics renders: regenerate it with python reproduce.py --report-only"


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
        "README's results block differs from report/metrics: regenerate it with python reproduce.py --report-only"


def test_html_report_is_self_contained_and_current():
    html = (REPORT / "report.html").read_text()
    assert html == reproduce.render_html((REPORT / "report.md").read_text(), REPORT), \
        "report/report.html differs from report.md: regenerate it with python reproduce.py --report-only"
    assert 'src="figures/' not in html and html.count('src="data:image/png;base64,') == \
        len(re.findall(r"\(figures/[\w-]+\.png\)", (REPORT / "report.md").read_text()))


def test_every_metrics_number_of_the_deployment_table_is_in_the_report():
    deployment = REPORT / "metrics" / "deployment.json"
    if not deployment.exists():
        pytest.skip("05_beyond_the_baseline has not run")
    text = (REPORT / "report.md").read_text()
    for label, row in json.loads(deployment.read_text())["models"].items():
        assert f"| {label} | {100 * row['test_accuracy']:.2f} % |" in text


def test_benchmark_speedups_in_the_report_are_the_metrics():
    benchmark = REPORT / "metrics" / "benchmark.json"
    if not benchmark.exists():
        pytest.skip("benchmarks/kd_throughput.py has not run")
    speeds = json.loads(benchmark.read_text())["training_images_per_s"]
    text = (REPORT / "report.md").read_text()
    base = next(iter(speeds.values()))
    for name, value in speeds.items():
        assert f"| {name} | {value:,.0f} | {value / base:.1f}x |" in text


def test_speed_section_names_the_threads_of_04_and_of_the_benchmark():
    metrics = reproduce.load_metrics(REPORT)
    if "benchmark" not in metrics:
        pytest.skip("benchmarks/kd_throughput.py has not run")
    metrics["benchmark"]["threads"] = 2
    metrics["student_kd"]["run"]["threads"] = 1
    assert "validation pass\n(1 threads)" in reproduce.render_speed(metrics) and "(2 threads)." in reproduce.render_speed(metrics)
    del metrics["student_kd"]["run"]["threads"]
    assert "(threads not recorded)" in reproduce.render_speed(metrics)


def test_a_sweep_run_with_another_teacher_says_so():
    metrics = reproduce.load_metrics(REPORT)
    if "kd_sweep" not in metrics:
        pytest.skip("06_kd_variants has not run")
    shipped = metrics["teacher_evaluation"]["checkpoint_sha256"]
    metrics["kd_sweep"] = {**metrics["kd_sweep"], "teacher_sha256": shipped, "augmentation": {"flip": True}}
    assert "earlier teacher" not in reproduce.render_sweep(metrics) and "distilled runs: flip)" in reproduce.render_sweep(metrics)
    metrics["kd_sweep"]["scratch_val_accuracy"] = {"flip": 0.9412, "homework": 0.9388}
    assert "| from scratch, augmentation: homework | 93.88 % |" in reproduce.render_sweep(metrics)
    metrics["kd_sweep"]["augmentation"] = {"flip": True, "degrees": 10.0, "translate": 0.1, "scale": [0.9, 1.1]}
    assert "flip, ±10° rotation, ±10 % shift, ×0.9-1.1 scale)" in reproduce.render_sweep(metrics)
    metrics["kd_sweep"].update(views=8, view_counts_val_accuracy={"2": 0.9301, "8": 0.9355})   # JSON keys are strings
    text = reproduce.render_sweep(metrics)
    assert "| the same on 2 views of each image | 93.01 % |\n| the same on 8 views of each image (all of the cache) | 93.55 % |" in text
    assert "standard error" not in text   # a sweep written before the rule says nothing of it
    metrics["kd_sweep"]["fewest_views"] = 8
    assert "within one binomial standard error of the best count (the rule set before the runs): 8." in reproduce.render_sweep(metrics)
    metrics["kd_sweep"]["view_augmentations_val_accuracy"] = {"homework_mix": 0.9377}
    assert ("| the same on views of flip, ±10° rotation, ±10 % shift, ×0.9-1.1 scale, mixed with a partner image (its "
            "share up to 0.4) | 93.77 % |\n| the same on 2 views") in reproduce.render_sweep(metrics)
    metrics["kd_sweep"]["teacher_sha256"] = "0" * 64
    assert "**an earlier teacher** (SHA-256 `000000000000`" in reproduce.render_sweep(metrics)


def test_the_students_method_names_the_teacher_it_distilled():
    metrics = reproduce.load_metrics(REPORT)
    shipped = metrics["teacher_evaluation"]["checkpoint_sha256"]
    metrics["student_kd"]["run"]["teacher_sha256"] = "f" * 64
    assert "**an earlier teacher** (SHA-256 `ffffffffffff`" in reproduce.render_report_from(metrics)
    metrics["student_kd"]["run"]["teacher_sha256"] = shipped
    assert "earlier teacher" not in reproduce.render_report_from(metrics).split("## Results")[0]


def test_improved_student_section_appears_with_its_metrics():
    metrics = reproduce.load_metrics(REPORT)
    assert reproduce.render_improved({k: v for k, v in metrics.items() if k != "student_improved"}) == ""
    run = {"arch": "student_gap", "parameters": 94_250, "mult_adds": 20_030_912, "teacher_mode": "cached",
           "teacher_sha256": metrics["teacher_evaluation"]["checkpoint_sha256"], "train_seconds": 600, "best_epoch": 7,
           "config": {"temperature": 1.0, "alpha": 0.3, "optimizer": "adam", "lr": 0.003, "weight_decay": 0.01, "epochs": 8}}
    metrics["student_improved"] = {"run": run, "val_accuracy": 0.9412, "test_accuracy": 0.9387}
    text = reproduce.render_improved(metrics)
    assert "`student_gap`, 94,250 parameters" in text and "test 93.87 %" in text and "the shipped teacher" in text
    metrics["student_improved"]["run"]["augmentation"] = {"flip": True, "degrees": 10.0, "translate": 0.1, "scale": [0.9, 1.1]}
    metrics["student_improved_scratch"] = {"val_accuracy": 0.9402, "test_accuracy": 0.9340, "run": {"augmentation": {
        "flip": True, "degrees": 0.0, "translate": 0.0, "scale": [1.0, 1.0]}}}
    text = reproduce.render_improved(metrics)
    assert "soft targets; augmentation: flip, ±10° rotation" in text
    assert "(the full profile), augmentation: flip, the same architecture scores 93.40 % (validation 94.02 %): " \
           "distilled minus scratch +0.47 points on the test set, +0.10 on validation, from one seed each" in text
    metrics.pop("student_improved_scratch")
    assert "Trained from scratch" not in reproduce.render_improved(metrics)


def test_summary_says_when_the_student_learnt_from_another_teacher():
    metrics = reproduce.load_metrics(REPORT)
    metrics["student_kd"]["run"]["teacher_sha256"] = metrics["teacher_evaluation"]["checkpoint_sha256"]
    assert "earlier teacher" not in reproduce.render_summary(metrics)
    metrics["student_kd"]["run"]["teacher_sha256"] = "e" * 64
    assert "learnt from **an earlier teacher** (SHA-256 `eeeeeeeeeeee`" in reproduce.render_summary(metrics)


def test_int8_scheme_section_appears_with_its_metrics():
    metrics = reproduce.load_metrics(REPORT)
    assert reproduce.render_int8_schemes({k: v for k, v in metrics.items() if k != "int8_schemes"}) == ""
    metrics["int8_schemes"] = {"student": "student_kd.pt", "calibration_images": 2000, "n_val": 5000,
                               "run": {"cpu": "AMD EPYC"},
                               "schemes": {"float32": {"val_accuracy": 0.9338, "agreement": 1.0},
                                           "U8S8": {"val_accuracy": 0.8938, "agreement": 0.9123}}}
    text = reproduce.render_int8_schemes(metrics)
    assert "| U8S8 | 89.38 % | 91.23 % |" in text and "on\nAMD EPYC" in text


def test_seed_table_gives_mean_and_std_of_runs_with_the_shipped_teacher_and_settings():
    metrics = reproduce.load_metrics(REPORT)
    metrics["student_kd"]["run"]["teacher_sha256"] = shipped = metrics["teacher_evaluation"]["checkpoint_sha256"]
    metrics["student_kd"]["run"]["seed"] = 0
    config = {name: metrics[name]["run"]["config"] for name in ("student_kd", "student_scratch")}

    def run(teacher, val, test, name, **changes):
        return {"run": {"teacher_sha256": teacher, "config": {**config[name], "seed": 7, **changes}},
                "val_accuracy": val, "test_accuracy": test}

    metrics["seeds"] = {
        1: {"student_kd": run(shipped, 0.93, 0.92, "student_kd"), "student_scratch": run(None, 0.93, 0.925, "student_scratch")},
        2: {"student_kd": run("e" * 64, 0.99, 0.99, "student_kd"), "student_scratch": run(None, 0.99, 0.99, "student_scratch")},
        3: {"student_kd": run(shipped, 0.99, 0.99, "student_kd"),
            "student_scratch": run(None, 0.99, 0.99, "student_scratch", epochs=1)}}
    table = reproduce.seed_table(metrics)
    assert list(table["rows"]) == [0, 1]  # seed 2 distilled another teacher, seed 3 trained otherwise: left out
    kd_test = [metrics["student_kd"]["test_accuracy"], 0.92]
    assert abs(table["summary"]["kd_test"]["mean"] - sum(kd_test) / 2) < 1e-12
    assert abs(table["summary"]["kd_test"]["std"] - abs(kd_test[0] - kd_test[1]) / 2 ** 0.5) < 1e-12
    text = reproduce.render_seeds(metrics)
    assert "| 1 | 93.00 % | 92.00 % | 93.00 % | 92.50 % | -0.50 |" in text and "| 0 (shipped) |" in text
    assert "95 % confidence interval" in text
    assert "cached KD" not in text   # no seed has a cached-logit student: no such column
    metrics["student_kd_cached"] = run(shipped, 0.94, 0.93, "student_kd", teacher_mode="cached")
    metrics["student_kd_cached"]["run"]["parameters"] = 95_386
    metrics["seeds"][1]["student_kd_cached"] = run(shipped, 0.935, 0.928, "student_kd", teacher_mode="cached")
    table = reproduce.seed_table(metrics)
    assert table["rows"][1]["kd_cached_minus_scratch_test"] == pytest.approx(0.928 - 0.925)
    text = reproduce.render_seeds(metrics)
    assert "| 1 | 93.00 % | 92.00 % | 93.00 % | 92.50 % | 93.50 % | 92.80 % | -0.50 | +0.30 |" in text
    assert "Cached KD minus scratch, paired by seed" in text
    assert "| StudentNet, distilled from cached clean logits | 95,386 | 93.00 % |" in reproduce.render_summary(metrics)
    metrics["seeds"][1]["student_kd_cached"]["run"]["teacher_sha256"] = "e" * 64   # one seed lacks it: no column
    assert "cached KD" not in reproduce.render_seeds(metrics)
    metrics["seeds"] = {}
    assert reproduce.render_seeds(metrics) == ""


def test_summary_lists_the_improved_student_when_it_ran():
    metrics = reproduce.load_metrics(REPORT)
    metrics.pop("student_improved", None)
    metrics.pop("student_improved_scratch", None)
    assert "GapStudentNet" not in reproduce.render_summary(metrics)
    metrics["student_improved"] = {"run": {"parameters": 94_250}, "val_accuracy": 0.9412, "test_accuracy": 0.9387}
    assert "| GapStudentNet, distilled (`04b`) | 94,250 | 93.87 % | — |" in reproduce.render_summary(metrics)
    assert "GapStudentNet, from scratch" not in reproduce.render_summary(metrics)
    metrics["student_improved_scratch"] = {"run": {"parameters": 94_250}, "val_accuracy": 0.94, "test_accuracy": 0.9361}
    assert "| GapStudentNet, from scratch (`04b`, full profile) | 94,250 | 93.61 % | — |" in reproduce.render_summary(metrics)


def test_confidence_interval_of_paired_differences_uses_students_t():
    interval = reproduce.mean_interval([0.001, 0.003, 0.002, 0.004, 0.000])
    assert interval["mean"] == pytest.approx(0.002) and interval["std"] == pytest.approx(0.0015811, rel=1e-4)
    half = 2.776 * 0.0015811 / 5 ** 0.5
    assert interval["low"] == pytest.approx(0.002 - half, abs=1e-6) and interval["high"] == pytest.approx(0.002 + half, abs=1e-6)
    assert reproduce.binomial_se(0.94, 10_000) == pytest.approx(0.002375, rel=1e-3)


def test_reproduction_table_has_one_row_per_record_and_no_duplicates():
    text = (REPORT / "report.md").read_text().split("## Reproduction", 1)[1].split("## References")[0]
    rows = re.findall(r"^\| `([\w]+)` \| [\d.]+ min \| [^|]+ \|$", text, flags=re.M)
    records = sorted(p.stem for p in (REPORT / "executed").glob("*.ipynb"))
    assert sorted(rows) == records and len(rows) == len(set(rows))
    models = re.findall(r"^\| (teacher|KD student|scratch student|improved student) .*\| \d+ min \|$", text, flags=re.M)
    assert len(models) == len(set(models)) >= 3


def test_every_figure_is_shown_in_the_report():
    shown = set(re.findall(r"\(figures/([\w-]+\.png)\)", (REPORT / "report.md").read_text()))
    assert {p.name for p in (REPORT / "figures").glob("*.png")} == shown


OUTSIDE = [r"\.\./shared", r"issue #?\d", r"#\d+\b", r"\bsession \d", r"closing note", r"/work/", r"~/\.cache/kd-fashion/\S"]


@pytest.mark.parametrize("path", ["README.md", "report/report.md", "experiments/README.md",
                                  *[f"notebooks/{n}.ipynb" for n in reproduce.NOTEBOOKS]])
def test_reader_facing_text_refers_to_nothing_outside_the_repository(path):
    text = (Path(reproduce.ROOT) / path).read_text()
    if path.endswith(".ipynb"):  # the words a reader sees: markdown and code, not outputs
        text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"])
    for pattern in OUTSIDE:
        assert not re.search(pattern, text, flags=re.I), f"{path} refers to something outside the repository: {pattern}"



def test_the_teachers_training_image_statistics_sit_beside_the_previous_teachers():
    import copy
    metrics = reproduce.load_metrics(REPORT)
    teacher = metrics["teacher_evaluation"]
    assert "| previous |" not in reproduce.render_teacher_on_training_images(teacher, None)
    assert "| previous |" not in reproduce.render_teacher_on_training_images(teacher, teacher)  # the same checkpoint
    previous = copy.deepcopy(teacher)
    previous["checkpoint_sha256"], previous["test_accuracy"] = "f" * 64, 0.935
    previous["training_images"]["clean"] = {**previous["training_images"]["clean"], "agreement": 0.97, "label_probability": 0.947}
    text = reproduce.render_teacher_on_training_images(teacher, previous)
    assert "| clean | previous | 97.00 % | 0.947 |" in text and "| clean | shipped |" in text
    assert "The previous teacher (SHA-256 `ffffffffffff`, 93.50 % test" in text


def test_the_independent_evaluation_is_reported_for_the_shipped_checkpoints_only():
    metrics = reproduce.load_metrics(REPORT)
    shipped = metrics["teacher_evaluation"]["checkpoint_sha256"]
    metrics["independent_evaluation"] = {"models": {
        "checkpoints/teacher_resnet50.pt": {"measured": 0.9512, "recorded": 0.9512, "agrees": True, "sha256": shipped},
        "old/teacher.pt": {"measured": 0.5, "recorded": 0.5, "agrees": True, "sha256": "0" * 64}}}
    text = reproduce.render_independent(metrics)
    assert "`teacher_resnet50.pt` 95.12 % (recorded 95.12 %)" in text and "teacher.pt` 50" not in text
    metrics["independent_evaluation"]["models"].pop("checkpoints/teacher_resnet50.pt")
    assert reproduce.render_independent(metrics) == ""


def test_the_teachers_training_table_names_each_divergence_and_its_recovery():
    metrics = reproduce.load_metrics(REPORT)
    shipped = metrics["teacher_evaluation"]["checkpoint_sha256"]
    epoch = lambda e, acc: {"epoch": e, "lr": 0.05, "train_loss": 0.5, "train_accuracy": acc, "val_accuracy": acc,  # noqa: E731
                            "seconds": 400}
    metrics["teacher_training"] = {"checkpoint_sha256": shipped,
                                   "history": [epoch(1, 0.75), epoch(2, 0.81), epoch(3, 0.57), epoch(4, 0.79), epoch(5, 0.83)]}
    text = reproduce.render_teacher_training(metrics)
    assert "in epoch 3 (learning rate 0.05) the training accuracy fell from 81.00 % to 57.00 %, back above it in epoch 5" in text
    assert text.count("\n| ") == 1 + 5 and "| 3 | 0.05 | 0.500 | 57.00 % | 57.00 % | 6.7 |" in text
    metrics["teacher_training"]["history"] = [epoch(1, 0.75), epoch(2, 0.81)]
    assert "No epoch lost more than 10 points" in reproduce.render_teacher_training(metrics)
    metrics["teacher_training"]["checkpoint_sha256"] = "0" * 64   # another teacher's training: not shown
    assert reproduce.render_teacher_training(metrics) == ""
