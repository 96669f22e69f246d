"""Distillation throughput on this machine: the conventional pipeline against the project's loop.

    python benchmarks/kd_throughput.py            # the README's table (a few minutes on 2 cores)
    python benchmarks/kd_throughput.py --tiny     # a few small batches, as the test suite runs it

(a) conventional: a Dataset of PIL images with torchvision transforms (flip, 3 channels, normalise)
    in a DataLoader, the ResNet50 teacher run on every augmented batch;
(b) project loop, online teacher: in-memory uint8 tensors, batched augmentation on tensors;
(c) project loop, cached teacher logits (kd.teacher_logits_cache);
(d) project loop, cached views (kd.view_cache: 8 views of each image with the homework's flip, rotation,
    shift and scaling, regenerated per batch; random logits stand in for the teacher's, which cost nothing here).
(b)-(d) train through kd.compiled(student) (torch.compile) unless --no-compile.
All four train the same StudentNet with distillation_loss, batch 128, on the same images.
Inference: student and teacher, latency at batch 1 and throughput at batch 256.
"""
from __future__ import annotations

import argparse
import time

import torch
import torchvision.transforms as T
from PIL import Image

import kd_helpers as kd

AUG = {"flip": True, "degrees": 0.0, "translate": 0.0, "scale": (1.0, 1.0)}  # as 04 trains (flip only)
CACHED = "(c) project loop, cached teacher logits"
VIEWS = "(d) project loop, cached views (flip, rotation, shift, scale)"
MIXED = "(e) project loop, cached views mixed with a partner image"


class PILFashionMNIST(torch.utils.data.Dataset):
    """What torchvision.datasets.FashionMNIST does per item: a PIL image through the transforms."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i].numpy(), mode="L")), int(self.labels[i])


def conventional(data, teacher, batches, warmup, workers, batch_size):
    mean, std = data["normalize"]["mean"], data["normalize"]["std"]
    transform = T.Compose([T.RandomHorizontalFlip(), T.Grayscale(3), T.ToTensor(), T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(PILFashionMNIST(data["train_images"], data["train_labels"], transform),
                                         batch_size=batch_size, shuffle=True, num_workers=workers)
    student = kd.StudentNet()
    opt = torch.optim.Adam(student.parameters(), 1e-3)
    seen, start = 0, None
    for step, (x, y) in enumerate(loader):
        if step == warmup:
            seen, start = 0, time.perf_counter()
        if step == warmup + batches:
            break
        with torch.no_grad():
            soft = teacher(x)
        loss = kd.distillation_loss(student(x), soft, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def project_loop(data, teacher, batches, warmup, batch_size, cached_logits=None, views=None, compile=True):
    student = kd.StudentNet().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(student.parameters(), 1e-3)
    forward = kd.compiled(student) if compile else student
    config = kd.TrainConfig(batch_size=batch_size, augmentation=AUG)

    def run(n):
        start = time.perf_counter()
        kd.train_one_epoch(student, data["train_images"], data["train_labels"], data["normalize"], config,
                           optimizer=opt, generator=torch.Generator().manual_seed(0), max_batches=n, forward=forward,
                           teacher=teacher if cached_logits is None and views is None else None,
                           teacher_logits=cached_logits, views=views)
        return time.perf_counter() - start
    run(warmup)  # includes compiling
    return batches * batch_size / run(batches)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a few batches of 16 only (the test suite's smoke run)")
    parser.add_argument("--teacher", default="checkpoints/teacher_resnet50.pt")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the conventional pipeline")
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: PyTorch's choice)")
    parser.add_argument("--no-compile", action="store_true", help="run the project's loop eagerly (no torch.compile)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches, warmup, repeats, batch_size, big = (3, 1, 2, 16, 16) if args.tiny else (60, 5, 50, 128, 256)
    torch.manual_seed(0)
    data = kd.fashion_mnist_splits()
    teacher, teacher_meta = kd.load_checkpoint(kd.project_path(args.teacher))
    teacher = teacher.to(memory_format=torch.channels_last)
    n_cache = batch_size * (batches + warmup)
    cached = kd.predict(teacher, data["train_images"][:n_cache], data["normalize"])
    cached = torch.stack([cached, kd.predict(teacher, data["train_images"][:n_cache], data["normalize"], flip=True)])
    small = {**data, "train_images": data["train_images"][:n_cache], "train_labels": data["train_labels"][:n_cache]}
    view_cache = lambda augmentation: kd.ViewCache(  # noqa: E731 - random logits: the speed is the student's alone
        kd.view_parameters(0, data["train_index"][:n_cache].numpy()[None], torch.arange(8).numpy()[:, None],
                           **kd.AUGMENTATIONS[augmentation], partners=n_cache), torch.randn(8, n_cache, 10).half(), {"key": "benchmark"})

    rows = {"(a) conventional: PIL transforms + DataLoader, online teacher": conventional(data, teacher, batches, warmup, args.workers, batch_size),
            "(b) project loop, online teacher": project_loop(small, teacher, batches, warmup, batch_size, compile=not args.no_compile),
            CACHED: project_loop(small, teacher, batches, warmup, batch_size, cached, compile=not args.no_compile),
            VIEWS: project_loop(small, teacher, batches, warmup, batch_size, views=view_cache("homework"), compile=not args.no_compile),
            MIXED: project_loop(small, teacher, batches, warmup, batch_size, views=view_cache("homework_mix"),
                                compile=not args.no_compile)}
    base = rows["(a) conventional: PIL transforms + DataLoader, online teacher"]
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, {batches} batches of {batch_size} after {warmup} warm-up, "
             f"project loop {'eager' if args.no_compile else 'compiled (torch.compile)'}, teacher {teacher_meta['arch']}",
             "", "| distillation training | images/s | vs (a) |", "|---|---:|---:|"]
    lines += [f"| {name} | {speed:,.0f} | {speed / base:.1f}x |" for name, speed in rows.items()]
    lines += ["", f"| inference | latency, batch 1 (ms) | throughput, batch {big} (images/s) |", "|---|---:|---:|"]
    inference = {}
    for name, model in (("student (StudentNet)", kd.StudentNet()), ("teacher (ResNet50)", teacher)):
        inference[name] = {"latency_ms": kd.inference_speed(model, 1, repeats * 4)["latency_ms"],
                           "images_per_s": kd.inference_speed(model, big, max(2, repeats // 5))["images_per_s"]}
        lines.append(f"| {name} | {inference[name]['latency_ms']:.2f} | {inference[name]['images_per_s']:,.0f} |")
    print("\n".join(lines))
    if not args.tiny:  # the records the README and the report read
        run = kd.run_info()
        (kd.ROOT / "report" / "benchmark.md").write_text(
            "# Distillation throughput\n\nWritten by `python benchmarks/kd_throughput.py` on "
            f"{time.strftime('%Y-%m-%d')}, machine {run['machine']}, commit `{run['git_commit'][:10]}`.\n\n"
            + "\n".join(lines) + "\n")
        kd.write_json({"training_images_per_s": rows, "speedup_c_over_a": rows[CACHED] / base,
                       "views_over_cached": rows[VIEWS] / rows[CACHED], "inference": inference,
                       "threads": torch.get_num_threads(), "batches": batches, "compiled": not args.no_compile,
                       "teacher_arch": teacher_meta["arch"], "augmentation": AUG, "date": time.strftime("%Y-%m-%d"),
                       "command": "python benchmarks/kd_throughput.py", "run": run},
                      kd.ROOT / "report" / "metrics" / "benchmark.json")
    return rows


if __name__ == "__main__":
    main()
