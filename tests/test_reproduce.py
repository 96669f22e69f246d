"""The runner's plan: which notebooks a full run executes, with which parameters."""
import ast
import json

import reproduce


def test_full_run_skips_the_teacher_when_it_is_shipped(monkeypatch, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "teacher_resnet50.pt").touch()
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    steps = reproduce.full_steps(reproduce.NOTEBOOKS, train_teacher=False)
    assert [record for _, record, _ in steps] == reproduce.NOTEBOOKS[1:]


def test_retraining_the_teacher_runs_every_stage_in_order(monkeypatch, tmp_path):
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    steps = reproduce.full_steps(["00_train_teacher", "02_teacher_evaluation"], train_teacher=True)
    assert [(name, record) for name, record, _ in steps] == [
        ("00_train_teacher", "00_train_teacher_default_stem"), ("00_train_teacher", "00_train_teacher_stage2"),
        ("00_train_teacher", "00_train_teacher_stage3"), ("00_train_teacher", "00_train_teacher"),
        ("02_teacher_evaluation", "02_teacher_evaluation")]
    earlier = [params for _, _, params in steps[:3]]
    assert earlier[0]["arch"] == "resnet50" and earlier[0]["init_from"] is None
    for previous, stage in zip(earlier, earlier[1:]):
        assert stage["init_from"] == previous["checkpoint"]  # each stage starts where the previous one ended
    assert "checkpoints/teacher_resnet50.pt" not in [stage["checkpoint"] for stage in earlier]


def notebook_defaults(name: str) -> dict:
    """The literal values assigned in a notebook's `parameters` cell."""
    cells = json.loads((reproduce.ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", []))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(source).body}


def test_the_last_stage_is_the_notebooks_defaults_and_starts_from_the_stage_before():
    defaults = notebook_defaults("00_train_teacher")
    assert defaults["init_from"] == reproduce.TEACHER_STAGES[-1][1]["checkpoint"]
    assert defaults["checkpoint"] == "checkpoints/teacher_resnet50.pt"


def test_a_missing_teacher_reuses_the_earlier_stages_present(monkeypatch, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "teacher_resnet50_default_stem.pt").touch()
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    steps = reproduce.full_steps(["00_train_teacher"], train_teacher=False)
    assert [record for _, record, _ in steps] == ["00_train_teacher_stage2", "00_train_teacher_stage3",
                                                  "00_train_teacher"]
    (tmp_path / "checkpoints" / "teacher_resnet50_stage2.pt").touch()
    (tmp_path / "checkpoints" / "teacher_resnet50_stage3.pt").touch()
    steps = reproduce.full_steps(["00_train_teacher"], train_teacher=False)
    assert [record for _, record, _ in steps] == ["00_train_teacher"]


def test_seed_runs_follow_04_and_keep_their_students_out_of_checkpoints(monkeypatch, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "teacher_resnet50.pt").touch()
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    records = [record for _, record, _ in reproduce.full_steps(reproduce.FULL_ORDER, train_teacher=False)]
    at = records.index("04_distillation")
    assert records[at + 1:at + 3] == ["04_distillation_seed1", "04_distillation_seed2"]
    [(name, record, params)] = reproduce.full_steps(["04_distillation_seed2"], train_teacher=False)
    assert name == "04_distillation" and params["seed"] == 2 and "split_seed" not in params
    assert params["checkpoint_dir"].startswith("runs/") and params["metrics_dir"] == "report/metrics/seeds/seed2"


def test_ensemble_runs_follow_04b_whose_student_they_learn_from(monkeypatch, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "teacher_resnet50.pt").touch()
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    records = [record for _, record, _ in reproduce.full_steps(reproduce.FULL_ORDER, train_teacher=False)]
    ensemble = [r for r in records if "ensemble" in r]
    assert ensemble == [f"04_distillation_ensemble_seed{s}" for s in (0, 1, 2)]
    assert records.index(ensemble[0]) == records.index("04b_improved_student") + 1
    [(name, _, params)] = reproduce.full_steps(["04_distillation_ensemble_seed0"], train_teacher=False)
    assert name == "04_distillation" and params["extra_teachers"] == ["checkpoints/student_improved.pt"]
    assert params["students"] == ["kd"] and params["checkpoint_dir"].startswith("runs/")
    assert params["metrics_dir"] == "report/metrics/ensemble/seed0"
