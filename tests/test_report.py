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
    for name in ("student_kd", "student_scratch", "teacher_evaluation", "teacher_training_default_stem",
                 "teacher_training_stage2", "teacher_training_stage3"):
        accuracy = json.loads((REPORT / "metrics" / f"{name}.json").read_text())["test_accuracy"]
        assert f"{100 * accuracy:.2f} %" in text


def test_every_figure_in_the_report_exists():
    names = re.findall(r"\(figures/([\w-]+\.png)\)", (REPORT / "report.md").read_text())
    assert names and all((REPORT / "figures" / n).exists() for n in names)


def test_readme_results_are_the_metrics_summary():
    readme = (Path(reproduce.ROOT) / "README.md").read_text()
    assert readme == reproduce.readme_with_results(readme, reproduce.load_metrics(REPORT)), \
        "README's results block differs from report/metrics: regenerate it with reproduce.py --profile full"


def test_html_report_is_self_contained_and_current():
    html = (REPORT / "report.html").read_text()
    assert html == reproduce.render_html((REPORT / "report.md").read_text(), REPORT), \
        "report/report.html differs from report.md: regenerate it with reproduce.py --profile full"
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
    assert "validation pass (1 threads)" in reproduce.render_speed(metrics) and "(2 threads)." in reproduce.render_speed(metrics)
    del metrics["student_kd"]["run"]["threads"]
    assert "threads not recorded" in reproduce.render_speed(metrics)


def test_a_sweep_run_with_another_teacher_says_so():
    metrics = reproduce.load_metrics(REPORT)
    if "kd_sweep" not in metrics:
        pytest.skip("06_kd_variants has not run")
    shipped = metrics["teacher_evaluation"]["checkpoint_sha256"]
    metrics["kd_sweep"] = {**metrics["kd_sweep"], "teacher_sha256": shipped, "augmentation": {"translate": 0.0}}
    assert "earlier teacher" not in reproduce.render_sweep(metrics) and "images, flip)" in reproduce.render_sweep(metrics)
    metrics["kd_sweep"]["augmentation"] = {"translate": 0.07}
    assert "images, flip + shifts up to 0.07)" in reproduce.render_sweep(metrics)
    metrics["kd_sweep"]["teacher_sha256"] = "0" * 64
    assert "**an earlier teacher** (SHA-256 `000000000000`" in reproduce.render_sweep(metrics)


def test_teacher_stages_list_the_evaluated_teacher_once():
    stage = lambda sha, epochs: {"checkpoint_sha256": sha, "run": {"epochs": epochs}}
    m = {"teacher_training_stage2": stage("a", 5), "teacher_training_stage3": stage("b", 4),
         "teacher_evaluation": {"checkpoint_sha256": "c", "teacher_meta": {"epochs": 7}}}
    assert [run["epochs"] for run in reproduce.teacher_stages(m)] == [5, 4, 7]
    m["teacher_evaluation"] = {"checkpoint_sha256": "b", "teacher_meta": {"epochs": 4}}  # 02 saw stage 3
    assert [run["epochs"] for run in reproduce.teacher_stages(m)] == [5, 4]


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
    assert abs(table["mean"]["kd_test"] - sum(kd_test) / 2) < 1e-12
    assert abs(table["std"]["kd_test"] - abs(kd_test[0] - kd_test[1]) / 2 ** 0.5) < 1e-12
    text = reproduce.render_seeds(metrics)
    assert "| 1 | 93.00 % | 92.00 % | 93.00 % | 92.50 % | -0.50 |" in text and "| 0 (shipped) |" in text
    metrics["seeds"] = {}
    assert reproduce.render_seeds(metrics) == ""


def test_summary_lists_the_improved_student_when_it_ran():
    metrics = reproduce.load_metrics(REPORT)
    metrics.pop("student_improved", None)
    assert "GapStudentNet" not in reproduce.render_summary(metrics)
    metrics["student_improved"] = {"run": {"parameters": 94_250}, "val_accuracy": 0.9412, "test_accuracy": 0.9387}
    assert "| GapStudentNet, distilled (`04b`, a better student) | 94,250 | 93.87 % | 94.12 % |" in \
        reproduce.render_summary(metrics)


