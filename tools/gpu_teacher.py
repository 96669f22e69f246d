"""The teacher (00_train_teacher) on a lent GPU, in one call, on a machine without Jupyter.

    python3 tools/gpu_teacher.py OUT [name=value ...]

runs the notebook's code cells in order in one namespace, its parameters cell first and then the
name=value overrides (Python literals), with the data from data/ (carry the four IDX files there),
the run's resumable state in /tmp, and the outputs in OUT: the executed notebook (each cell's printed
output), teacher_training.json, and the float16 checkpoint split into parts of at most 15 MB
(teacher_resnet50.pt.part0, .part1, ...: the device tool returns files of up to 16 MB) with its
SHA-256. Back here:

    cat OUT/teacher_resnet50.pt.part* > checkpoints/teacher_resnet50.pt && sha256sum -c OUT/teacher_resnet50.pt.sha256

A CPU check with tiny settings: python3 tools/gpu_teacher.py /tmp/out arch='"resnet50"' epochs=1 max_batches=2
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PART = 15 * 1024 * 1024


def run_cells(notebook: Path, overrides: dict) -> dict:
    """Execute the code cells of `notebook` in one namespace, `overrides` applied after the parameters cell;
    returns the notebook with each code cell's printed output as a stream output (an executed record)."""
    nb = json.loads(notebook.read_text())
    namespace: dict = {"__name__": "__main__"}
    for count, cell in enumerate((c for c in nb["cells"] if c["cell_type"] == "code"), 1):
        source = "".join(cell["source"])
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(source, f"{notebook.name}, cell {count}", "exec"), namespace)  # noqa: S102 - our own notebook
            if "parameters" in cell["metadata"].get("tags", []):
                namespace.update(overrides)
                print("overridden:", overrides)
        sys.stdout.write(printed.getvalue())
        cell["execution_count"] = count
        cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": printed.getvalue()}] if printed.getvalue() else []
    return nb


def main(argv: list[str]) -> int:
    out = Path(argv[0]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides = {"data_dir": str(ROOT / "data"), "progress": False, "checkpoint": str(out / "teacher_resnet50.pt"),
                 "metrics_dir": str(out), "run_dir": os.environ.get("KD_RUNS_DIR", "/tmp/kd-runs")}
    for item in argv[1:]:
        name, value = item.split("=", 1)
        overrides[name] = ast.literal_eval(value)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    record = run_cells(ROOT / "notebooks" / "00_train_teacher.ipynb", overrides)
    (out / "00_train_teacher.ipynb").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    checkpoint = out / "teacher_resnet50.pt"
    data = checkpoint.read_bytes()
    for i in range(0, len(data), PART):
        (out / f"teacher_resnet50.pt.part{i // PART}").write_bytes(data[i:i + PART])
    checkpoint.unlink()
    print(f"{out}: {len(data) / 1e6:.1f} MB in {(len(data) + PART - 1) // PART} parts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
