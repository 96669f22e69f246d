"""The runner's plan: which notebooks each profile executes, with which parameters."""
import ast
import json
from pathlib import Path

import pytest

import reproduce


def test_main_profile_is_the_headline_and_skips_a_shipped_teacher(monkeypatch, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "teacher_resnet50.pt").touch()
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    steps = reproduce.full_steps([*reproduce.TEACHER, *reproduce.MAIN], train_teacher=False)
    assert [record for _, record, _ in steps] == ["01_data_exploration", "02_teacher_evaluation", "03_student_design",
                                                  "04_distillation", "04b_improved_student", "05_beyond_the_baseline"]
    for _, _, params in steps:  # the real run writes the report's paths, not the notebooks' scratch defaults
        assert params.get("metrics_dir") == "report/metrics"


def test_the_teacher_runs_once_when_asked_or_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    steps = reproduce.full_steps(["00_train_teacher", "02_teacher_evaluation"], train_teacher=False)
    assert [(name, record) for name, record, _ in steps] == [("00_train_teacher", "00_train_teacher"),
                                                              ("02_teacher_evaluation", "02_teacher_evaluation")]
    assert steps[0][2]["checkpoint"] == "checkpoints/teacher_resnet50.pt"


def notebook_defaults(name: str) -> dict:
    """The literal values assigned in a notebook's `parameters` cell."""
    cells = json.loads((reproduce.ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", []))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(source).body}


def test_the_teacher_recipe_is_one_run_from_random_weights():
    defaults = notebook_defaults("00_train_teacher")
    assert "init_from" not in defaults and defaults["arch"] == "resnet50_stride1" and defaults["epochs"] >= 15
    assert defaults["run_dir"] is None  # resumable state outside the repository


def test_every_record_names_a_notebook_and_sets_only_its_parameters():
    for record, (notebook, params) in reproduce.RECORDS.items():
        assert set(params) <= set(notebook_defaults(notebook)), record


def test_full_profile_adds_seeds_the_scratch_gap_student_and_the_grid(monkeypatch, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "teacher_resnet50.pt").touch()
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    records = [r for _, r, _ in reproduce.full_steps([*reproduce.MAIN, *reproduce.EXTRA], train_teacher=False)]
    assert records[:6] == list(reproduce.MAIN)
    assert [f"04_distillation_seed{s}" for s in (1, 2, 3, 4)] == [r for r in records if "seed" in r and "cached" not in r]
    assert [f"04_distillation_cached_seed{s}" for s in (1, 2, 3, 4)] == [r for r in records if "cached_seed" in r]
    for name in ("04_distillation_cached", *(f"04_distillation_cached_seed{s}" for s in (1, 2, 3, 4))):
        params = reproduce.EXTRA[name][1]   # the reference: cached clean logits, flip only; nothing shipped
        assert params["teacher_mode"] == "cached" and params["augmentation"] == "flip" and params["students"] == ["kd"]
        assert params["metrics_name"] == "student_kd_cached.json" and params["checkpoint_dir"].startswith("runs/")
    for s in (1, 2, 3, 4):  # each seed's students ship under checkpoints/seeds/, their metrics go to the report
        params = reproduce.EXTRA[f"04_distillation_seed{s}"][1]
        assert params["seed"] == s and params["checkpoint_dir"] == "checkpoints/seeds"
        assert params["checkpoint_name"].format(name="kd", seed=s) == f"kd_seed{s}.pt"
        assert params["metrics_dir"] == f"report/metrics/seeds/seed{s}"
    assert reproduce.EXTRA["04b_improved_student_scratch"][1]["students"] == ["scratch"]


def test_a_notebook_in_progress_has_a_file_of_its_own_and_its_record_appears_only_when_done(monkeypatch, tmp_path):
    import os
    import papermill
    seen = []

    def execute(source, running, **kwargs):
        seen.append(Path(running))
        assert not (tmp_path / "04_distillation.ipynb").exists()   # no record while it runs
        Path(running).write_text("{}")
    monkeypatch.setattr(papermill, "execute_notebook", execute)
    reproduce.run_notebook("04_distillation", tmp_path / "04_distillation.ipynb", {})
    assert seen[0].name == f"04_distillation.{os.getpid()}.ipynb"   # another process's run of 04 has another file
    assert (tmp_path / "04_distillation.ipynb").read_text() == "{}" and not seen[0].exists()


def _tiny_repo(path, recipe):
    import subprocess
    path.mkdir()
    (path / "Makefile").write_text(f"test:\n\t{recipe}\n")
    for args in (["init", "-q"], ["add", "Makefile"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(path), *args], check=True)
    return path


def test_a_fresh_clone_is_timed_and_recorded_with_its_commit_and_test_count(tmp_path):
    import runpy
    tool = runpy.run_path(str(reproduce.ROOT / "tools" / "time_fresh_clone.py"))
    # the clone runs with an empty runs folder of its own, not the user's: nothing of an earlier run is replayed
    recipe = "@test -f Makefile && test -n \"$$KD_RUNS_DIR\" && test ! -e \"$$KD_RUNS_DIR\" && test \"$$KD_RUNS_DIR\" != \"$$HOME/.cache/kd-fashion\" && echo '3 passed, 1 skipped in 0.1s'"
    repo = _tiny_repo(tmp_path / "repo", recipe)
    record = tool["measure"]("test", repo, out=tmp_path / "fresh_clone_test.json")
    assert record["tests_passed"] == 3 and len(record["commit"]) == 40 and record["minutes"] >= 0
    assert json.loads((tmp_path / "fresh_clone_test.json").read_text()) == record
    line = reproduce.render_times({"fresh_clone_test": record})
    assert "`make test` on a fresh clone (venv, pinned wheels, kernel, 3 tests)" in line
    assert record["commit"][:7] in line and "make reproduce" not in line


def test_a_failing_command_is_not_timed(tmp_path):
    import runpy
    tool = runpy.run_path(str(reproduce.ROOT / "tools" / "time_fresh_clone.py"))
    repo = _tiny_repo(tmp_path / "repo", "@echo 'E   assert 1 == 2' && exit 1")
    with pytest.raises(RuntimeError, match=r"make test failed \(exit 2\)[\s\S]*assert 1 == 2"):
        tool["measure"]("test", repo, out=tmp_path / "fresh_clone_test.json")
    assert not (tmp_path / "fresh_clone_test.json").exists()


def test_the_deviations_table_says_when_04_does_not_run_what_the_grid_chose():
    flip = {"flip": True, "degrees": 0.0, "translate": 0.0, "scale": [1.0, 1.0]}
    m = {"student_kd": {"run": {"config": {"temperature": 1.0, "alpha": 0.3, "epochs": 50}}},
         "student_scratch": {"run": {"augmentation": flip}},
         "kd_sweep": {"temperatures": [1.0, 2.0, 4.0], "alphas": [0.5, 0.9], "epochs": 30, "teacher_mode": "views",
                      "best": {"temperature": 2.0, "alpha": 0.9, "val_accuracy": 0.94},
                      "scratch_val_accuracy": {"flip": 0.931, "homework": 0.935}}}
    evidence, basis = reproduce.grid_evidence(m)
    assert "3 x 2 settings, 30 epochs each, views soft targets" in evidence
    assert basis.startswith("validation;") and "short budget" not in basis and "T = 2, alpha = 0.9" in basis
    scratch, scratch_basis = reproduce.scratch_evidence(m)
    assert "flip 93.10 %, homework 93.50 %" in scratch and "`06`'s best is homework" in scratch_basis
    m["student_kd"]["run"]["config"].update(temperature=2.0, alpha=0.9)
    m["kd_sweep"]["scratch_val_accuracy"]["flip"] = 0.94
    assert reproduce.grid_evidence(m)[1] == "validation" and reproduce.scratch_evidence(m)[1] == "validation"
    del m["kd_sweep"]
    assert reproduce.grid_evidence(m) == ("—", "not tuned") and reproduce.scratch_evidence(m) == ("flip", "—")


def test_the_deviations_table_weighs_cached_views_against_clean_cached_logits_on_validation():
    homework = {"flip": True, "degrees": 10.0, "translate": 0.1, "scale": [0.9, 1.1]}
    config = {"temperature": 2.0, "alpha": 0.9, "epochs": 50}

    def student(mode, val, seed, augmentation=homework):
        return {"val_accuracy": val, "test_accuracy": val - 0.005,
                "run": {"teacher_mode": mode, "augmentation": augmentation, "teacher_sha256": "T", "seed": seed,
                        "config": {**config, "seed": seed}}}

    def arms(seed, views, cached):
        return {"student_kd": student("views", views, seed), "student_scratch": student(None, 0.93, seed),
                "student_kd_cached": student("cached", cached, seed, {"flip": True})}

    m = {"teacher_evaluation": {"checkpoint_sha256": "T"}, **arms(0, 0.945, 0.940)}
    here, evidence, basis = reproduce.kd_augmentation_evidence(m)
    assert here.startswith("flip, ±10° rotation, ±10 % shift, ×0.9-1.1 scale, on cached views")
    assert "not yet run" in evidence and basis == "—"   # one seed: no comparison yet
    m["seeds"] = {1: arms(1, 0.947, 0.941), 2: arms(2, 0.943, 0.942)}
    here, evidence, basis = reproduce.kd_augmentation_evidence(m)
    assert "over 3 seeds, validation: views 94.50 % ± 0.20, clean cached logits with the flip 94.10 % ± 0.10" in evidence
    assert basis == "validation"
    m["seeds"][2] = arms(2, 0.943, 0.960)   # cached better on validation: said, not hidden
    assert "cached logits with the flip scored higher" in reproduce.kd_augmentation_evidence(m)[2]
    m["student_kd"]["run"]["teacher_mode"] = "cached"
    assert "2-pixel shifts" in reproduce.kd_augmentation_evidence(m)[1]


def test_a_new_teacher_keeps_the_evaluation_of_the_one_before(monkeypatch, tmp_path):
    import kd_helpers
    metrics, checkpoint = tmp_path / "report" / "metrics", tmp_path / "checkpoints" / "teacher_resnet50.pt"
    metrics.mkdir(parents=True)
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"the old teacher")
    evaluation = {"checkpoint_sha256": kd_helpers.sha256_of(checkpoint), "test_accuracy": 0.935}
    (metrics / "teacher_evaluation.json").write_text(json.dumps(evaluation))
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    reproduce.keep_previous_teacher_evaluation()   # the same teacher evaluated again: nothing to keep
    assert not (metrics / "teacher_evaluation_previous.json").exists()
    checkpoint.write_bytes(b"a new teacher")
    reproduce.keep_previous_teacher_evaluation()
    assert json.loads((metrics / "teacher_evaluation_previous.json").read_text()) == evaluation


def test_each_records_time_keeps_the_cpu_it_ran_on(monkeypatch, tmp_path):
    import kd_helpers
    metrics = reproduce.load_metrics()   # the real report's, before ROOT moves
    (tmp_path / "report" / "executed").mkdir(parents=True)
    for record in ("03_student_design", "04_distillation"):
        (tmp_path / "report" / "executed" / f"{record}.ipynb").touch()
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    monkeypatch.setattr(kd_helpers, "cpu_name", lambda: "CPU A")
    reproduce.record_runtime("03_student_design", 6.0)
    monkeypatch.setattr(kd_helpers, "cpu_name", lambda: "CPU B")
    reproduce.record_runtime("04_distillation", 3000.0)
    reproduce.record_runtime("06_kd_variants", 60.0)   # no record of it: not kept
    runtimes = json.loads((tmp_path / "report" / "metrics" / "runtimes.json").read_text())
    assert runtimes["seconds"] == {"03_student_design": 6.0, "04_distillation": 3000.0}
    assert runtimes["cpu"] == {"03_student_design": "CPU A", "04_distillation": "CPU B"}
    runtimes["seconds"]["05_beyond_the_baseline"] = 120.0   # timed before CPUs were kept
    table = reproduce.render_reproduction({**metrics, "runtimes": runtimes})
    assert "| `03_student_design` | 0.1 min | CPU A |" in table and "| `04_distillation` | 50.0 min | CPU B |" in table
    assert "| `05_beyond_the_baseline` | 2.0 min | not recorded |" in table
