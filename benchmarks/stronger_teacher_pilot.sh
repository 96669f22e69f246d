#!/usr/bin/env bash
# Does a stronger teacher make a better student? A fifth stage of 00 (from the shipped teacher, the flip as
# its only augmentation, bfloat16 autocast, 12 epochs), then 04's KD student distilled from it (seed 0,
# validation only). About 55 + 25 min on 2 CPU cores; both steps resume from runs/teacher_stage5/ when
# interrupted, and a finished teacher is not run again (re-saving it would change its SHA-256, which names
# the student's run and logit cache). Writes report/metrics/pilots/teacher_stage5.json (00's metrics; the
# checkpoint stays in runs/) and report/metrics/pilots/kd_from_teacher_stage5.json; reproduce.py
# --report-only shows them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/teacher_stage5
mkdir -p "$out" report/metrics/pilots
[ -f "$out/teacher_resnet50_stage5.pt" ] || .venv/bin/papermill notebooks/00_train_teacher.ipynb "$out/00_train_teacher_stage5.ipynb" --cwd notebooks \
  -p init_from checkpoints/teacher_resnet50.pt -p epochs 12 -p lr 0.01 -p translate 0.0 -p precision bfloat16 \
  -p checkpoint "$out/teacher_resnet50_stage5.pt" -p metrics_dir "$out" -p metrics_name teacher_training_stage5.json \
  -p run_dir "$out" -p progress False
cp "$out/teacher_training_stage5.json" report/metrics/pilots/teacher_stage5.json
.venv/bin/python benchmarks/augmentation_pilot.py --teacher "$out/teacher_resnet50_stage5.pt" --variants flip \
  --epochs 50 --run-dir "$out/pilots" --out report/metrics/pilots/kd_from_teacher_stage5.json
