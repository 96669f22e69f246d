"""The runner's plan: which notebooks a full run executes, with which parameters."""
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
        ("00_train_teacher", "00_train_teacher"), ("02_teacher_evaluation", "02_teacher_evaluation")]
    stage1, stage2 = steps[0][2], steps[1][2]
    assert stage1["arch"] == "resnet50" and stage1["init_from"] is None
    assert stage2["init_from"] == stage1["checkpoint"]  # each stage starts where the previous one ended
    assert "checkpoints/teacher_resnet50.pt" not in (stage1["checkpoint"], stage2["checkpoint"])


def test_a_missing_teacher_reuses_the_earlier_stages_present(monkeypatch, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "teacher_resnet50_default_stem.pt").touch()
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    steps = reproduce.full_steps(["00_train_teacher"], train_teacher=False)
    assert [record for _, record, _ in steps] == ["00_train_teacher_stage2", "00_train_teacher"]
    (tmp_path / "checkpoints" / "teacher_resnet50_stage2.pt").touch()
    steps = reproduce.full_steps(["00_train_teacher"], train_teacher=False)
    assert [record for _, record, _ in steps] == ["00_train_teacher"]
