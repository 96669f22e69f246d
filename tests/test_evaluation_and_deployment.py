"""Evaluation helpers on hand-made cases, and the ONNX / int8 deployment path on a small student."""
import json
import math

import pytest
import torch

import kd_helpers as kd


def test_confusion_matrix_per_class_accuracy_and_confused_pairs():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 1, 0])
    logits = torch.nn.functional.one_hot(predicted, 3).float()
    confusion = kd.confusion_matrix(logits, labels, num_classes=3)
    assert confusion.tolist() == [[1, 2, 0], [0, 2, 0], [1, 0, 0]]
    assert kd.per_class_accuracy(confusion)[:2] == pytest.approx([1 / 3, 1.0])
    assert kd.most_confused_pairs(confusion, 2) == [(0, 1, 2), (2, 0, 1)]


def test_confused_examples_fill_one_row_per_pair():
    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1).expand(6, 28, 28)
    labels, predicted = torch.tensor([0, 0, 0, 1, 1, 2]), torch.tensor([1, 1, 0, 1, 1, 0])
    rows, titles = kd.confused_examples(images, labels, predicted, [(0, 1, 2), (2, 0, 1)], per_pair=3)
    assert rows.shape == (6, 28, 28) and rows[:, 0, 0].tolist() == [0, 1, 0, 5, 0, 0]
    assert titles == ["T-shirt/top\n→ Trouser"] * 2 + [""] + ["Pullover\n→ T-shirt/top"] + [""] * 2  # full names


def test_expected_calibration_error_of_calibrated_and_overconfident_models():
    labels = torch.zeros(100, dtype=torch.long)
    confident_and_right = torch.tensor([[20.0, 0.0]]).repeat(100, 1)
    assert kd.expected_calibration_error(confident_and_right, labels)["ece"] < 1e-6
    half_wrong = confident_and_right.clone()
    half_wrong[50:] = torch.tensor([0.0, 20.0])  # confident and wrong on half: accuracy 0.5, confidence ~1
    assert math.isclose(kd.expected_calibration_error(half_wrong, labels)["ece"], 0.5, abs_tol=1e-6)


@pytest.fixture(scope="module")
def trained_student(small_data):
    torch.manual_seed(0)
    student = kd.StudentNet()
    kd.fit(student, small_data, dict(epochs=2, batch_size=64))
    return student.eval()


