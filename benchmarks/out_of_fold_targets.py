"""Soft targets from models that have not seen the image: does distillation win with them? On validation.

    python benchmarks/out_of_fold_targets.py                    # writes report/metrics/out_of_fold_targets.json
    python benchmarks/out_of_fold_targets.py --folds-only 1 2   # train these folds and stop (share the work)
    python benchmarks/out_of_fold_targets.py --tiny             # 512 images, 1 epoch, as the test suite runs it

The shipped teacher has seen every training image, and on them it puts most of its probability on
the label (`benchmarks/teacher_ensemble.py`): there its soft targets add little to the labels, and
the homework's student distilled from it does no better than from scratch (`04`). Here the training
images are split into stratified folds (`kd.out_of_fold_logits`); for each fold a GapStudentNet
(`04b`'s recipe, 15 epochs: KD from the teacher, one-cycle AdamW, flip), trained on the other folds, predicts
the held-out one and its mirror image. The homework's student is then distilled exactly as in `04`
(T = 1, alpha = 0.3, Adam 1e-3, ReduceLROnPlateau 0.5 / 2, flip, seed 0) from those out-of-fold
predictions, alone and averaged with the teacher's, and kept on validation. Reported: accuracy and
mean probability on the label of the out-of-fold predictions on the training images against the
teacher's, and each student's best validation accuracy. The test set is not touched. Runs are
resumable and replay from runs/out_of_fold/.
"""
from __future__ import annotations

import argparse

import kd_helpers as kd

FLIP = {"flip": True, "degrees": 0.0, "translate": 0.0, "scale": (1.0, 1.0)}
FOLD_CONFIG = dict(epochs=15, batch_size=128, lr=3e-3, optimizer="adam", weight_decay=0.01, schedule="one_cycle",
                   augmentation=FLIP, seed=0, temperature=1.0, alpha=0.3)
STUDENT_CONFIG = dict(epochs=50, batch_size=128, lr=1e-3, optimizer="adam", schedule="plateau", factor=0.5,
                      patience=2, augmentation=FLIP, seed=0, temperature=1.0, alpha=0.3)
SOURCES = ("out-of-fold", "teacher + out-of-fold")


def label_share(logits, labels) -> dict:
    """Accuracy of the unmirrored logits, and their mean softmax probability on the label."""
    return {"accuracy": (logits[0].argmax(1) == labels).float().mean().item(),
            "label_probability": logits[0].softmax(1).gather(1, labels[:, None]).mean().item()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="512 training images, 2 folds, 1 epoch (the test suite's run)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--folds-only", type=int, nargs="+", help="train just these folds (numbers from 1), then stop")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    parser.add_argument("--teacher", default="checkpoints/teacher_resnet50.pt")
    parser.add_argument("--run-dir", default="runs/out_of_fold", help="resumable runs and logs (ignored by git)")
    parser.add_argument("--cache-dir", default="runs/cache", help="the teacher-logit cache")
    parser.add_argument("--out", default="report/metrics/out_of_fold_targets.json")
    args = parser.parse_args(argv)
    data = kd.fashion_mnist_splits()
    folds, fold_config, student_config = args.folds, FOLD_CONFIG, STUDENT_CONFIG
    if args.tiny:
        data = kd.smoke_test_data(data)
        folds, fold_config, student_config = 2, {**FOLD_CONFIG, "epochs": 1}, {**STUDENT_CONFIG, "epochs": 1}
    teacher, _, teacher_sha256 = kd.load_teacher(kd.project_path(args.teacher), data["normalize"])
    teacher_logits = kd.teacher_logits_cache(teacher, data["train_images"], data["normalize"], teacher_sha256,
                                             kd.project_path(args.cache_dir))
    run_dir = kd.project_path(args.run_dir)
    oof, fold_val = kd.out_of_fold_logits(data, fold_config, folds=folds, prefix="oof_gap", run_dir=run_dir,
                                          teacher_logits=teacher_logits, teacher_sha256=teacher_sha256,
                                          only=args.folds_only)
    if oof is None:
        print(f"folds {args.folds_only} trained; run without --folds-only when all are", flush=True)
        return {}
    labels = data["train_labels"]
    soft = {"out-of-fold": oof, "teacher + out-of-fold": kd.average_soft_targets([teacher_logits, oof])}
    result = {"teacher_sha256": teacher_sha256, "n_train": len(labels), "n_val": len(data["val_labels"]),
              "folds": folds, "fold_config": kd.plain(fold_config), "fold_val_accuracy": fold_val,
              "student_config": kd.plain(student_config),
              "train_images": {"teacher": label_share(teacher_logits, labels),
                               **{name: label_share(soft[name], labels) for name in SOURCES}},
              "students": {}, "run": kd.run_info(0)}
    source_sha256 = f"{teacher_sha256}+{kd.run_name('oof_gap', fold_config, folds=folds, n_train=len(labels))}"
    for name in args.sources:
        tag = f"oof_{'teacher_' if name.startswith('teacher') else ''}student"
        _, fit = kd.train_student(data, student_config, prefix=tag, run_dir=run_dir, teacher_logits=soft[name],
                                  teacher_sha256=source_sha256)
        result["students"][name] = {"best_val_accuracy": fit["best_val_accuracy"], "best_epoch": fit["best_epoch"],
                                    "train_seconds": fit["train_seconds"]}
        print(f"KD from {name}: best validation {100 * fit['best_val_accuracy']:.2f}% (epoch {fit['best_epoch']})",
              flush=True)
    if not args.tiny:
        kd.write_json(result, kd.project_path(args.out))
    return result


if __name__ == "__main__":
    main()
