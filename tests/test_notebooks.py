"""Each notebook runs headless under papermill with quick parameters, from a foreign working directory."""
import json

import pytest

import kd_helpers as kd
import reproduce

pytestmark = pytest.mark.notebook


def outputs_text(path):
    cells = json.loads(path.read_text())["cells"]
    return "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                   for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []))


@pytest.mark.parametrize("name", reproduce.NOTEBOOKS)
def test_papermill_reads_every_parameter(name):
    """`papermill --help-notebook` lists each parameter with its comment; a line it cannot parse (an `=` in
    the comment, say) drops out of that list with a warning."""
    from papermill.translators import PythonTranslator
    path = reproduce.ROOT / "notebooks" / f"{name}.ipynb"
    cell = next(c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    source = "".join(cell["source"])
    assigned = [line.split("=")[0].strip() for line in source.splitlines() if line[:1].isalpha()]
    assert [p.name for p in PythonTranslator.inspect({"source": source})] == assigned


@pytest.mark.parametrize("name", reproduce.NOTEBOOKS)
def test_notebook_runs_quick(name, tmp_path):
    params = reproduce.quick_parameters(tmp_path)[name]
    out = tmp_path / f"{name}.ipynb"
    reproduce.run_notebook(name, out, params, cwd=tmp_path)
    text = outputs_text(out)
    if name == "03_student_design":
        assert "Total params: 95,386" in text and "matches the report's Figure 1" in text
    if name == "04_distillation":
        assert (tmp_path / "checkpoints" / "student_kd.pt").exists()
        metrics = json.loads((tmp_path / "metrics" / "student_kd.json").read_text())
        assert 0 < metrics["test_accuracy"] <= 1 and metrics["run"]["git_commit"]
    if name == "01_data_exploration":
        assert (tmp_path / "figures" / "augmentation_examples.png").exists()


def test_distillation_from_an_ensemble_records_its_members(tmp_path):
    params = {**reproduce.quick_parameters(tmp_path)["04_distillation"], "epochs": 1, "max_batches": 2,
              "students": ["kd"], "compile": False, "extra_teachers": ["checkpoints/student_improved.pt"]}
    reproduce.run_notebook("04_distillation", tmp_path / "out.ipynb", params)
    metrics = json.loads((tmp_path / "metrics" / "student_kd.json").read_text())
    members = metrics["soft_targets"]["members"]
    assert members == ["checkpoints/teacher_resnet50.pt", "checkpoints/student_improved.pt"]
    assert metrics["run"]["teacher_sha256"].split("+") == [kd.sha256_of(reproduce.ROOT / p) for p in members]
    assert metrics["soft_targets"]["val_accuracy"] > 0.9  # the two shipped models together
    assert not (tmp_path / "metrics" / "student_scratch.json").exists()


def test_wrong_data_dir_stops_with_the_path_and_the_remedies(tmp_path):
    import papermill
    missing = tmp_path / "no-such-folder"
    with pytest.raises(papermill.PapermillExecutionError) as err:
        reproduce.run_notebook("01_data_exploration", tmp_path / "out.ipynb",
                               {"data_dir": str(missing), "figures_dir": str(tmp_path), "metrics_dir": str(tmp_path)})
    assert str(missing) in str(err.value) and "apt-get install dataset-fashion-mnist" in str(err.value)


def test_invalid_parameter_stops_the_notebook(tmp_path):
    import papermill
    with pytest.raises(papermill.PapermillExecutionError, match="alpha=1.5"):
        reproduce.run_notebook("04_distillation", tmp_path / "out.ipynb", {"alpha": 1.5, "run_dir": str(tmp_path)})


def test_throughput_benchmark_runs_tiny(capsys, monkeypatch):
    import runpy
    from pathlib import Path
    root = Path(reproduce.__file__).parent
    monkeypatch.setattr("sys.argv", ["kd_throughput.py", "--tiny", "--workers", "0"])
    runpy.run_path(str(root / "benchmarks" / "kd_throughput.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "(c) project loop, cached teacher logits" in out and "teacher (ResNet50)" in out


def test_cached_vs_online_comparison_runs_tiny(tmp_path):
    import runpy
    from pathlib import Path
    script = runpy.run_path(str(Path(reproduce.__file__).parent / "benchmarks" / "cached_vs_online.py"))
    record = script["main"](["--tiny", "--cache-dir", str(tmp_path / "cache")])
    assert list((tmp_path / "cache").iterdir()), "the logit cache goes where --cache-dir says, not into the repository"
    assert set(record) >= {"cached", "online", "cached_minus_online_points"}
    assert all(0 <= record[m]["best_val_accuracy"] <= 1 for m in ("cached", "online"))


def test_int8_scheme_comparison_runs_tiny():
    import runpy
    from pathlib import Path
    script = runpy.run_path(str(Path(reproduce.__file__).parent / "benchmarks" / "int8_schemes.py"))
    record = script["main"](["--tiny"])
    assert set(record["schemes"]) == {"float32", "U8S8", "U8S8, reduce_range", "U8U8 (shipped)", "S8S8"}
    assert record["schemes"]["float32"]["agreement"] == 1.0 and record["n_val"] == 256
    assert all(0 <= row["val_accuracy"] <= 1 for row in record["schemes"].values())


def test_teacher_headroom_runs_tiny():
    import runpy
    from pathlib import Path
    script = runpy.run_path(str(Path(reproduce.__file__).parent / "benchmarks" / "teacher_headroom.py"))
    record = script["main"](["--tiny", "--students", "kd"])
    assert record["n_val"] == 256 and set(record["students"]) == {"kd"}
    counts = record["students"]["kd"]
    wrong_teacher = round(256 * (1 - record["teacher_val_accuracy"]))
    assert counts["student_only"] + counts["both_wrong"] == wrong_teacher  # the counts partition the errors
    assert 0 < record["teacher_train_label_probability"] <= 1


def test_augmentation_pilot_runs_tiny(tmp_path):
    import runpy
    from pathlib import Path
    script = runpy.run_path(str(Path(reproduce.__file__).parent / "benchmarks" / "augmentation_pilot.py"))
    record = script["main"](["--tiny", "--variants", "flip_shift", "flip", "flip_100_epochs_patience_4",
                             "--run-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")])
    assert set(record["variants"]) == {"flip_shift", "flip", "flip_100_epochs_patience_4"} and record["n_train"] == 512
    long = record["variants"]["flip_100_epochs_patience_4"]["config"]
    assert long["epochs"] == 1 and long["patience"] == 4  # --tiny trains one epoch whatever the variant says
    assert record["variants"]["flip_shift"]["config"]["augmentation"]["translate"] == 0.07
    assert record["variants"]["flip"]["config"]["augmentation"]["translate"] == 0.0
    assert all(0 <= v["best_val_accuracy"] <= 1 and 0 <= v["train_accuracy_eval_mode"] <= 1
               for v in record["variants"].values())
    assert list((tmp_path / "runs").glob("pilot_flip_shift_seed0_*.log")), "runs go where --run-dir says"


def test_teacher_ensemble_runs_tiny():
    import runpy
    from pathlib import Path
    script = runpy.run_path(str(Path(reproduce.__file__).parent / "benchmarks" / "teacher_ensemble.py"))
    record = script["main"](["--tiny", "--models", "stage 4 (shipped)", "improved student"])
    assert record["n_val"] == 256
    assert set(record["val_accuracy"]) == {"stage 4 (shipped)", "improved student", "stage 4 (shipped) + improved student"}
    assert all(0 <= acc <= 1 for acc in record["val_accuracy"].values())
    assert record["arch"] == {"stage 4 (shipped)": "resnet50_stride1", "improved student": "student_gap"}
    assert record["n_train_checked"] == 256 and set(record["train_label_probability"]) == set(record["val_accuracy"])
    assert all(0.5 < p <= 1 for p in record["train_label_probability"].values())  # shipped models fit their training images


def test_out_of_fold_benchmark_runs_tiny(tmp_path):
    import runpy
    from pathlib import Path
    script = runpy.run_path(str(Path(reproduce.__file__).parent / "benchmarks" / "out_of_fold_targets.py"))
    common = ["--tiny", "--run-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    assert script["main"]([*common, "--folds-only", "2"]) == {}          # one fold now, the rest later
    assert len(list((tmp_path / "runs").glob("oof_gap_fold*.log"))) == 1
    record = script["main"](common)
    assert record["folds"] == 2 and len(record["fold_val_accuracy"]) == 2 and record["n_train"] == 512
    assert set(record["students"]) == {"out-of-fold", "teacher + out-of-fold"}
    shares = record["train_images"]
    assert set(shares) == {"teacher", "out-of-fold", "teacher + out-of-fold"}
    assert all(0 < s["label_probability"] <= 1 and 0 <= s["accuracy"] <= 1 for s in shares.values())
    assert len(list((tmp_path / "runs").glob("oof_student_seed0_*.log"))) == 1
