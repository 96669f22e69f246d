import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F

import kd_helpers as kd

# A tiny run of `fit` whose state lives in the runs folder ($KD_RUNS_DIR), outside any checkout.
TRAIN_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    import kd_helpers as kd
    data = kd.fashion_mnist_splits()
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(55000, generator=g)[:2000]
    data.update(train_images=data["train_images"][pick], train_labels=data["train_labels"][pick],
                train_index=data["train_index"][pick], val_images=data["val_images"][:500],
                val_labels=data["val_labels"][:500])
    torch.manual_seed(0)
    model = kd.StudentNet()
    config = dict(epochs=3, batch_size=100, lr=1e-3, schedule="plateau", patience=0,
                  augmentation={"translate": 0.1, "degrees": 10}, seed=0)
    result = kd.fit(model, data, config, checkpoint=kd.runs_dir() / f"{sys.argv[1]}.resume.pt", settings=config)
    json.dump(result["history"], open(sys.argv[2], "w"))
""")


def run_training(tmp_path, name, kill_after_epoch=None):
    """Run TRAIN_SCRIPT from a copy of kd_helpers.py (a checkout of its own); when `kill_after_epoch`, kill it
    with SIGKILL once that epoch is saved, then run the same command from another fresh copy."""
    runs = tmp_path / "runs"
    env = {**os.environ, "KD_RUNS_DIR": str(runs)}
    out = tmp_path / f"{name}.json"

    def checkout(label):
        folder = tmp_path / f"checkout_{name}_{label}"
        folder.mkdir()
        shutil.copy(kd.ROOT / "kd_helpers.py", folder)
        (folder / "train.py").write_text(TRAIN_SCRIPT)
        return [sys.executable, str(folder / "train.py"), name, str(out)], {**env, "PYTHONPATH": str(folder)}, folder
    if kill_after_epoch is not None:
        args, run_env, folder = checkout("first")
        proc = subprocess.Popen(args, env=run_env, cwd=folder)
        status = runs / f"{name}.status.json"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if status.exists() and json.loads(status.read_text())["epoch"] >= kill_after_epoch:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists(), "the run finished before it could be killed"
        shutil.rmtree(folder)  # the checkout is gone; the state outside it is not
    args, run_env, folder = checkout("again")
    subprocess.run(args, env=run_env, cwd=folder, check=True, timeout=300)
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in json.loads(out.read_text())]


def test_killed_run_resumes_from_a_fresh_checkout_and_equals_an_uninterrupted_run(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:  # two one-thread processes side by side
        straight = pool.submit(run_training, tmp_path, "straight")
        killed = pool.submit(run_training, tmp_path, "killed", kill_after_epoch=1)
        uninterrupted, resumed = straight.result(), killed.result()
    assert len(resumed) == 3
    assert resumed == uninterrupted
    assert "killed: epoch 3 of 3" in "\n".join(kd.run_status(tmp_path / "runs"))


def test_a_run_stopped_within_an_epoch_resumes_from_its_last_saved_batch(small_data, tmp_path, monkeypatch):
    """A long epoch is saved every `save_every` seconds (here: after every batch); a run interrupted in its second
    epoch resumes from the last batch saved, not from the epoch's start, and ends as an uninterrupted run does."""
    config = dict(epochs=2, batch_size=64, seed=5, augmentation={"flip": True, "degrees": 10.0})

    def train(checkpoint):
        torch.manual_seed(0)
        model = kd.StudentNet()   # dropout: the resumed epoch must continue its random state too
        result = kd.fit(model, small_data, config, checkpoint=checkpoint, settings=config, save_every=0)
        return [{k: v for k, v in h.items() if k != "seconds"} for h in result["history"]], model.state_dict()

    uninterrupted, weights = train(tmp_path / "straight.resume.pt")
    calls, augment = [], kd.augment

    def stop_at_the_third_batch_of_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8 + 3:   # 512 images in batches of 64: 8 a epoch
            raise KeyboardInterrupt
        return augment(*args, **kwargs)
    monkeypatch.setattr(kd, "augment", stop_at_the_third_batch_of_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "stopped.resume.pt")
    monkeypatch.setattr(kd, "augment", augment)
    status = json.loads((tmp_path / "stopped.status.json").read_text())
    assert (status["epoch"], status["batch"], status["batches"]) == (1, 2, 8)
    assert "epoch 1 of 2, 2 of 8 batches into epoch 2" in kd.run_status(tmp_path)[0]
    assert "h left" in kd.run_status(tmp_path)[0]   # from the epoch's pace so far
    monkeypatch.setattr(kd, "train_one_epoch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):   # resumed, then stopped at once: status still knows the time left
        train(tmp_path / "stopped.resume.pt")
    assert "h left" in kd.run_status(tmp_path)[0]
    monkeypatch.undo()
    resumed, resumed_weights = train(tmp_path / "stopped.resume.pt")
    assert resumed == uninterrupted
    assert all(torch.equal(weights[k], resumed_weights[k]) for k in weights)


def test_runs_live_outside_the_repository_unless_told_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("KD_RUNS_DIR", raising=False)
    assert kd.runs_dir() == kd.Path.home() / ".cache" / "kd-fashion"
    monkeypatch.setenv("KD_RUNS_DIR", str(tmp_path))
    assert kd.runs_dir() == tmp_path
    assert kd.runs_dir("runs") == kd.ROOT / "runs"


def test_status_says_epoch_best_accuracy_and_time_left(small_data, tmp_path):
    checkpoint = tmp_path / "teacher_x.resume.pt"
    kd.fit(kd.StudentNet(), small_data, dict(epochs=2, batch_size=64), checkpoint=checkpoint, max_batches=1)
    status = json.loads((tmp_path / "teacher_x.status.json").read_text())
    assert status["epoch"] == status["epochs"] == 2 and 0 <= status["best_val_accuracy"] <= 1
    (line,) = kd.run_status(tmp_path)
    assert line.startswith("teacher_x: epoch 2 of 2, best validation accuracy") and "finished" in line
    status.update(epoch=1, eta_seconds=7200)
    (tmp_path / "teacher_x.status.json").write_text(json.dumps(status))
    assert "epoch 1 of 2" in kd.run_status(tmp_path)[0] and "about 2.0 h left" in kd.run_status(tmp_path)[0]
    status.update(epoch=0, best_epoch=None, eta_seconds=None)  # as fit writes it when a run starts
    (tmp_path / "teacher_x.status.json").write_text(json.dumps(status))
    assert "epoch 0 of 2, no epoch finished yet, the time left is known after an epoch" in kd.run_status(tmp_path)[0]
    (tmp_path / "sweep").mkdir()   # a notebook's runs in a folder of their own are listed too, by their path
    (tmp_path / "sweep" / "kd_T2.status.json").write_text(json.dumps(status))
    assert any(line.startswith("sweep/kd_T2: epoch 0 of 2") for line in kd.run_status(tmp_path))


def test_the_time_left_follows_the_typical_recent_epoch_not_one_slowed_by_a_busy_machine():
    history = [{"seconds": s} for s in (2000, 2100, 8000, 2200)]   # the third epoch shared the CPU
    assert kd.seconds_left(history, 10) == 6 * 2200
    assert kd.seconds_left(history[:1], 3) == 2 * 2000
    assert kd.seconds_left([], 3) is None
    assert kd.seconds_left(history, 10, into=0.5) == 5.5 * 2200   # half-way through the fifth epoch
    # resumed on a machine now idle: the pace of the running process, not the epochs that shared the CPU
    assert kd.seconds_left(history, 10, into=0.5, pace=1000) == 5.5 * 1000
    assert kd.seconds_left([], 3, pace=1000) == 3 * 1000


def test_a_resumed_run_estimates_its_time_left_from_its_own_pace(small_data, tmp_path):
    checkpoint, log = tmp_path / "run.resume.pt", tmp_path / "run.log"
    config = dict(epochs=3, batch_size=64)
    kd.fit(kd.StudentNet(), small_data, {**config, "epochs": 1}, checkpoint=checkpoint, max_batches=2)
    saved = torch.load(checkpoint, weights_only=True)
    saved["state"]["history"][0]["seconds"] = 1e6   # the first epoch crawled beside another job
    torch.save(saved, checkpoint)
    kd.fit(kd.StudentNet(), small_data, config, checkpoint=checkpoint, max_batches=2, log_file=log)
    second = next(line for line in log.read_text().splitlines() if "epoch 2/3" in line)
    assert float(second.split("eta ")[1].split(" min")[0]) < 60   # the median of the epochs would say 8,000 min


def test_a_truncated_resumable_checkpoint_names_the_file_and_the_remedy(small_data, tmp_path):
    checkpoint = tmp_path / "run.resume.pt"
    kd.fit(kd.StudentNet(), small_data, dict(epochs=1, batch_size=64), checkpoint=checkpoint, max_batches=1)
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(kd.CheckpointError, match="run.resume.pt is truncated or corrupt.*delete it"):
        kd.fit(kd.StudentNet(), small_data, dict(epochs=2, batch_size=64), checkpoint=checkpoint, max_batches=1)


def test_same_seed_gives_same_metrics(small_data):
    def train():
        torch.manual_seed(0)
        model = kd.StudentNet()
        return kd.fit(model, small_data, dict(epochs=1, batch_size=64, seed=3))["history"][0]
    first, second = train(), train()
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_train_config_refuses_unknown_choices_by_name():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; choose adam or sgd"):
        kd.TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose float32 or bfloat16 or auto"):
        kd.TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="epochs=0"):
        kd.TrainConfig(epochs=0)
    with pytest.raises(TypeError):
        kd.TrainConfig(ema=0.9)  # not an option: fit reads at a glance what it takes
    assert kd.TrainConfig(epochs=3).epochs == 3


