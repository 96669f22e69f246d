"""Which 8-bit scheme keeps a student's predictions on this processor? One quantisation each.

    python benchmarks/int8_schemes.py          # writes report/metrics/int8_schemes.json
    python benchmarks/int8_schemes.py --tiny   # a few hundred images, as the test suite runs it

The student is exported to ONNX once and quantised statically four ways, calibrated on the same
training images as 05_beyond_the_baseline: U8S8 (uint8 activations, int8 weights: ONNX Runtime's
default), U8S8 with reduce_range (7-bit weights), U8U8 (uint8 weights too: what the project ships,
kd.INT8_SCHEME) and S8S8. On x86 CPUs without VNNI the int8-weight kernels can saturate, so the
result depends on the processor, which the metrics file records. Compared on the validation split
only (accuracy and agreement with the float32 ONNX model); the test set is not touched.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import kd_helpers as kd

SCHEMES = {  # name: quantize_int8 keyword arguments
    "U8S8": dict(activations="uint8", weights="int8"),
    "U8S8, reduce_range": dict(activations="uint8", weights="int8", reduce_range=True),
    "U8U8 (shipped)": dict(activations="uint8", weights="uint8"),
    "S8S8": dict(activations="int8", weights="int8"),
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a few hundred images (the test suite's run)")
    parser.add_argument("--student", default="checkpoints/student_kd.pt", help="a shipped student checkpoint")
    parser.add_argument("--calibration-images", type=int, default=2000, help="as 05's calibration_images")
    parser.add_argument("--out", default="report/metrics/int8_schemes.json")
    args = parser.parse_args(argv)
    n_calibration, n_val = (100, 256) if args.tiny else (args.calibration_images, None)
    kd.check_parameters(calibration_images=n_calibration)
    data = kd.fashion_mnist_splits()
    model, meta = kd.load_checkpoint(kd.project_path(args.student))
    kd.check_normalization(meta, data["normalize"], args.student)
    calibration = kd.calibration_images(data, n_calibration, seed=0)  # the draw of 05 with seed 0
    images, labels = data["val_images"][:n_val], data["val_labels"][:n_val]
    accuracy = lambda logits: (logits.argmax(1) == labels).float().mean().item()  # noqa: E731
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = kd.export_onnx(model, Path(tmp) / "fp32.onnx")
        reference = kd.onnx_predict(kd.onnx_session(fp32), images, data["normalize"]).argmax(1)
        rows["float32"] = {"val_accuracy": accuracy(kd.predict(model, images, data["normalize"])), "agreement": 1.0}
        for i, (name, scheme) in enumerate(SCHEMES.items()):
            int8 = kd.quantize_int8(fp32, Path(tmp) / f"int8_{i}.onnx", calibration, **scheme)
            logits = kd.onnx_predict(kd.onnx_session(int8), images, data["normalize"])
            rows[name] = {**scheme, "val_accuracy": accuracy(logits),
                          "agreement": (logits.argmax(1) == reference).float().mean().item()}
            print(f"{name:<20} validation accuracy {100 * rows[name]['val_accuracy']:6.2f}%   "
                  f"agrees with float32 on {100 * rows[name]['agreement']:6.2f}%", flush=True)
    result = {"student": Path(args.student).name, "student_sha256": kd.sha256_of(kd.project_path(args.student)),
              "schemes": rows, "calibration_images": n_calibration, "n_val": len(labels), "run": kd.run_info(0)}
    if not args.tiny:
        kd.write_json(result, kd.project_path(args.out))
    return result


if __name__ == "__main__":
    main()
