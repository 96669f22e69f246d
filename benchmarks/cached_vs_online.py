"""Do cached teacher logits cost accuracy against running the teacher online? One short run each.

    python benchmarks/cached_vs_online.py          # writes report/metrics/cached_vs_online.json
    python benchmarks/cached_vs_online.py --tiny   # a few hundred images, as the test suite runs it

Both runs distil the same StudentNet from the shipped teacher with the same seed, data, augmentation,
loss (T = 4, alpha = 0.5) and budget; they differ only in where the soft targets come from:
cached: the teacher's logits for each training image and its mirror image, computed once (the student
        sees a shifted copy of what the teacher saw);
online: the teacher run on every augmented batch (it sees exactly what the student sees).
Compared on the validation split only; the test set is not touched.
"""
from __future__ import annotations

import argparse
import time

import torch

import kd_helpers as kd

AUG = {"flip": True, "degrees": 0.0, "translate": 0.07, "scale": (1.0, 1.0)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a few hundred images, one epoch (the test suite's run)")
    parser.add_argument("--n-train", type=int, default=10_000, help="training images (the first n of the split)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--teacher", default="checkpoints/teacher_resnet50.pt")
    parser.add_argument("--out", default="report/metrics/cached_vs_online.json")
    parser.add_argument("--cache-dir", default="runs/cache", help="where the teacher-logit cache goes")
    args = parser.parse_args(argv)
    n_train, epochs = (256, 1) if args.tiny else (args.n_train, args.epochs)
    kd.check_parameters(epochs=epochs, n_train=n_train)
    data = kd.first_images(kd.fashion_mnist_splits(), n_train)
    if args.tiny:
        data["val_images"], data["val_labels"] = data["val_images"][:256], data["val_labels"][:256]
    teacher_path = kd.project_path(args.teacher)
    teacher, meta, teacher_sha256 = kd.load_teacher(teacher_path, data["normalize"])
    teacher = teacher.to(memory_format=torch.channels_last)
    results = {}
    for mode in ("cached", "online"):
        start = time.time()
        logits = (kd.teacher_logits_cache(teacher, data["train_images"], data["normalize"], teacher_sha256,
                                          kd.project_path(args.cache_dir)) if mode == "cached" else None)
        torch.manual_seed(0)
        student = kd.StudentNet().to(memory_format=torch.channels_last)
        fit = kd.fit(student, data, epochs=epochs, batch_size=128, lr=1e-3, augmentation=AUG, seed=0,
                     teacher=teacher if mode == "online" else None, teacher_logits=logits, temperature=4.0, alpha=0.5)
        results[mode] = {"val_accuracy": [h["val_accuracy"] for h in fit["history"]],
                         "best_val_accuracy": fit["best_val_accuracy"], "seconds": time.time() - start}
        print(f"{mode:>7}: validation accuracy by epoch "
              f"{', '.join(f'{100 * a:.2f}%' for a in results[mode]['val_accuracy'])}; {results[mode]['seconds']:.0f} s")
    record = {"n_train": n_train, "epochs": epochs, "temperature": 4.0, "alpha": 0.5, "augmentation": AUG,
              "teacher_arch": meta["arch"], "teacher_sha256": teacher_sha256, **results,
              "cached_minus_online_points": 100 * (results["cached"]["best_val_accuracy"] - results["online"]["best_val_accuracy"]),
              "command": "python benchmarks/cached_vs_online.py", "run": kd.run_info(0)}
    print(f"cached - online: {record['cached_minus_online_points']:+.2f} points of best validation accuracy")
    if not args.tiny:
        kd.write_json(record, kd.project_path(args.out))
    return record


if __name__ == "__main__":
    main()
