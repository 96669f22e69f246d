"""Do the students train as well in bfloat16 autocast as in float32, on a CPU with bfloat16 hardware? Validation only.

    python experiments/student_bfloat16.py [seed ...]       # default: seeds 0 1 2

Trains the homework's StudentNet from scratch with 04's settings (flip, AdamW 1e-3, ReduceLROnPlateau, 50 epochs,
torch.compile), in bfloat16, once per seed, and sets each run beside the float32 run of the same seed that
`04_distillation` recorded (report/metrics: the seed 0 student and seeds/seed{N}). Writes the best validation
accuracy and the seconds per epoch of both; the test set is not read. Resumable (runs under ~/.cache/kd-fashion).
"""
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import kd_helpers as kd  # noqa: E402

OUT = kd.project_path("experiments/results/student_bfloat16.json")
seeds = [int(s) for s in sys.argv[1:]] or [0, 1, 2]
device = kd.default_device("auto")
if kd.resolve_precision("auto", device) != "bfloat16":
    sys.exit(f"{device} has no bfloat16 hardware: this comparison means nothing here")
data = kd.fashion_mnist_splits()
rows = []
for seed in seeds:
    base = kd.project_path("report/metrics/student_scratch.json" if seed == 0
                           else f"report/metrics/seeds/seed{seed}/student_scratch.json")
    recorded = json.loads(base.read_text())
    config = dict(epochs=50, batch_size=128, lr=1e-3, optimizer="adam", schedule="plateau", factor=0.5,
                  patience=2, augmentation=kd.AUGMENTATIONS["flip"], seed=seed, precision="bfloat16")
    _, result = kd.train_student(data, config, prefix="student_scratch", run_dir=kd.runs_dir() / "experiments",
                                 device=device, compile=True, progress=False)
    per_epoch = lambda h: statistics.median(e["seconds"] for e in h)  # noqa: E731
    rows.append({"seed": seed, "val_accuracy_float32": recorded["val_accuracy"],
                 "val_accuracy_bfloat16": result["best_val_accuracy"], "best_epoch_bfloat16": result["best_epoch"],
                 "seconds_per_epoch_float32": per_epoch(recorded["history"]),
                 "seconds_per_epoch_bfloat16": per_epoch(result["history"]),
                 "float32_run": {k: recorded["run"].get(k) for k in ("cpu", "git_commit")}})
    print(rows[-1], flush=True)
diffs = [r["val_accuracy_bfloat16"] - r["val_accuracy_float32"] for r in rows]
summary = {"bfloat16_minus_float32_mean": statistics.mean(diffs),
           "bfloat16_minus_float32_std": statistics.stdev(diffs) if len(diffs) > 1 else None,
           "speedup": statistics.mean(r["seconds_per_epoch_float32"] / r["seconds_per_epoch_bfloat16"] for r in rows)}
print(summary)
kd.write_json({"seeds": rows, **summary, "n_val": len(data["val_labels"]), "run": kd.run_info()}, OUT)
