"""How much can the teacher teach? Where teacher and students are right and wrong, on validation.

    python benchmarks/teacher_headroom.py          # writes report/metrics/teacher_headroom.json
    python benchmarks/teacher_headroom.py --tiny   # 256 images, as the test suite runs it

Distillation can only pass on what the teacher knows and the student does not. This counts, on the
validation split (the test set is not touched), the images that the shipped teacher classifies right
and each shipped student wrong ("teacher only"), the reverse ("student only") and those both get
wrong; and, on the training images the students learn from, how often the teacher's top class is the
label and how much probability it gives the label at T = 1, which is what the soft targets add to the
labels.
"""
from __future__ import annotations

import argparse

import kd_helpers as kd


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="256 images of each split (the test suite's run)")
    parser.add_argument("--teacher", default="checkpoints/teacher_resnet50.pt")
    parser.add_argument("--students", nargs="+", default=["kd", "scratch", "improved"],
                        help="shipped students: checkpoints/student_<name>.pt")
    parser.add_argument("--out", default="report/metrics/teacher_headroom.json")
    args = parser.parse_args(argv)
    n = 256 if args.tiny else None
    data = kd.fashion_mnist_splits()
    teacher, _, teacher_sha256 = kd.load_teacher(kd.project_path(args.teacher), data["normalize"])
    images, labels, normalize = data["val_images"][:n], data["val_labels"][:n], data["normalize"]
    teacher_right = kd.predict(teacher, images, normalize).argmax(1) == labels
    train_logits = kd.predict(teacher, data["train_images"][:n or 5000], normalize)
    train_labels = data["train_labels"][:n or 5000]
    result = {"teacher_sha256": teacher_sha256, "n_val": len(labels), "teacher_val_accuracy": teacher_right.float().mean().item(),
              "n_train_checked": len(train_labels),
              "teacher_train_agreement": (train_logits.argmax(1) == train_labels).float().mean().item(),
              "teacher_train_label_probability": train_logits.softmax(1).gather(1, train_labels[:, None]).mean().item(),
              "students": {}, "run": kd.run_info(0)}
    for name in args.students:
        student, _ = kd.load_checkpoint(kd.project_path(f"checkpoints/student_{name}.pt"))
        right = kd.predict(student, images, normalize).argmax(1) == labels
        result["students"][name] = {"val_accuracy": right.float().mean().item(),
                                    "teacher_only": int((teacher_right & ~right).sum()),
                                    "student_only": int((right & ~teacher_right).sum()),
                                    "both_wrong": int((~teacher_right & ~right).sum())}
        print(f"student {name}: {result['students'][name]}", flush=True)
    print(f"teacher: validation {100 * result['teacher_val_accuracy']:.2f}%, top class = label on "
          f"{100 * result['teacher_train_agreement']:.2f}% of {len(train_labels):,} training images")
    if not args.tiny:
        kd.write_json(result, kd.project_path(args.out))
    return result


if __name__ == "__main__":
    main()
