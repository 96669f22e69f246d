"""Each notebook runs headless under papermill with quick parameters, from a foreign working directory."""
import json

import pytest

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


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """One runs folder for the students' quick runs: 04b finds the teacher logits 04 cached, as a user's would
    (when the two run in the same pytest-xdist worker; otherwise 04b caches them itself)."""
    return tmp_path_factory.mktemp("runs")


@pytest.mark.parametrize("name", reproduce.NOTEBOOKS)
def test_notebook_runs_quick(name, tmp_path, shared_runs):
    params = reproduce.quick_parameters(tmp_path)[name]
    if name in ("04_distillation", "04b_improved_student"):
        params["run_dir"] = str(shared_runs)
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
    if name == "06_kd_variants":   # the best setting again on fewer views of each image, and the whole cache's
        sweep = json.loads((tmp_path / "metrics" / "kd_sweep.json").read_text())
        assert set(sweep["view_counts_val_accuracy"]) == {"1", "2"} and set(sweep["view_augmentations_val_accuracy"]) == {"homework_mix"}
    if name == "02_teacher_evaluation":
        metrics = json.loads((tmp_path / "metrics" / "teacher_evaluation.json").read_text())
        assert set(metrics["training_images"]) == {"clean", "homework views", "mixed 0.7 / 0.3"}


def test_distillation_from_cached_views(tmp_path):
    params = {**reproduce.quick_parameters(tmp_path)["04_distillation"], "epochs": 1, "max_batches": 2,
              "students": ["kd"], "compile": False, "teacher_mode": "views", "views": 2, "n_train": 256,
              "augmentation": "homework"}
    reproduce.run_notebook("04_distillation", tmp_path / "out.ipynb", params)
    metrics = json.loads((tmp_path / "metrics" / "student_kd.json").read_text())
    assert metrics["run"]["teacher_mode"] == "views" and metrics["run"]["method"] == "kd, views soft targets"
    assert list((tmp_path / "runs" / "cache").glob("views_*.pt"))
    assert "soft targets (512, 10)" in outputs_text(tmp_path / "out.ipynb")   # 2 views of 256 images


WRITTEN = {"figures_dir", "metrics_dir", "checkpoint_dir", "int8_dir", "checkpoint", "run_dir"}


@pytest.mark.parametrize("name", reproduce.NOTEBOOKS)
def test_a_notebook_run_by_hand_writes_only_where_git_ignores(name):
    """Exploring in JupyterLab leaves `git status` clean: every output path a notebook writes to defaults to an
    ignored folder; reproduce.py passes the report's paths."""
    import ast
    import subprocess
    path = reproduce.ROOT / "notebooks" / f"{name}.ipynb"
    cell = next(c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    defaults = {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse("".join(cell["source"])).body}
    for key in WRITTEN & set(defaults):
        if defaults[key] is None:  # 00's run_dir: outside the repository
            continue
        written = defaults[key] if key == "checkpoint" else f"{defaults[key]}/a_file"  # a file it would write
        ignored = subprocess.run(["git", "-C", str(reproduce.ROOT), "check-ignore", "-q", "--no-index", written])
        assert ignored.returncode == 0, f"{name}: {key} = {defaults[key]!r} is not ignored by git"


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
    # eager: torch.compile costs a minute here per loop; a unit test compiles the student once
    monkeypatch.setattr("sys.argv", ["kd_throughput.py", "--tiny", "--workers", "0", "--no-compile"])
    runpy.run_path(str(root / "benchmarks" / "kd_throughput.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "(c) project loop, cached teacher logits" in out and "(d) project loop, cached views" in out
    assert "(e) project loop, cached views mixed with a partner image" in out
    assert "teacher (ResNet50)" in out


def test_int8_scheme_comparison_runs_tiny():
    import runpy
    from pathlib import Path
    script = runpy.run_path(str(Path(reproduce.__file__).parent / "benchmarks" / "int8_schemes.py"))
    record = script["main"](["--tiny"])
    assert set(record["schemes"]) == {"float32", "U8S8", "U8S8, reduce_range", "U8U8 (shipped)", "S8S8"}
    assert record["schemes"]["float32"]["agreement"] == 1.0 and record["n_val"] == 256
    assert all(0 <= row["val_accuracy"] <= 1 for row in record["schemes"].values())


def test_gpu_teacher_tool_runs_00_without_jupyter_and_returns_the_checkpoint_in_parts(tmp_path):
    import hashlib
    import os
    import subprocess
    import sys
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(reproduce.ROOT / "tools" / "gpu_teacher.py"), str(out), "data_dir=None",
                    'arch="student_net"', "epochs=1", "max_batches=2", "n_val=500", "n_test=500"], check=True, timeout=600,
                   env={**os.environ, "KD_RUNS_DIR": str(tmp_path / "runs")})
    parts = sorted(out.glob("teacher_resnet50.pt.part*"))
    assert parts and all(p.stat().st_size <= 15 * 1024 * 1024 for p in parts)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    assert (out / "teacher_resnet50.pt.sha256").read_text().split()[0] == digest
    record = json.loads((out / "00_train_teacher.ipynb").read_text())
    assert "test after float16 round trip" in "".join(
        o["text"] for c in record["cells"] if c["cell_type"] == "code" for o in c["outputs"])
    assert json.loads((out / "teacher_training.json").read_text())["run"]["arch"] == "student_net"



@pytest.mark.parametrize("name", reproduce.NOTEBOOKS)
def test_every_cell_has_its_own_id(name):
    """nbformat 4.5 wants an id on each cell; a cell added by hand or by a script without one only warns now."""
    cells = json.loads((reproduce.ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    ids = [c.get("id") for c in cells]
    assert None not in ids and len(set(ids)) == len(ids)