def test_headroom_section_appears_with_its_metrics():
    metrics = reproduce.load_metrics(REPORT)
    assert reproduce.render_headroom({k: v for k, v in metrics.items() if k != "teacher_headroom"}) == ""
    metrics["teacher_headroom"] = {"teacher_sha256": metrics["teacher_evaluation"]["checkpoint_sha256"], "n_val": 5000,
                                   "teacher_val_accuracy": 0.9404, "n_train_checked": 5000, "teacher_train_agreement": 0.9628,
                                   "teacher_train_label_probability": 0.9398,
                                   "students": {"kd": {"val_accuracy": 0.9342, "teacher_only": 134, "student_only": 103,
                                                       "both_wrong": 195}}}
    text = reproduce.render_headroom(metrics)
    assert "| kd | 93.42 % | 134 | 103 | 195 |" in text and "the shipped teacher" in text and "96.28 %" in text


def test_augmentation_pilot_section_appears_with_its_metrics():
    metrics = reproduce.load_metrics(REPORT)
    assert reproduce.render_augmentation_pilot({k: v for k, v in metrics.items() if k != "augmentation_pilot"}) == ""
    config = {"epochs": 25, "patience": 2, "batch_size": 128, "temperature": 1.0, "alpha": 0.3,
              "augmentation": {"flip": True, "translate": 0.07}}
    variant = lambda config, val: {"config": config, "best_val_accuracy": val, "best_epoch": 24,  # noqa: E731
                                   "last_train_accuracy_augmented": 0.92, "train_accuracy_eval_mode": 0.94}
    metrics["augmentation_pilot"] = {"teacher_sha256": metrics["teacher_evaluation"]["checkpoint_sha256"],
                                     "n_fit_check": 5000, "variants": {
                                         "flip_shift": variant(config, 0.9298),
                                         "flip": variant({**config, "augmentation": {"flip": True, "translate": 0.0}}, 0.9332),
                                         "erase": variant({**config, "temperature": 4.0, "alpha": 0.9, "augmentation": {
                                             "flip": True, "translate": 0.0, "erase": 0.5}}, 0.94),
                                         "gap_ema": {**variant({**config, "schedule": "one_cycle", "ema": 0.999},
                                                               0.9450), "arch": "student_gap",
                                                     "best_val_accuracy_trained_weights": 0.9420}}}
    text = reproduce.render_augmentation_pilot(metrics)
    assert "| flip_shift | flip + shifts up to 0.07, batch 128 | 1, 0.3 | 25, patience 2 | 92.98 % (epoch 24) | 92.00 % | 94.00 % |" in text
    assert "| flip | flip, batch 128 | 1, 0.3 | 25, patience 2 | 93.32 % (epoch 24) |" in text and "the shipped teacher" in text
    assert "| erase | flip + random erasing (p 0.5), batch 128 | 4, 0.9 | 25, patience 2 | 94.00 % (epoch 24) |" in text
    assert ("| gap_ema (`GapStudentNet`) | flip + shifts up to 0.07, batch 128, weight average (EMA 0.999) | 1, 0.3 | "
            "25, one-cycle | 94.50 % (epoch 24; the trained weights without averaging: 94.20 %) |") in text
    assert "`04b`'s shipped improved student: validation" in text
    metrics["student_kd"]["run"]["augmentation"] = {"flip": True, "translate": 0.07}
    assert "students of `04` trained with: flip + shifts up to 0.07, batch" in reproduce.render_augmentation_pilot(metrics)