def test_onnx_export_and_int8_quantisation_keep_the_predictions(trained_student, small_data, tmp_path):
    images, normalize = small_data["test_images"], small_data["normalize"]
    reference = kd.predict(trained_student, images, normalize)
    fp32 = kd.export_onnx(trained_student, tmp_path / "student.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["student.onnx"], "the ONNX file must be self-contained"
    exported = kd.onnx_predict(kd.onnx_session(fp32), images, normalize, batch_size=100)
    assert torch.allclose(exported, reference, atol=1e-4)
    calibration = kd.calibration_images(small_data, 256, seed=0)
    assert calibration.shape == (256, 3, 28, 28) and torch.equal(calibration, kd.calibration_images(small_data, 256, seed=0))
    int8 = kd.quantize_int8(fp32, tmp_path / "int8" / "student_int8.onnx", calibration)
    assert int8.stat().st_size < fp32.stat().st_size / 3
    quantised = kd.onnx_predict(kd.onnx_session(int8), images, normalize)
    agreement = (quantised.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agreement > 0.95
    digest = kd.write_sha256(int8)
    assert (tmp_path / "int8" / "student_int8.onnx.sha256").read_text() == f"{digest}  student_int8.onnx\n"
    with pytest.raises(ValueError, match="weights='int4'"):
        kd.quantize_int8(fp32, tmp_path / "int4.onnx", calibration, weights="int4")


def test_inference_speed_of_a_model_and_of_a_session(trained_student, tmp_path):
    for runner in (trained_student, kd.onnx_session(kd.export_onnx(trained_student, tmp_path / "s.onnx"))):
        speed = kd.inference_speed(runner, 8, repeats=2)
        assert speed["batch_size"] == 8 and speed["latency_ms"] > 0
        assert math.isclose(speed["images_per_s"], 8 / (speed["latency_ms"] / 1000))


def test_compression_table_keeps_the_order_given():
    row = dict(test_accuracy=0.9123, parameters=95_386, mult_adds=9_780_000, bytes=2048, latency_ms=0.5, images_per_s=1234.4)
    table = kd.compression_table({"b": row, "a": {**row, "test_accuracy": 0.5}}, order=["a", "b"]).splitlines()
    assert table[2].startswith("| a | 50.00 % |") and table[3] == "| b | 91.23 % | 95,386 | 9.78M | 2 KB | 0.50 ms | 1,234 |"


def test_calibration_images_refuse_an_impossible_count(small_data):
    with pytest.raises(ValueError, match="training split has"):
        kd.calibration_images(small_data, len(small_data["train_labels"]) + 1)


def test_deploy_student_ships_int8_with_its_contract_and_format_rows_measure_all_three(trained_student, small_data,
                                                                                      tmp_path):
    checkpoint = tmp_path / "student_kd.pt"
    meta = {"arch": "student_net", "normalize": small_data["normalize"]}
    kd.save_checkpoint(trained_student, meta, checkpoint)
    deployed = kd.deploy_student(trained_student, meta, "kd", onnx_dir=tmp_path / "onnx", int8_dir=tmp_path / "int8",
                                 calibration=kd.calibration_images(small_data, 64))
    assert deployed["onnx_int8"] == tmp_path / "int8" / "student_kd_int8.onnx"
    assert (tmp_path / "int8" / "student_kd_int8.onnx.sha256").read_text().split()[0] == deployed["int8_sha256"]
    for path in (deployed["onnx_float32"], deployed["onnx_int8"]):
        assert json.loads(kd.read_onnx_metadata(path)["normalize_std"]) == small_data["normalize"]["std"]
    rows = kd.format_rows("kd", trained_student, checkpoint, deployed, small_data["test_images"],
                          small_data["test_labels"], small_data["normalize"])
    assert list(rows) == ["student kd, PyTorch float32", "student kd, ONNX float32", "student kd, ONNX int8"]
    pytorch, onnx32, int8 = rows.values()
    assert onnx32["test_accuracy"] == pytest.approx(pytorch["test_accuracy"], abs=0.005)
    assert int8["drop_points"] == pytest.approx(100 * (pytorch["test_accuracy"] - int8["test_accuracy"]))
    assert int8["bytes"] < onnx32["bytes"] and int8["parameters"] == 95_386



def _independent_evaluator():
    import importlib.util
    spec = importlib.util.spec_from_file_location("evaluate_independently", kd.ROOT / "tools" / "evaluate_independently.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_independent_evaluator_reads_the_test_set_and_a_teacher_as_kd_helpers_do(data, tmp_path):
    tool = _independent_evaluator()
    images, labels = tool.read_idx("t10k-images-idx3-ubyte"), tool.read_idx("t10k-labels-idx1-ubyte")
    assert torch.equal(torch.from_numpy(images.copy()), data["test_images"])
    assert torch.equal(torch.from_numpy(labels.copy()).long(), data["test_labels"].long())
    torch.manual_seed(0)
    teacher = kd.build_model("resnet50_stride1").eval()
    expected = kd.evaluate(teacher.half().float(), data["test_images"][:40], data["test_labels"][:40], data["normalize"])["accuracy"]
    meta = {"arch": "resnet50_stride1", "stem": kd.STEMS["resnet50_stride1"], "num_classes": 10,
            "normalize": data["normalize"], "test_accuracy": expected}
    kd.save_checkpoint(teacher, meta, tmp_path / "teacher.pt", half=True)
    measured, recorded = tool.teacher_accuracy(tmp_path / "teacher.pt", images[:40], labels[:40])
    assert recorded == expected and abs(measured - expected) <= 1 / 40


def test_the_independent_evaluator_agrees_with_the_shipped_int8_student_and_flags_a_mismatch(capsys):
    tool = _independent_evaluator()
    path = kd.ROOT / "checkpoints" / "student_kd_int8.onnx"
    assert tool.main([str(path)]) == 0
    assert "DIFFERS" not in capsys.readouterr().out
    assert tool.main([str(path), "--tolerance", "-1"]) == 1


def test_fewest_within_noise_takes_the_cheapest_setting_within_one_standard_error_of_the_best():
    # on 5,000 images the standard error of 94 % is 0.34 points
    assert kd.fewest_within_noise({2: 0.9360, 4: 0.9380, 8: 0.9400}, 5000) == 4
    assert kd.fewest_within_noise({2: 0.9370, 4: 0.9380, 8: 0.9400}, 5000) == 2
    assert kd.fewest_within_noise({2: 0.9370, 4: 0.9380, 8: 0.9400}, 50000) == 8   # more images, finer
    assert kd.fewest_within_noise({8: 0.93, 4: 0.95}, 5000) == 4