def test_non_finite_loss_stops_with_epoch_and_batch(small_data):
    model = kd.StudentNet()
    with torch.no_grad():
        model.fc2.bias.fill_(float("nan"))
    with pytest.raises(kd.NonFiniteLossError, match="epoch 1, batch 1"):
        kd.fit(model, small_data, dict(epochs=1, batch_size=64))


def test_distillation_with_cached_logits_learns(small_data):
    teacher = kd.StudentNet()
    cache = torch.randn(2, len(small_data["train_images"]), 10)
    torch.manual_seed(0)
    student = kd.StudentNet()
    result = kd.fit(student, small_data, dict(epochs=2, batch_size=64, temperature=4.0, alpha=0.5,
                                              augmentation={"flip": True}), teacher_logits=cache)
    assert len(result["history"]) == 2 and result["best_epoch"] in (1, 2)
    online = kd.fit(kd.StudentNet(), small_data, dict(epochs=1, batch_size=64, alpha=0.5), teacher=teacher.eval())
    assert online["history"][0]["train_loss"] > 0


def test_online_teacher_sees_the_students_exact_augmented_batch(small_data):
    seen = {}

    class Recorder(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name, self.net = name, kd.StudentNet()

        def forward(self, x):
            seen.setdefault(self.name, []).append(x.clone())
            return self.net(x)
    student, teacher = Recorder("student"), Recorder("teacher").eval()
    kd.fit(student, small_data, dict(epochs=1, batch_size=64, augmentation={"flip": True, "degrees": 10.0}),
           teacher=teacher, max_batches=2)
    assert len(seen["teacher"]) == 2
    for s, t in zip(seen["student"], seen["teacher"]):  # the training batches (evaluation comes after)
        assert torch.equal(s, t)


def test_bfloat16_training_runs_the_forward_pass_in_bfloat16_and_keeps_float32_weights(small_data):
    model, dtypes = kd.StudentNet(), []
    model.conv1.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    result = kd.fit(model, small_data, dict(epochs=1, batch_size=64, precision="bfloat16", alpha=0.5), max_batches=2,
                    teacher_logits=torch.randn(2, len(small_data["train_images"]), 10))
    assert dtypes[:2] == [torch.bfloat16, torch.bfloat16]  # the two training batches
    assert dtypes[-1] == torch.float32                       # evaluation stays float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result["history"][0]["train_loss"] > 0


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_only_where_the_hardware_computes_in_it(small_data, monkeypatch, native):
    monkeypatch.setattr(kd, "has_native_bfloat16", lambda device: native)
    expected = "bfloat16" if native else "float32"
    assert kd.resolve_precision("auto", "cpu") == expected
    assert kd.resolve_precision("float32", "cpu") == "float32" and kd.resolve_precision("bfloat16", "cpu") == "bfloat16"
    model, dtypes = kd.StudentNet(), []
    model.conv1.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    result = kd.fit(model, small_data, dict(epochs=1, batch_size=64, precision="auto"), max_batches=1)
    assert dtypes[0] == getattr(torch, expected)
    assert result["history"][0]["precision"] == expected   # each epoch says what it ran in


def test_a_checkpoint_of_other_settings_is_not_resumed(small_data, tmp_path):
    checkpoint = tmp_path / "run.resume.pt"
    kd.fit(kd.StudentNet(), small_data, dict(epochs=1, batch_size=64), checkpoint=checkpoint, settings={"teacher": "a"})
    with pytest.raises(ValueError, match="other settings.*teacher.*delete it"):
        kd.fit(kd.StudentNet(), small_data, dict(epochs=2, batch_size=64), checkpoint=checkpoint, settings={"teacher": "b"})
    resumed = kd.fit(kd.StudentNet(), small_data, dict(epochs=2, batch_size=64), checkpoint=checkpoint,
                     settings={"teacher": "a"})
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


def test_grid_search_trains_each_setting_and_scratch_without_the_teacher(small_data, tmp_path, capsys, monkeypatch):
    cache = torch.randn(2, len(small_data["train_images"]), 10)
    base = dict(epochs=1, batch_size=64, seed=0)
    compiled = []
    monkeypatch.setattr(kd, "compiled", lambda model: compiled.append(model) or model)
    accuracy = kd.grid_search(small_data, base, {"scratch": {}, "kd_T2": {"temperature": 2.0, "alpha": 0.5}},
                              prefix="g", run_dir=tmp_path, teacher_logits=cache, teacher_sha256="t", max_batches=1,
                              compile=True, parallel=1)  # here, where compiled is watched
    assert len(compiled) == 2   # each run trains through torch.compile
    assert set(accuracy) == {"scratch", "kd_T2"} and all(0 <= a <= 1 for a in accuracy.values())
    assert "kd_T2" in capsys.readouterr().out
    names = sorted(p.name for p in tmp_path.glob("*.resume.pt"))
    assert len(names) == 2 and any(n.startswith("g_scratch") for n in names)


def _two_students(small_data, logits=None):
    logits = torch.randn(2, len(small_data["train_images"]), 10, generator=torch.Generator().manual_seed(0)) \
        if logits is None else logits
    config = dict(epochs=2, batch_size=64, seed=0)
    return {"scratch": dict(config=config, prefix="s"),
            "kd": dict(config={**config, "temperature": 2.0, "alpha": 0.5}, prefix="k", teacher_logits=logits)}


def test_students_trained_at_once_equal_those_trained_one_after_the_other(small_data, tmp_path, capsys):
    jobs, threads = _two_students(small_data), torch.get_num_threads()
    torch.set_num_threads(1)  # here as in each of the two processes: the same arithmetic
    try:
        one_by_one = kd.train_students(small_data, jobs, run_dir=tmp_path / "a", parallel=1, max_batches=2,
                                       teacher_sha256="t")
        assert "scratch: " not in capsys.readouterr().out
        at_once = kd.train_students(small_data, jobs, run_dir=tmp_path / "b", parallel=2, max_batches=2,
                                    teacher_sha256="t", poll=0.1)
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "scratch: " in out and "kd: " in out and "epoch 2/2" in out  # each run's epochs, as they came
    assert out.count("epoch 2/2") == 2   # and not again when the finished runs are loaded
    no_time = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    for name in jobs:
        (model_a, a), (model_b, b) = one_by_one[name], at_once[name]
        assert a["tag"] == b["tag"] and no_time(a["history"]) == no_time(b["history"])
        assert all(torch.equal(x, y) for x, y in zip(model_a.state_dict().values(), model_b.state_dict().values()))


def test_a_student_that_fails_in_its_process_raises_its_error_in_the_caller(small_data, tmp_path):
    jobs = _two_students(small_data, logits=torch.full((2, len(small_data["train_images"]), 10), float("nan")))
    with pytest.raises(kd.NonFiniteLossError, match="epoch 1, batch 1"):
        kd.train_students(small_data, jobs, run_dir=tmp_path, parallel=2, max_batches=2, teacher_sha256="t", poll=0.1)
    assert kd._finished(next(tmp_path.glob("s_*.resume.pt")))  # the student from scratch trained all the same


def test_students_trained_at_once_end_with_their_killed_caller(small_data, tmp_path):
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(f"""
        import kd_helpers as kd
        if __name__ == "__main__":
            data = kd.first_images(kd.fashion_mnist_splits(), 2000)
            config = dict(epochs=1000, batch_size=64)
            kd.train_students(data, {{"a": dict(config=config, prefix="a"), "b": dict(config=config, prefix="b")}},
                              run_dir={str(tmp_path)!r}, parallel=2)
    """))
    caller = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline, children = time.time() + 120, []
        while time.time() < deadline and len(list(tmp_path.glob("*.log"))) < 2:  # both runs are training
            time.sleep(0.5)
        children_file = f"/proc/{caller.pid}/task/{caller.pid}/children"
        children = [int(pid) for pid in open(children_file).read().split()]
        assert len(children) >= 2
    finally:
        caller.send_signal(signal.SIGKILL)
        caller.wait()
    deadline = time.time() + 30
    alive = lambda pid: os.path.exists(f"/proc/{pid}") and "zombie" not in open(f"/proc/{pid}/status").read()  # noqa: E731
    while time.time() < deadline and any(alive(pid) for pid in children):
        time.sleep(0.2)
    assert not any(alive(pid) for pid in children), "a student's process outlived its killed caller"


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


