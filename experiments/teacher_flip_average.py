"""Does averaging the teacher over each image and its mirror image make it more accurate? Validation only.

    python experiments/teacher_flip_average.py [checkpoint] [result.json]

Prints and writes the teacher's validation accuracy on the images, on their mirror images, and with its
logits (or probabilities) averaged over both; the test set is not read.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import kd_helpers as kd  # noqa: E402

checkpoint = kd.project_path(sys.argv[1] if len(sys.argv) > 1 else "checkpoints/teacher_resnet50.pt")
out = kd.project_path(sys.argv[2] if len(sys.argv) > 2 else "experiments/results/teacher_flip_average.json")
data = kd.fashion_mnist_splits()
teacher, meta, sha256 = kd.load_teacher(checkpoint, data["normalize"], "cpu")
labels = data["val_labels"]
plain = kd.predict(teacher, data["val_images"], data["normalize"], batch_size=250)
mirrored = kd.predict(teacher, data["val_images"], data["normalize"], batch_size=250, flip=True)
accuracy = lambda logits: (logits.argmax(1) == labels).float().mean().item()  # noqa: E731
result = {"images": accuracy(plain), "mirror_images": accuracy(mirrored), "mean_logits": accuracy(plain + mirrored),
          "mean_probabilities": accuracy(plain.softmax(1) + mirrored.softmax(1)), "n_val": len(labels),
          "teacher_sha256": sha256, "teacher_val_accuracy": meta.get("val_accuracy"), "run": kd.run_info()}
print(json.dumps({k: v for k, v in result.items() if k != "run"}, indent=1))
kd.write_json(result, out)
