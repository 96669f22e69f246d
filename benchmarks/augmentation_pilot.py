"""Does the homework's student underfit, or overfit? Its KD training with other augmentations and steps, on validation.

    python benchmarks/augmentation_pilot.py          # writes report/metrics/augmentation_pilot.json
    python benchmarks/augmentation_pilot.py --tiny   # 512 images, 1 epoch, as the test suite runs it

Until session 6, `04` shifted the images by up to 2 pixels besides mirroring them, and its students'
training accuracy (augmented images, dropout on) stayed below their validation accuracy for all 50
epochs: they underfit, and augmentation only makes fitting harder. This trains the KD student of `04`
(the shipped teacher's cached logits, T = 1, alpha = 0.3, Adam 1e-3, ReduceLROnPlateau 0.5 / 2, seed 0)
for 25 epochs, unless a variant says otherwise, with each augmentation (flip, shifts, random erasing),
batch size, schedule, soft-target setting or weight averaging below (one variant trains `04b`'s
improved student with `04b`'s recipe instead),
and reports the best validation accuracy and the accuracy on 5,000 training images in eval mode (no
augmentation, no dropout: how well the student fits what it learns from). The test set is not
touched. Runs are resumable and replay from runs/pilots/.
"""
from __future__ import annotations

import argparse

import torch

import kd_helpers as kd

FLIP = {"flip": True, "degrees": 0.0, "translate": 0.0, "scale": (1.0, 1.0)}
VARIANTS = {  # name -> changes to the base configuration
    "flip_shift": {"augmentation": {**FLIP, "translate": 0.07}},  # 04 until session 6
    "flip": {},                                                   # 04 from session 6
    "flip_bs64": {"batch_size": 64},
    # session 7: does the student fit more, and generalise better, with more steps? 04 itself (flip,
    # 50 epochs, patience 2) is the reference for these two.
    "flip_bs64_50_epochs": {"batch_size": 64, "epochs": 50},
    "flip_100_epochs_patience_4": {"epochs": 100, "patience": 4},
    # session 8: random erasing (half the images lose a rectangle to noise) fights the overfitting
    # those two showed; with T = 4, alpha = 0.9 the teacher's view of the unerased image weighs more.
    "flip_erase_50_epochs": {"augmentation": {**FLIP, "erase": 0.5}, "epochs": 50},
    "flip_erase_50_epochs_t4_alpha09": {"augmentation": {**FLIP, "erase": 0.5}, "epochs": 50,
                                        "temperature": 4.0, "alpha": 0.9},
    # session 9: the weights' moving average (kd.WeightAverage), chosen on validation like the weights
    # themselves, for 04's run and for 04b's improved student with 04b's recipe.
    "flip_ema_50_epochs": {"epochs": 50, "ema": 0.999},
    "improved_student_ema": {"arch": "student_gap", "epochs": 30, "lr": 3e-3, "weight_decay": 0.01,
                             "schedule": "one_cycle", "ema": 0.999},
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="512 training images, 1 epoch (the test suite's run)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--teacher", default="checkpoints/teacher_resnet50.pt")
    parser.add_argument("--run-dir", default="runs/pilots", help="resumable runs and logs (ignored by git)")
    parser.add_argument("--cache-dir", default="runs/cache", help="the teacher-logit cache")
    parser.add_argument("--out", default="report/metrics/augmentation_pilot.json")
    args = parser.parse_args(argv)
    data = kd.fashion_mnist_splits()
    if args.tiny:
        data = kd.smoke_test_data(data)
    teacher, _, teacher_sha256 = kd.load_teacher(kd.project_path(args.teacher), data["normalize"])
    logits = kd.teacher_logits_cache(teacher, data["train_images"], data["normalize"], teacher_sha256,
                                     kd.project_path(args.cache_dir))
    base = dict(epochs=1 if args.tiny else args.epochs, batch_size=128, lr=1e-3, optimizer="adam",
                schedule="plateau", factor=0.5, patience=2, augmentation=FLIP, seed=0, temperature=1.0, alpha=0.3)
    n_fit = min(5000, len(data["train_labels"]))
    result = {"teacher_sha256": teacher_sha256, "n_train": len(data["train_labels"]), "n_val": len(data["val_labels"]),
              "n_fit_check": n_fit, "variants": {}, "run": kd.run_info(0)}
    for name in args.variants:
        config = {**base, **VARIANTS[name], **({"epochs": 1} if args.tiny else {})}
        arch = config.pop("arch", "student_net")
        model, fit = kd.train_student(data, config, prefix=f"pilot_{name}", run_dir=kd.project_path(args.run_dir),
                                      arch=arch, teacher_logits=logits, teacher_sha256=teacher_sha256)
        fitted = kd.evaluate(model, data["train_images"][:n_fit], data["train_labels"][:n_fit], data["normalize"])
        last = fit["history"][-1]
        result["variants"][name] = {
            "arch": arch, "config": kd.plain(config), "best_val_accuracy": fit["best_val_accuracy"], "best_epoch": fit["best_epoch"],
            "last_train_accuracy_augmented": last["train_accuracy"], "last_val_accuracy": last["val_accuracy"],
            "train_accuracy_eval_mode": fitted["accuracy"], "train_seconds": fit["train_seconds"],
            "val_accuracy_by_epoch": [h["val_accuracy"] for h in fit["history"]]}
        if config.get("ema"):  # the trained weights' own best, from the same run: what averaging added
            result["variants"][name]["best_val_accuracy_trained_weights"] = max(h["val_accuracy"] for h in fit["history"])
        print(f"{name}: best validation {100 * fit['best_val_accuracy']:.2f}% (epoch {fit['best_epoch']}), "
              f"training images in eval mode {100 * fitted['accuracy']:.2f}%", flush=True)
    if not args.tiny:
        kd.write_json(result, kd.project_path(args.out))
    return result


if __name__ == "__main__":
    main()