def test_compiled_student_trains_like_the_eager_one(recwarn):
    """The real torch.compile (this machine has a C++ compiler): one step gives the eager step's loss and weights."""
    torch.manual_seed(0)
    eager, fast = kd.StudentNet(), kd.StudentNet()
    fast.load_state_dict(eager.state_dict())
    x, y = torch.randn(16, 3, 28, 28), torch.randint(0, 10, (16,))
    losses = []
    for model, forward in ((eager, eager), (fast, kd.compiled(fast))):
        model.eval()   # no dropout: the two steps see the same network
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = F.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert not [w for w in recwarn if "torch.compile is unavailable" in str(w.message)]   # it really compiled
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    for a, b in zip(eager.parameters(), fast.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


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
    ({"teacher_mode": "ensemble"}, "'cached', 'views' or 'online'"), ({"views": 0}, "views=0.*positive"),
    ({"students": ["kd", "teacher"]}, "'kd' and/or 'scratch'"), ({"scale": [1.1, 0.9]}, "low <= high"),
    ({"degrees": -5}, r"\[0, 180\]"), ({"erase": 1.5}, "erase=1.5.*probability"),
    ({"precision": "half"}, "precision='half'.*'float32', 'bfloat16'.*'auto'"), ({"translate": 0.5}, r"translate=0.5.*\[0, 0.5\)"),
    ({"views": 8, "view_counts": [4, 8]}, r"view_counts=\[4, 8\].*below `views`"), ({"view_counts": 4}, "view_counts=4"),
    ({"scratch_augmentation": "homework_mix"}, "no teacher to label a mixed image"),
    ({"scratch_augmentations": ["flip", "homework_mix"]}, "no teacher to label a mixed image"),
    ({"augmentation": "homework_mix", "teacher_mode": "cached"}, "teacher_mode 'views' alone"),
    ({"view_augmentations": ["cutout"]}, "view_augmentations=.*augmentation names"),
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


def test_load_teacher_refuses_other_normalisation_and_gives_a_channels_last_teacher(tmp_path):
    path = tmp_path / "teacher.pt"
    normalize = {"mean": [0.3] * 3, "std": [0.4] * 3}
    kd.save_checkpoint(kd.StudentNet(), {"arch": "student_net", "normalize": normalize}, path)
    teacher, meta, digest = kd.load_teacher(path, normalize)
    assert meta["arch"] == "student_net" and digest == kd.sha256_of(path)
    assert teacher.conv1.weight.is_contiguous(memory_format=torch.channels_last)
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


def test_ship_teacher_writes_a_float16_checkpoint_its_metrics_and_the_one_test_accuracy(small_data, tmp_path):
    model = kd.build_model("student_net")  # any model of ARCHS ships alike; a ResNet50 would only be slower
    result = kd.fit(model, small_data, dict(epochs=1, batch_size=64), max_batches=1)
    path, metrics_path = tmp_path / "teacher.pt", tmp_path / "teacher.json"
    metrics = kd.ship_teacher(model, result, small_data, path, metrics_path, arch="student_net",
                              config={"epochs": 1, "lr": 0.1, "augmentation": {"flip": True}},
                              augmentation={"flip": True}, seed=0)
    reloaded, meta = kd.load_checkpoint(path)
    assert meta["arch"] == "student_net" and meta["epochs"] == 1 and meta["stem"] is None  # stems: ResNets only
    assert meta["test_accuracy"] == metrics["test_accuracy"] and meta["normalize"] == small_data["normalize"]
    assert "augmentation" not in meta["config"] and meta["augmentation"] == {"flip": True}
    assert torch.load(path, weights_only=True)["state_dict"]["fc1.weight"].dtype == torch.float16
    assert json.loads(metrics_path.read_text())["checkpoint_sha256"] == kd.sha256_of(path)


def test_a_truncated_checkpoint_says_so_and_is_not_called_unsafe(tmp_path):
    path = tmp_path / "student.pt"
    kd.save_checkpoint(kd.StudentNet(), {"arch": "student_net"}, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(kd.CheckpointError, match="student.pt is truncated or corrupt") as caught:
        kd.load_checkpoint(path, verify=False)
    assert "code" not in str(caught.value)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(kd.CheckpointError, match="student.pt is (truncated or )?corrupt"):
        kd.load_checkpoint(path, verify=False)


def test_view_parameters_are_a_function_of_seed_image_and_view_alone():
    once = kd.view_parameters(0, [[3, 7, 11]], [[0], [1]])
    again = kd.view_parameters(0, [7], [1])                 # one view, regenerated on its own
    assert once.shape == (2, 3, len(kd.VIEW_FIELDS)) and torch.equal(again[0], once[1, 1])
    assert not torch.equal(kd.view_parameters(1, [7], [1]), again)   # another seed, another view
    flip, angle, shift_x, shift_y, scale, partner, share = kd.view_parameters(0, list(range(2000)), [0]).T
    assert set(flip.tolist()) == {0.0, 1.0} and 0.4 < flip.mean() < 0.6
    assert angle.abs().max() <= 10 and shift_x.abs().max() <= 0.1 and shift_y.abs().max() <= 0.1
    assert 0.9 <= scale.min() and scale.max() <= 1.1 and angle.std() > 4
    assert not partner.any() and not share.any()   # no mixing unless asked


def test_mixed_views_draw_a_partner_and_its_share_and_blend_before_the_geometry():
    *_, partner, share = kd.view_parameters(0, list(range(2000)), [0], mix=0.4, partners=50).T
    assert partner.min() == 0 and partner.max() == 49 and torch.equal(partner, partner.floor())
    assert 0 <= share.min() and share.max() <= 0.4 and 0.15 < share.mean() < 0.25
    with pytest.raises(ValueError, match="needs `partners`"):
        kd.view_parameters(0, [1], [0], mix=0.4)
    pool = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    images = pool[:2].unsqueeze(1).float() / 255
    params = torch.tensor([[1.0, 0, 0, 0, 1, 4, 0.25], [0, 0, 0, 0, 1, 3, 0]])   # mirror a 3:1 blend with image 4
    out = kd.apply_views(images, params, pool)
    blend = 0.75 * images[0] + 0.25 * pool[4].float() / 255
    assert torch.allclose(out[0], blend.flip(-1), atol=1e-5) and torch.allclose(out[1], images[1], atol=1e-5)
    unmixed = params.clone()
    unmixed[:, 6] = 0
    assert torch.equal(kd.apply_views(images, unmixed, pool), kd.apply_views(images, unmixed))   # a share of 0: exact
    with pytest.raises(ValueError, match="pass `pool`"):
        kd.apply_views(images, params)
    with pytest.raises(ValueError, match="teacher_mode 'views'"):
        kd.augment(images, **kd.AUGMENTATIONS["homework_mix"])


def test_apply_views_mirrors_like_flip_and_transforms_like_augment():
    images = torch.rand(3, 1, 28, 28)
    identity = torch.tensor([[1.0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0, 0], [1, 0, 0, 0, 1, 0, 0]])
    out = kd.apply_views(images, identity)
    assert torch.allclose(out[0], images[0].flip(-1), atol=1e-5) and torch.allclose(out[1], images[1], atol=1e-5)
    generator = torch.Generator().manual_seed(0)
    augmented, flipped = kd.augment(images, generator, flip=False, degrees=10.0, translate=0.1, scale=(0.9, 1.1))
    generator = torch.Generator().manual_seed(0)
    u = lambda low, high: torch.rand(3, generator=generator) * (high - low) + low  # noqa: E731 - augment's draws
    angle, scale, shift_x, shift_y = u(-10, 10), u(0.9, 1.1), u(-0.1, 0.1), u(-0.1, 0.1)
    params = torch.stack([torch.zeros(3), angle, shift_x, shift_y, scale, torch.zeros(3), torch.zeros(3)], 1)
    assert torch.allclose(kd.apply_views(images, params), augmented, atol=1e-6)


def tiny_view_data(small_data, n=40):
    return {**small_data, "train_images": small_data["train_images"][:n], "train_labels": small_data["train_labels"][:n],
            "train_index": small_data["train_index"][:n]}


@pytest.mark.parametrize("augmentation", ["homework", "homework_mix"])
def test_view_cache_holds_the_teachers_logits_on_exactly_the_regenerated_views(small_data, tmp_path, augmentation):
    data = tiny_view_data(small_data)
    torch.manual_seed(0)
    teacher = kd.StudentNet().eval()
    settings = kd.AUGMENTATIONS[augmentation]
    cache = kd.view_cache(teacher, data, "sha-a", views=3, cache_dir=tmp_path, batch_size=16, progress=False,
                          precision="float32", augmentation=settings)
    assert cache.params.shape == (3, 40, len(kd.VIEW_FIELDS)) and cache.logits.shape == (3, 40, 10)
    assert cache.logits.dtype == torch.float16
    assert bool((cache.params[..., -1] > 0).any()) == (augmentation == "homework_mix")
    image, view = 17, 2
    params = kd.view_parameters(0, [int(data["train_index"][image])], [view], **settings, partners=40)
    assert torch.equal(params[0], cache.params[view, image])  # bit-identical, from (seed, image index, view) alone
    x = kd.apply_views(data["train_images"][[image]].unsqueeze(1).float() / 255, params, data["train_images"])
    with torch.no_grad():
        expected = teacher(kd.to_model_input(x, data["normalize"]))[0]
    assert torch.allclose(cache.logits[view, image].float(), expected, atol=2e-2, rtol=1e-2)
    again = kd.view_cache(teacher, data, "sha-a", views=3, cache_dir=tmp_path, batch_size=16, progress=False,
                          augmentation=settings)
    assert torch.equal(again.logits, cache.logits)   # reused from disk


def test_the_first_views_of_a_cache_are_the_cache_of_fewer_views(small_data, tmp_path):
    data = tiny_view_data(small_data)
    torch.manual_seed(0)
    teacher = kd.StudentNet().eval()
    build = lambda views, folder: kd.view_cache(teacher, data, "sha-a", views=views, cache_dir=tmp_path / folder,  # noqa: E731
                                                batch_size=16, progress=False, precision="float32")
    fewer, more = build(2, "two"), build(3, "three").first(2)
    assert torch.equal(more.params, fewer.params) and torch.equal(more.logits, fewer.logits)
    assert more.count == 2 and more.meta["key"] == fewer.meta["key"]   # runs on either are the same run
    with pytest.raises(ValueError, match="holds 3 views of each image; ask for 1 to 3"):
        build(3, "three").first(4)


def test_a_view_cache_of_another_teacher_is_refused_and_a_truncated_one_named(small_data, tmp_path):
    data = tiny_view_data(small_data)
    teacher = kd.StudentNet().eval()
    kd.view_cache(teacher, data, "sha-a", views=2, cache_dir=tmp_path, batch_size=16, progress=False)
    (path,) = tmp_path.glob("views_*.pt")
    expected = {**torch.load(path, weights_only=True)["meta"], "teacher_sha256": "sha-b"}
    with pytest.raises(kd.ViewCacheError, match="teacher_sha256 = 'sha-a', not 'sha-b'"):
        kd.load_view_cache(path, expected)
    saved = torch.load(path, weights_only=True)
    torch.save({**saved, "params": saved["params"][..., :5]}, tmp_path / "old.pt")   # before views could mix
    with pytest.raises(kd.ViewCacheError, match="old.pt holds 5 parameters per view, not 7.*older version"):
        kd.load_view_cache(tmp_path / "old.pt", saved["meta"])
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(kd.ViewCacheError, match=f"view cache {path} is truncated or corrupt.*delete it"):
        kd.view_cache(teacher, data, "sha-a", views=2, cache_dir=tmp_path, batch_size=16, progress=False)


def test_a_view_cache_built_in_another_precision_is_reused(small_data, tmp_path, monkeypatch):
    data = tiny_view_data(small_data)
    teacher = kd.StudentNet().eval()
    monkeypatch.setattr(kd, "has_native_bfloat16", lambda device: True)
    built = kd.view_cache(teacher, data, "sha-a", views=2, cache_dir=tmp_path, batch_size=16, progress=False)
    assert built.meta["precision"] == "bfloat16"
    monkeypatch.setattr(kd, "has_native_bfloat16", lambda device: False)
    reused = kd.view_cache(teacher, data, "sha-a", views=2, cache_dir=tmp_path, batch_size=16, progress=False)
    assert torch.equal(reused.logits, built.logits) and reused.meta["precision"] == "bfloat16"  # as it was made
    assert len(list(tmp_path.glob("views_*.pt"))) == 1


def test_an_interrupted_view_cache_resumes_from_its_last_finished_view(small_data, tmp_path):
    data = tiny_view_data(small_data)
    torch.manual_seed(0)
    teacher = kd.StudentNet().eval()
    straight = kd.view_cache(teacher, data, "sha-a", views=3, cache_dir=tmp_path / "a", batch_size=16, progress=False)

    class Interrupted(torch.nn.Module):  # the teacher, stopped in the middle of the second view
        def __init__(self):
            super().__init__()
            self.net, self.calls = teacher, 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 5:  # 3 batches a view
                raise KeyboardInterrupt
            return self.net(x)
    with pytest.raises(KeyboardInterrupt):
        kd.view_cache(Interrupted(), data, "sha-a", views=3, cache_dir=tmp_path / "b", batch_size=16, progress=False)
    (partial,) = (tmp_path / "b").glob("*.partial")
    assert torch.load(partial, weights_only=True)["meta"]["done"] == 1
    resumed = kd.view_cache(teacher, data, "sha-a", views=3, cache_dir=tmp_path / "b", batch_size=16, progress=False)
    assert torch.equal(resumed.logits, straight.logits) and not partial.exists()


@pytest.mark.parametrize("augmentation", ["homework", "homework_mix"])
def test_distillation_from_views_trains_on_cached_views(small_data, augmentation):
    data = tiny_view_data(small_data, 128)
    cache = kd.ViewCache(kd.view_parameters(0, data["train_index"].numpy()[None], [[0], [1]],
                                            **kd.AUGMENTATIONS[augmentation], partners=128),
                         torch.randn(2, 128, 10).half(), {"key": "k"})
    result = kd.fit(kd.StudentNet(), data, dict(epochs=1, batch_size=64, alpha=0.5), views=cache)
    assert result["history"][0]["train_loss"] > 0


def test_onnx_files_carry_their_input_contract(tmp_path):
    model = kd.StudentNet().eval()
    meta = {"arch": "student_net", "normalize": {"mean": [0.28] * 3, "std": [0.35] * 3}}
    path = kd.export_onnx(model, tmp_path / "student.onnx")
    kd.write_onnx_metadata(path, kd.input_contract(meta))
    contract = kd.read_onnx_metadata(path)
    assert json.loads(contract["normalize_mean"]) == [0.28] * 3 and json.loads(contract["classes"])[9] == "Ankle boot"
    assert "(N, 3, 28, 28)" in contract["input"] and "(x - mean) / std" in contract["preprocessing"]


def test_zero_init_residual_makes_every_bottleneck_start_as_the_identity():
    torch.manual_seed(0)
    model = kd.zero_init_residual(kd.build_model("resnet50_stride1")).eval()
    block = model.layer2[1]   # a block without a downsampling shortcut: output = relu(input + branch)
    x = torch.randn(2, 512, 7, 7).relu()
    assert torch.equal(block(x), x)
    assert all(b.bn3.weight.abs().sum() == 0 for layer in (model.layer1, model.layer4) for b in layer)


def test_gradient_clipping_bounds_each_step(small_data):
    def first_step(clip):
        torch.manual_seed(0)
        model = kd.StudentNet()
        before = [p.detach().clone() for p in model.parameters()]
        config = kd.TrainConfig(epochs=1, batch_size=64, lr=1.0, optimizer="sgd", schedule="one_cycle",
                                augmentation=kd.AUGMENTATIONS["none"], clip_grad_norm=clip)
        kd.fit(model, small_data, config, max_batches=1)
        return torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)]).norm()
    # Nesterov's first step moves the weights by lr x (1 + momentum) x gradient; the one-cycle starts at 0.04 x peak
    assert first_step(1e-3) <= 0.04 * 1.9 * 1e-3 * 1.001 < first_step(0.0)
    with pytest.raises(ValueError, match="clip_grad_norm"):
        kd.TrainConfig(clip_grad_norm=-1)
