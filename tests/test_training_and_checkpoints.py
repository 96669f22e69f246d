import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import kd_helpers as kd

TRAIN_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    import kd_helpers as kd
    data = kd.fashion_mnist_splits()
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(55000, generator=g)[:3000]
    data.update(train_images=data["train_images"][pick], train_labels=data["train_labels"][pick],
                train_index=data["train_index"][pick], val_images=data["val_images"][:500],
                val_labels=data["val_labels"][:500])
    torch.manual_seed(0)
    model = kd.StudentNet()
    result = kd.fit(model, data, epochs=4, batch_size=100, lr=1e-3, schedule="plateau", patience=0,
                    augmentation={"translate": 0.1, "degrees": 10}, seed=0, checkpoint=sys.argv[1])
    json.dump(result["history"], open(sys.argv[2], "w"))
""")


def run_training(tmp_path, name, kill_after_epoch=None):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    checkpoint, out = tmp_path / f"{name}.pt", tmp_path / f"{name}.json"
    args = [sys.executable, str(script), str(checkpoint), str(out)]
    if kill_after_epoch is not None:
        proc = subprocess.Popen(args)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if checkpoint.exists():
                state = torch.load(checkpoint, weights_only=True)["state"]
                if state["epoch"] >= kill_after_epoch:
                    break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists(), "the run finished before it could be killed"
    subprocess.run(args, check=True, timeout=300)
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in json.loads(out.read_text())]


def test_killed_run_resumes_and_equals_an_uninterrupted_run(tmp_path):
    uninterrupted = run_training(tmp_path, "straight")
    resumed = run_training(tmp_path, "killed", kill_after_epoch=2)
    assert len(resumed) == 4
    assert resumed == uninterrupted


def test_same_seed_gives_same_metrics(small_data):
    def train():
        torch.manual_seed(0)
        model = kd.StudentNet()
        return kd.fit(model, small_data, epochs=1, batch_size=64, seed=3, augmentation={})["history"][0]
    first, second = train(), train()
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_non_finite_loss_stops_with_epoch_and_batch(small_data):
    model = kd.StudentNet()
    with torch.no_grad():
        model.fc2.bias.fill_(float("nan"))
    with pytest.raises(kd.NonFiniteLossError, match="epoch 1, batch 1"):
        kd.fit(model, small_data, epochs=1, batch_size=64)


def test_distillation_with_cached_logits_learns(small_data):
    teacher = kd.StudentNet()
    cache = torch.randn(2, len(small_data["train_images"]), 10)
    torch.manual_seed(0)
    student = kd.StudentNet()
    result = kd.fit(student, small_data, epochs=2, batch_size=64, teacher_logits=cache, temperature=4.0,
                    alpha=0.5, augmentation={"flip": True})
    assert len(result["history"]) == 2 and result["best_epoch"] in (1, 2)
    online = kd.fit(kd.StudentNet(), small_data, epochs=1, batch_size=64, teacher=teacher.eval(), alpha=0.5)
    assert online["history"][0]["train_loss"] > 0


def test_weight_average_is_an_exponential_moving_average_with_a_ramp():
    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    torch.nn.init.zeros_(model[0].weight)
    average = kd.WeightAverage(model, decay=0.9)
    expected = 0.0
    for step, weight in enumerate([1.0, 1.0, -2.0, 4.0] + [0.5] * 86, start=1):
        model[0].weight.data.fill_(weight)
        model[1].num_batches_tracked += 1
        average.update(model)
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * weight
        assert average.model[0].weight.item() == pytest.approx(expected)
    assert decay == 0.9  # the ramp has reached the decay
    assert average.model[1].num_batches_tracked.item() == 90  # integer buffers are copied, not averaged
    assert not average.model.training and not any(p.requires_grad for p in average.model.parameters())
    with pytest.raises(ValueError, match="decay 1.0 must be in \\(0, 1\\)"):
        kd.WeightAverage(model, decay=1.0)


def test_fit_with_weight_average_keeps_the_trained_history_and_returns_the_average(small_data):
    def train(ema):
        torch.manual_seed(0)
        model = kd.StudentNet()
        return model, kd.fit(model, small_data, epochs=3, batch_size=64, augmentation={}, ema=ema)
    _, trained = train(0.0)
    model, averaged = train(0.9)
    assert [h["val_accuracy"] for h in averaged["history"]] == [h["val_accuracy"] for h in trained["history"]]
    assert "ema_val_accuracy" not in trained["history"][0]
    chosen = [h["ema_val_accuracy"] for h in averaged["history"]]
    assert averaged["best_val_accuracy"] == max(chosen) and averaged["best_epoch"] == chosen.index(max(chosen)) + 1
    val = kd.evaluate(model, small_data["val_images"], small_data["val_labels"], small_data["normalize"])
    assert val["accuracy"] == pytest.approx(averaged["best_val_accuracy"])  # the average's weights, loaded


def test_fit_with_weight_average_resumes_as_if_uninterrupted(small_data, tmp_path):
    def train(epochs, checkpoint):
        torch.manual_seed(0)
        model = kd.StudentNet()
        result = kd.fit(model, small_data, epochs=epochs, batch_size=64, augmentation={}, ema=0.9,
                        checkpoint=checkpoint)
        return model, [{k: v for k, v in h.items() if k != "seconds"} for h in result["history"]]
    straight, history = train(3, tmp_path / "straight.pt")
    train(2, tmp_path / "stopped.pt")
    resumed, resumed_history = train(3, tmp_path / "stopped.pt")
    assert resumed_history == history
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_bfloat16_training_runs_the_forward_pass_in_bfloat16_and_keeps_float32_weights(small_data):
    model, dtypes = kd.StudentNet(), []
    model.conv1.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    result = kd.fit(model, small_data, epochs=1, batch_size=64, max_batches=2, precision="bfloat16",
                    teacher_logits=torch.randn(2, len(small_data["train_images"]), 10), alpha=0.5)
    assert dtypes[:2] == [torch.bfloat16, torch.bfloat16]  # the two training batches
    assert dtypes[-1] == torch.float32                       # evaluation stays float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result["history"][0]["train_loss"] > 0
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose float32 or bfloat16"):
        kd.fit(kd.StudentNet(), small_data, epochs=1, batch_size=64, precision="fp8")


def test_a_checkpoint_of_other_settings_is_not_resumed(small_data, tmp_path):
    checkpoint = tmp_path / "run.resume.pt"
    kd.fit(kd.StudentNet(), small_data, epochs=1, batch_size=64, checkpoint=checkpoint, config={"teacher": "a"})
    with pytest.raises(ValueError, match="other settings.*teacher.*delete it"):
        kd.fit(kd.StudentNet(), small_data, epochs=2, batch_size=64, checkpoint=checkpoint, config={"teacher": "b"})
    resumed = kd.fit(kd.StudentNet(), small_data, epochs=2, batch_size=64, checkpoint=checkpoint, config={"teacher": "a"})
    assert len(resumed["history"]) == 2


def test_train_student_names_runs_by_everything_that_shapes_them(small_data, tmp_path):
    config = dict(epochs=1, batch_size=64, seed=0, augmentation={"flip": True, "scale": (1.0, 1.0)})
    cache = torch.randn(2, len(small_data["train_images"]), 10)
    model, scratch = kd.train_student(small_data, config, prefix="s", run_dir=tmp_path)
    assert kd.count_parameters(model) == 95_386 and scratch["teacher_mode"] is None
    assert scratch["config"]["augmentation"]["scale"] == [1.0, 1.0]  # plain types, as checkpoints hold
    _, first = kd.train_student(small_data, config, prefix="s", run_dir=tmp_path, teacher_logits=cache,
                                teacher_sha256="a")
    _, other = kd.train_student(small_data, config, prefix="s", run_dir=tmp_path, teacher_logits=cache,
                                teacher_sha256="b")
    assert len({scratch["tag"], first["tag"], other["tag"]}) == 3  # a new teacher never resumes the old run
    assert (tmp_path / f"{first['tag']}.resume.pt").exists() and (tmp_path / f"{first['tag']}.log").exists()
    _, again = kd.train_student(small_data, config, prefix="s", run_dir=tmp_path, teacher_logits=cache,
                                teacher_sha256="a")
    assert again["tag"] == first["tag"] and again["history"] == first["history"]  # replayed, not retrained


def test_plain_turns_tuples_into_lists_at_any_depth():
    assert kd.plain({"a": (1, 2), "b": [{"c": (3,)}], "d": "x"}) == {"a": [1, 2], "b": [{"c": [3]}], "d": "x"}


def test_compiled_falls_back_to_eager_when_compiling_fails(monkeypatch):
    model = kd.StudentNet().eval()
    x = torch.randn(4, 3, 28, 28)

    def broken_at_first_call(module):
        def call(_):
            raise RuntimeError("InductorError: no C++ compiler found")
        return call
    monkeypatch.setattr(torch, "compile", broken_at_first_call)
    forward = kd.compiled(model)
    with pytest.warns(UserWarning, match="torch.compile is unavailable here.*no C\\+\\+ compiler"):
        out = forward(x)
    assert torch.equal(out, model(x))

    def broken_at_once(module):
        raise RuntimeError("Windows not yet supported for torch.compile")
    monkeypatch.setattr(torch, "compile", broken_at_once)
    with pytest.warns(UserWarning, match="Windows not yet supported"):
        assert kd.compiled(model) is model


def test_compiled_does_not_hide_a_real_error(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda module: module)  # "compiles" to the model itself
    forward = kd.compiled(kd.StudentNet())
    with pytest.raises(RuntimeError):
        forward(torch.randn(2, 1, 5, 5))  # wrong input: fails eagerly too


def test_checkpoint_round_trip_in_float16(tmp_path):
    model = kd.StudentNet().eval()
    path = tmp_path / "student.pt"
    digest = kd.save_checkpoint(model, {"arch": "student_net", "note": "test"}, path, half=True)
    assert (tmp_path / "student.pt.sha256").read_text().startswith(digest)
    loaded, meta = kd.load_checkpoint(path)
    assert meta["note"] == "test" and loaded.fc1.weight.dtype == torch.float32
    x = torch.randn(4, 3, 28, 28)
    assert torch.allclose(loaded(x), model(x), atol=1e-2)
    assert isinstance(torch.load(path, weights_only=True), dict)


def test_missing_checkpoint_says_how_to_get_it(tmp_path):
    with pytest.raises(kd.CheckpointError, match="does not exist"):
        kd.load_checkpoint(tmp_path / "absent.pt")


def test_altered_checkpoint_fails_its_checksum(tmp_path):
    path = tmp_path / "student.pt"
    kd.save_checkpoint(kd.StudentNet(), {"arch": "student_net"}, path)
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(kd.CheckpointError, match="SHA-256"):
        kd.load_checkpoint(path)


def test_wrong_shape_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "student.pt"
    model = kd.StudentNet()
    model.fc1 = torch.nn.Linear(1568, 64)
    kd.save_checkpoint(model, {"arch": "student_net"}, path)
    with pytest.raises(kd.CheckpointError, match=r"student.pt: 'fc1.weight' has shape \(64, 1568\)"):
        kd.load_checkpoint(path)


def test_wrong_architecture_names_the_first_missing_key(tmp_path):
    path = tmp_path / "student.pt"
    kd.save_checkpoint(kd.StudentNet(), {"arch": "resnet50"}, path)
    with pytest.raises(kd.CheckpointError, match="lacks 'conv1.weight'|'conv1.weight' has shape"):
        kd.load_checkpoint(path)


class CarriesCode:
    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_checkpoint_carrying_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "meta": {"arch": "student_net"}, "payload": CarriesCode()}, path)
    with pytest.raises(kd.CheckpointError, match="weights_only"):
        kd.load_checkpoint(path)


@pytest.mark.parametrize("params, message", [
    ({"epochs": 0}, "epochs=0"), ({"batch_size": -1}, "batch_size=-1"), ({"alpha": 1.5}, r"\[0, 1\]"),
    ({"temperature": 0}, "temperature=0"), ({"arch": "vgg"}, "student_net"), ({"profile": "medium"}, "quick"),
    ({"device": "tpu"}, "cuda"), ({"factor": 1.0}, r"\(0, 1\)"),
    ({"extra_teachers": "checkpoints/student_improved.pt"}, "list of checkpoint paths"),
    ({"erase": 1.5}, "erase=1.5.*probability"), ({"ema": 1.0}, r"ema=1.0.*0 \(off\).*\(0, 1\)"),
    ({"precision": "half"}, "precision='half'.*'float32' or 'bfloat16'"), ({"translate": 0.5}, r"translate=0.5.*\[0, 0.5\)"),
])
def test_invalid_parameters_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        kd.check_parameters(**params)


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="unknown device"):
        kd.default_device("tpu")
    assert kd.default_device("cpu").type == "cpu"


def test_run_info_counts_sources_not_run_outputs_as_dirty(monkeypatch, tmp_path):
    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.md").write_text("a")
    (tmp_path / "code.py").write_text("a")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t")
    monkeypatch.setattr(kd, "ROOT", tmp_path)
    assert kd.run_info()["git_dirty"] is False
    (tmp_path / "report" / "report.md").write_text("b")  # what a run writes
    assert kd.run_info()["git_dirty"] is False
    (tmp_path / "code.py").write_text("b")
    assert kd.run_info()["git_dirty"] is True


def test_run_info_names_the_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu avx2 avx512_vnni\n")
    assert kd.cpu_name(cpuinfo) == "Some CPU 9000 (VNNI)"
    cpuinfo.write_text("model name\t: Older CPU\nflags\t\t: fpu avx2\n")
    assert kd.cpu_name(cpuinfo) == "Older CPU"
    assert kd.cpu_name(tmp_path / "missing") and kd.run_info()["cpu"]
    assert kd.run_info()["threads"] == torch.get_num_threads()


def test_first_images_trims_train_and_test_but_never_validation(small_data):
    data = kd.first_images(dict(small_data), n_train=100, n_test=50)
    assert len(data["train_images"]) == len(data["train_labels"]) == len(data["train_index"]) == 100
    assert len(data["test_images"]) == len(data["test_labels"]) == 50
    assert len(data["val_labels"]) == len(small_data["val_labels"])
    assert len(kd.first_images(dict(small_data))["train_labels"]) == len(small_data["train_labels"])


def test_load_teacher_refuses_other_normalisation(tmp_path):
    path = tmp_path / "teacher.pt"
    normalize = {"mean": [0.3] * 3, "std": [0.4] * 3}
    kd.save_checkpoint(kd.StudentNet(), {"arch": "student_net", "normalize": normalize}, path)
    _, meta, digest = kd.load_teacher(path, normalize)
    assert meta["arch"] == "student_net" and digest == kd.sha256_of(path)
    with pytest.raises(ValueError, match="teacher.pt"):
        kd.load_teacher(path, {"mean": [0.5] * 3, "std": [0.4] * 3})


def test_ship_student_writes_a_reloadable_checkpoint_and_its_metrics(small_data, tmp_path):
    config = dict(epochs=1, batch_size=64, seed=0, augmentation={"flip": True})
    model, result = kd.train_student(small_data, config, prefix="s", run_dir=tmp_path, arch="student_gap",
                                     max_batches=2)
    test = kd.evaluate(model, small_data["test_images"], small_data["test_labels"], small_data["normalize"])
    path, metrics_path = tmp_path / "student.pt", tmp_path / "student.json"
    metrics = kd.ship_student(model, result, test, small_data, path, metrics_path, arch="student_gap",
                              augmentation=config["augmentation"], teacher_sha256="abc", seed=0, note="extra")
    saved = json.loads(metrics_path.read_text())
    assert saved == json.loads(json.dumps(metrics)) and saved["note"] == "extra"
    assert saved["test_accuracy"] == test["accuracy"] and saved["checkpoint_sha256"] == kd.sha256_of(path)
    assert saved["run"]["teacher_sha256"] is None  # trained from scratch: no teacher is recorded
    reloaded, meta = kd.load_checkpoint(path)
    assert meta["arch"] == "student_gap" and meta["parameters"] == kd.count_parameters(reloaded) < 100_000
    assert set(saved["per_class_accuracy"]) == set(kd.CLASSES)
    with pytest.raises(kd.CheckpointError, match="disagrees"):
        kd.ship_student(model, result, {**test, "accuracy": test["accuracy"] + 0.5}, small_data, path, metrics_path,
                        arch="student_gap", augmentation={}, teacher_sha256=None, seed=0)


def test_stratified_folds_partition_the_images_with_every_class_in_each():
    labels = torch.arange(10).repeat_interleave(53)                   # 53 images per class
    folds = kd.stratified_folds(labels, 5, seed=0)
    together = torch.cat(folds)
    assert len(together) == len(labels) and torch.equal(together.sort().values, torch.arange(len(labels)))
    for fold in folds:
        counts = torch.bincount(labels[fold], minlength=10)
        assert counts.min() >= 10 and counts.max() <= 11                 # 53 / 5 per class, rounded either way
    assert not torch.equal(folds[0], kd.stratified_folds(labels, 5, seed=1)[0])


def test_out_of_fold_logits_come_from_models_that_never_saw_the_image(small_data, monkeypatch, tmp_path):
    """A stand-in for train_student whose 'model' answers, as logit 0, the distance from each input
    to the nearest image it was trained on: zero exactly where it has seen the image."""
    class NearestSeen(torch.nn.Module):
        def __init__(self, train_images, normalize):
            super().__init__()
            self.seen = kd.to_model_input(train_images.unsqueeze(1).float() / 255, normalize).flatten(1)
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            distance = torch.cdist(x.flatten(1), self.seen).min(1).values
            return torch.cat([distance[:, None], torch.zeros(len(x), 9)], 1)

    trained_on = []

    def fake_train_student(data, config, *, prefix, teacher_logits, **kwargs):
        assert len(data["train_index"]) == len(data["train_labels"])   # the subset keeps its keys aligned
        trained_on.append((prefix, len(data["train_labels"]), None if teacher_logits is None else teacher_logits.shape))
        return NearestSeen(data["train_images"], data["normalize"]), {"best_val_accuracy": 0.5}

    monkeypatch.setattr(kd, "train_student", fake_train_student)
    n = len(small_data["train_labels"])
    teacher_logits = torch.zeros(2, n, 10)
    logits, val_accuracy = kd.out_of_fold_logits(small_data, {"seed": 0}, folds=4, prefix="oof", run_dir=tmp_path,
                                                 teacher_logits=teacher_logits)
    assert logits.shape == (2, n, 10) and val_accuracy == [0.5] * 4
    assert logits[0, :, 0].min() > 0                                   # no image was predicted by a model that saw it
    assert [p for p, _, _ in trained_on] == [f"oof_fold{i}of4" for i in (1, 2, 3, 4)]
    assert sum(n - m for _, m, _ in trained_on) == n                   # each image held out exactly once
    assert all(shape == (2, m, 10) for _, m, shape in trained_on)      # the teacher's logits of the same images