def test_teacher_ensemble_section_ranks_single_models_and_the_best_averages():
    metrics = reproduce.load_metrics(REPORT)
    assert reproduce.render_teacher_ensemble({k: v for k, v in metrics.items() if k != "teacher_ensemble"}) == ""
    metrics["teacher_ensemble"] = {"n_val": 5000, "models": {"a": "a.pt", "b": "b.pt", "c": "c.pt", "student": "s.pt"},
                                   "arch": {"a": "resnet50", "b": "resnet50", "c": "resnet50_stride1", "student": "student_gap"},
                                   "val_accuracy": {"a": 0.94, "b": 0.93, "c": 0.92, "student": 0.935, "a + student": 0.97,
                                                    "b + student": 0.96, "c + student": 0.955, "a + b": 0.90, "a + c": 0.89}}
    metrics["teacher_ensemble"].update(n_train_checked=5000, train_label_probability={
        combo: 0.9 + i / 1000 for i, combo in enumerate(metrics["teacher_ensemble"]["val_accuracy"])})
    text = reproduce.render_teacher_ensemble(metrics)
    rows = [line.rsplit(" | ", 1)[0] + " |" for line in text.splitlines() if line.startswith("| ") and "%" in line]
    assert rows == ["| a + student | 97.00 % |", "| b + student | 96.00 % |", "| c + student | 95.50 % |",
                    "| a | 94.00 % |", "| student | 93.50 % |", "| b | 93.00 % |", "| c | 92.00 % |",
                    "| a + b | 90.00 % |"]  # single models, the best three averages, the best of teachers only
    assert "| a + student | 97.00 % | 90.40 % |" in text and "first 5,000 training images" in text


def test_ensemble_kd_table_sets_each_seed_beside_the_same_seeds_students():
    metrics = reproduce.load_metrics(REPORT)
    metrics["student_kd"]["run"]["seed"] = 0
    config = metrics["student_kd"]["run"]["config"]
    soft = {"members": ["checkpoints/teacher_resnet50.pt", "checkpoints/student_improved.pt"],
            "val_accuracy": 0.95, "test_accuracy": 0.945}

    def ensemble_run(val, test, **changes):
        return {"student_kd": {"run": {"config": {**config, **changes}, "teacher_sha256": "e" * 64},
                               "val_accuracy": val, "test_accuracy": test,
                               "soft_targets": soft}}
    metrics["seeds"] = {}
    metrics["ensemble"] = {0: ensemble_run(0.941, 0.936), 1: ensemble_run(0.942, 0.937, seed=1)}
    table = reproduce.ensemble_kd_table(metrics)
    assert table["n_complete"] == 1 and "scratch_test" not in table["rows"][1]  # seed 1's 04 students are missing
    row = table["rows"][0]
    assert row["teacher_test"] == metrics["student_kd"]["test_accuracy"]
    assert abs(row["ensemble_minus_scratch_test"] - (0.936 - metrics["student_scratch"]["test_accuracy"])) < 1e-12
    text = reproduce.render_ensemble_kd(metrics)
    assert "| 0 | 95.00 % / 94.50 % | 94.10 % | 93.60 % |" in text and "| 1 | 95.00 % / 94.50 % | 94.20 % | 93.70 % | — | — | — |" in text
    assert "mean ± std" not in text and "`checkpoints/student_improved.pt`" in text
    assert "**Seed 0, 1 learnt from other versions" in text  # not the shipped pair's SHA-256s
    shipped = "+".join([metrics["teacher_evaluation"]["checkpoint_sha256"], metrics["student_improved"]["checkpoint_sha256"]])
    for run in metrics["ensemble"].values():
        run["student_kd"]["run"]["teacher_sha256"] = shipped
    assert "other versions" not in reproduce.render_ensemble_kd(metrics)
    metrics["teacher_ensemble"] = {"n_train_checked": 5000, "models": {"shipped": soft["members"][0], "improved": soft["members"][1]},
                                   "train_label_probability": {"shipped": 0.94, "improved": 0.97, "shipped + improved": 0.955}}
    assert ("the ensemble gives the label 95.50 % of its probability on average, the teacher alone 94.00 %"
            in reproduce.render_ensemble_kd(metrics))
    metrics["ensemble"][0]["student_kd"]["run"]["config"] = {**config, "epochs": 1}  # trained otherwise: no baseline
    assert reproduce.ensemble_kd_table(metrics)["n_complete"] == 0
    del metrics["ensemble"]
    assert reproduce.render_ensemble_kd(metrics) == ""


