"""Evaluate shipped models on the Fashion-MNIST test set without any of this project's code.

    python tools/evaluate_independently.py checkpoints/teacher_resnet50.pt checkpoints/student_kd_int8.onnx

Reads the official IDX test files with gzip and numpy, rebuilds the teacher from torchvision alone (the stem from
its checkpoint's meta), runs an ONNX student with ONNX Runtime and the input contract stored in the file, and
prints each model's accuracy beside the one its checkpoint records. Exits 1 when one differs by more than
`--tolerance` points. Nothing is imported from kd_helpers, so a bug there cannot hide in both numbers.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

TEST_SHA256 = {  # the decompressed official files (Xiao, Rasul and Vollgraf, 2017)
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
SEARCHED = [os.environ.get("FASHION_MNIST_DIR"), "/usr/share/datasets/fashion-mnist", "data",
            "data/FashionMNIST/raw"]


def read_idx(name: str) -> np.ndarray:
    """One official IDX file (plain or .gz) from the usual places, checked against its SHA-256."""
    for folder in filter(None, SEARCHED):
        for path in (Path(folder) / name, Path(folder) / f"{name}.gz"):
            if path.exists():
                raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
                if hashlib.sha256(raw).hexdigest() != TEST_SHA256[name]:
                    sys.exit(f"{path} is not the official {name} (SHA-256 differs)")
                dims = raw[3]
                shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
                return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)
    sys.exit(f"{name} not found in {', '.join(filter(None, SEARCHED))}: install Debian's dataset-fashion-mnist "
             f"or set FASHION_MNIST_DIR")


def normalised(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 3, 28, 28): / 255, grey repeated to 3 channels, (x - mean) / std."""
    x = np.repeat(images[:, None].astype(np.float32) / 255, 3, axis=1)
    return (x - np.asarray(mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(std, np.float32).reshape(1, 3, 1, 1)


def teacher_accuracy(path: Path, images, labels) -> tuple[float, float]:
    """(accuracy measured here, accuracy in the checkpoint's meta) of a torchvision ResNet50 checkpoint."""
    import torch
    import torchvision
    saved = torch.load(path, map_location="cpu", weights_only=True)
    meta = saved["meta"]
    model = torchvision.models.resnet50(num_classes=meta["num_classes"])
    if "stride 1" in meta["stem"]:
        model.conv1.stride = (1, 1)
    model.load_state_dict({k: v.float() for k, v in saved["state_dict"].items()})
    model.eval()
    x = torch.from_numpy(normalised(images, meta["normalize"]["mean"], meta["normalize"]["std"]))
    with torch.no_grad():
        predicted = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)]).numpy()
    return float((predicted == labels).mean()), meta["test_accuracy"]


def onnx_accuracy(path: Path, images, labels) -> tuple[float, float | None]:
    """(accuracy measured here, the accuracy the project recorded for it, if any) of an ONNX model that carries
    its input contract (normalize_mean, normalize_std) in its metadata."""
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    x = normalised(images, json.loads(props["normalize_mean"]), json.loads(props["normalize_std"]))
    name = session.get_inputs()[0].name
    predicted = np.concatenate([session.run(None, {name: x[i:i + 1000]})[0].argmax(1) for i in range(0, len(x), 1000)])
    recorded = None
    deployment = Path(__file__).resolve().parents[1] / "report" / "metrics" / "deployment.json"
    if deployment.exists():
        for row in json.loads(deployment.read_text()).get("models", {}).values():
            if Path(row.get("file", "")).name == path.name:
                recorded = row.get("test_accuracy")
    return float((predicted == labels).mean()), recorded


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="a teacher .pt checkpoint or an .onnx student")
    parser.add_argument("--tolerance", type=float, default=0.1, help="allowed difference, in points (default 0.1)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    images, labels = read_idx("t10k-images-idx3-ubyte"), read_idx("t10k-labels-idx1-ubyte")
    results = {}
    for path in args.models:
        if not path.exists():
            sys.exit(f"{path}: no such file")
        measured, recorded = (onnx_accuracy if path.suffix == ".onnx" else teacher_accuracy)(path, images, labels)
        agree = recorded is None or abs(measured - recorded) * 100 <= args.tolerance
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        results[str(path)] = {"measured": measured, "recorded": recorded, "agrees": agree, "sha256": sha256,
                              "n_test": len(labels)}
        said = "not recorded" if recorded is None else f"recorded {100 * recorded:.2f} %"
        print(f"{path}: {100 * measured:.2f} % on {len(labels):,} test images ({said}){'' if agree else '  DIFFERS'}")
    if args.json:
        args.json.write_text(json.dumps({"tool": "tools/evaluate_independently.py", "models": results}, indent=1) + "\n")
    return 0 if all(r["agrees"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
