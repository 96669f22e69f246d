"""Would an ensemble of the shipped models be a better teacher? Their averaged predictions, on validation.

    python benchmarks/teacher_ensemble.py          # writes report/metrics/teacher_ensemble.json
    python benchmarks/teacher_ensemble.py --tiny   # 256 images, as the test suite runs it

`benchmarks/teacher_headroom.py` finds the teacher barely ahead of its students. A stronger teacher
needs more compute than a CPU session, but the project already ships five other models: the teacher's
three earlier stages and the improved student. Averaging the softmax outputs of several models is the
classic way to a better soft-target source (Hinton et al. distilled ensembles); this measures, on the
validation split only, every such average against the shipped teacher alone, and, on 5,000 training
images (which every model has seen), how much of its probability each average puts on the label.
"""
from __future__ import annotations

import argparse
import itertools

import kd_helpers as kd

MODELS = {"stage 4 (shipped)": "checkpoints/teacher_resnet50.pt",
          "stage 3": "checkpoints/teacher_resnet50_stage3.pt",
          "stage 2": "checkpoints/teacher_resnet50_stage2.pt",
          "stage 1 (default stem)": "checkpoints/teacher_resnet50_default_stem.pt",
          "improved student": "checkpoints/student_improved.pt"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="256 validation images (the test suite's run)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", default="report/metrics/teacher_ensemble.json")
    args = parser.parse_args(argv)
    data = kd.fashion_mnist_splits()
    n, n_train = (256, 256) if args.tiny else (None, 5000)
    images, labels = data["val_images"][:n], data["val_labels"][:n]
    train_images, train_labels = data["train_images"][:n_train], data["train_labels"][:n_train]
    logits, train_logits, archs = {}, {}, {}
    for name in args.models:
        model, meta, _ = kd.load_teacher(kd.project_path(MODELS[name]), data["normalize"])
        logits[name], archs[name] = kd.predict(model, images, data["normalize"]), meta["arch"]
        train_logits[name] = kd.predict(model, train_images, data["normalize"])
    combos = [" + ".join(c) for size in range(1, len(args.models) + 1) for c in itertools.combinations(args.models, size)]
    average = lambda outputs, combo: kd.average_soft_targets([outputs[m] for m in combo.split(" + ")])  # noqa: E731
    ensembles = {c: (average(logits, c).argmax(1) == labels).float().mean().item() for c in combos}
    # What a student distilled from the average would learn from: its probability on the label of
    # training images (which every member has seen), against its accuracy on unseen ones.
    label_probability = {c: average(train_logits, c).softmax(1).gather(1, train_labels[:, None]).mean().item()
                         for c in combos}
    result = {"n_val": len(labels), "models": {name: MODELS[name] for name in args.models}, "arch": archs,
              "val_accuracy": ensembles, "n_train_checked": len(train_labels),
              "train_label_probability": label_probability, "run": kd.run_info(0)}
    for combo, acc in sorted(ensembles.items(), key=lambda kv: -kv[1])[:5]:
        print(f"{100 * acc:6.2f}%  {combo}")
    if not args.tiny:
        kd.write_json(result, kd.project_path(args.out))
    return result


if __name__ == "__main__":
    main()