def test_out_of_fold_section_shows_the_sources_and_the_students_beside_04():
    metrics = reproduce.load_metrics(REPORT)
    assert reproduce.render_out_of_fold({k: v for k, v in metrics.items() if k != "out_of_fold_targets"}) == ""
    share = lambda acc, prob: {"accuracy": acc, "label_probability": prob}  # noqa: E731
    metrics["out_of_fold_targets"] = {
        "teacher_sha256": metrics["teacher_evaluation"]["checkpoint_sha256"], "n_train": 55000, "folds": 5,
        "fold_config": {"epochs": 15}, "fold_val_accuracy": [0.93, 0.935, 0.94, 0.93, 0.93],
        "student_config": metrics["student_kd"]["run"]["config"],
        "train_images": {"teacher": share(0.97, 0.94), "out-of-fold": share(0.93, 0.88),
                         "teacher + out-of-fold": share(0.95, 0.91)},
        "students": {"out-of-fold": {"best_val_accuracy": 0.9421, "best_epoch": 44}}}
    text = reproduce.render_out_of_fold(metrics)
    assert "| out-of-fold | 93.00 % | 88.00 % |" in text and "| teacher | 97.00 % | 94.00 % |" in text
    assert "| out-of-fold | 94.21 % (epoch 44) |" in text and "55,000 training" in text
    assert f"the same settings) | {reproduce.pct(metrics['student_kd']['val_accuracy'])} |" in text
    metrics["out_of_fold_targets"]["student_config"] = {**metrics["student_kd"]["run"]["config"], "epochs": 1}
    assert "the same settings" not in reproduce.render_out_of_fold(metrics)  # no reference trained otherwise


def test_stronger_teacher_section_appears_with_both_pilot_records():
    metrics = reproduce.load_metrics(REPORT)
    metrics.pop("pilots", None)
    assert reproduce.render_stronger_teacher(metrics) == ""
    teacher = {"run": {"augmentation": {"flip": True, "translate": 0.0}, "config": {"precision": "bfloat16", "lr": 0.01},
                       "epochs": 12, "best_epoch": 11, "train_seconds": 3200},
               "history": [{"train_accuracy": 0.95}, {"train_accuracy": 0.9977}],
               "val_accuracy": 0.9450, "test_accuracy": 0.9400, "checkpoint_sha256": "abc"}
    student = {"teacher_sha256": "abc", "variants": {"flip": {"config": {"epochs": 50}, "best_val_accuracy": 0.9420,
                                                             "best_epoch": 44}}}
    metrics["pilots"] = {"teacher_stage5": teacher}
    assert reproduce.render_stronger_teacher(metrics) == ""  # the teacher without its student says nothing yet
    metrics["pilots"]["kd_from_teacher_stage5"] = student
    text = " ".join(reproduce.render_stronger_teacher(metrics).split())
    assert "with flip as its augmentation" in text and "bfloat16 training, 12 epochs at peak learning rate 0.01 (53 min)" in text
    assert "best validation 94.50 % at epoch 11 (the shipped teacher: 94.04 %" in text
    assert "in its last epoch it got 99.77 % of its augmented training images right" in text
    assert "distilled from the fifth stage with `04`'s recipe (50 epochs, seed 0): best validation 94.20 % at epoch 44" in text
    student["teacher_sha256"] = "other"
    assert "distilled from **another teacher**" in reproduce.render_stronger_teacher(metrics)


def test_pilot_records_load_by_file_name(tmp_path):
    (tmp_path / "metrics" / "pilots").mkdir(parents=True)
    (tmp_path / "metrics" / "pilots" / "teacher_stage5.json").write_text('{"val_accuracy": 0.9}')
    (tmp_path / "metrics" / "data.json").write_text("{}")
    assert reproduce.load_metrics(tmp_path) == {"data": {}, "pilots": {"teacher_stage5": {"val_accuracy": 0.9}}}
