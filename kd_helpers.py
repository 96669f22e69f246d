"""Knowledge distillation on Fashion-MNIST: the helpers the notebooks call.

Sections, in the order data flows through them:
    1. data          find, verify and load the IDX files; split; normalise; batched augmentation; views
                     that are a function of (seed, image, view number)
    2. models        StudentNet (the homework's), GapStudentNet (the improved one), the ResNet50 teacher,
                     build_model(arch)
    3. losses        distillation_loss (Hinton et al., 2015), decoupled_kd_loss (Zhao et al., 2022)
    4. training      TrainConfig, train_one_epoch, fit (resumable, atomic checkpoints, status), train_student,
                     train_students (several at once, a process each, on a CPU)
    5. soft targets  the teacher's, cached: teacher_logits_cache (each image and its mirror), ViewCache
                     (augmented views, FKD-style)
    6. evaluation    predict, evaluate, what soft targets teach, confusion matrix, calibration
    7. artefacts     checkpoints (weights_only), ship_teacher, ship_student, metrics JSON, run info,
                     parameter checks, where runs live
    8. figures       save_fig and the plots the notebooks share
    9. deployment    ONNX export with its input contract, int8 static quantisation (ONNX Runtime), speed
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import math
import multiprocessing
import os
import pickle
import platform
import statistics
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# ---------------------------------------------------------------------------- 1. data

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")   # package dataset-fashion-mnist


LOCAL_DIR = ROOT / "data"                                # torchvision download cache


SHA256 = {  # of the decompressed IDX files (Xiao et al., 2017)
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


HOW_TO_GET_DATA = (
    "Get Fashion-MNIST in one of these ways:\n"
    "  - Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  (files in /usr/share/datasets/fashion-mnist)\n"
    "  - pass data_dir=... (notebook parameter) or set FASHION_MNIST_DIR to a folder holding the four\n"
    "    IDX files (train-images-idx3-ubyte[.gz], ...)\n"
    "  - allow a download with download=True (notebook parameter) or FASHION_MNIST_DOWNLOAD=1;\n"
    "    torchvision then fetches them into data/")


class DataError(RuntimeError):
    """The data set is missing, truncated or corrupt; the message says how to fix it."""


def _idx_path(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz", folder / "FashionMNIST" / "raw" / name):
        if candidate.is_file():
            return candidate
    return None


def _has_all_files(folder: Path) -> bool:
    return all(_idx_path(folder, name) for name in SHA256)


def find_data_dir(data_dir: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The folder holding the four IDX files, searched in this order: `data_dir`, $FASHION_MNIST_DIR,
    Debian's package folder, the local cache `data/`, then torchvision's download if allowed."""
    explicit = data_dir or os.environ.get("FASHION_MNIST_DIR")
    if explicit:
        folder = Path(explicit).expanduser()
        if not folder.is_dir():
            raise DataError(f"Fashion-MNIST folder {folder} does not exist.\n{HOW_TO_GET_DATA}")
        missing = [name for name in SHA256 if _idx_path(folder, name) is None]
        if missing:
            raise DataError(f"Fashion-MNIST folder {folder} lacks {', '.join(missing)}.\n{HOW_TO_GET_DATA}")
        return folder
    for folder in (DEBIAN_DIR, LOCAL_DIR):
        if _has_all_files(folder):
            return folder
    if download or os.environ.get("FASHION_MNIST_DOWNLOAD") == "1":
        import torchvision
        for train in (True, False):
            torchvision.datasets.FashionMNIST(LOCAL_DIR, train=train, download=True)
        return LOCAL_DIR
    raise DataError(f"Fashion-MNIST not found in {DEBIAN_DIR} nor {LOCAL_DIR}.\n{HOW_TO_GET_DATA}")


def read_idx(path: Path, expected_sha256: str | None = None) -> torch.Tensor:
    """One IDX file (gzip-ed or not) as a uint8 tensor, its SHA-256 and length checked."""
    raw = path.read_bytes()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (EOFError, OSError) as err:
        raise DataError(f"{path} is not a complete gzip file ({err}): the copy is truncated or corrupt. "
                        f"Delete it and get a fresh copy.\n{HOW_TO_GET_DATA}") from None
    if len(raw) < 8 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes. Get a fresh copy.\n{HOW_TO_GET_DATA}")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) != offset + math.prod(shape):
        raise DataError(f"{path} holds {len(raw) - offset} bytes of data, but its header announces "
                        f"{math.prod(shape)} (shape {shape}): the file is truncated. Get a fresh copy.\n"
                        f"{HOW_TO_GET_DATA}")
    if expected_sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != expected_sha256:
            raise DataError(f"{path}: SHA-256 of its contents is {digest}, expected {expected_sha256}. "
                            f"The file is corrupt or not the official Fashion-MNIST. Get a fresh copy.\n"
                            f"{HOW_TO_GET_DATA}")
    return torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8).reshape(shape)


def load_fashion_mnist(data_dir=None, download: bool = False) -> dict[str, torch.Tensor]:
    """Train and test images (N, 28, 28) and labels (N,), uint8 and int64, checksums verified."""
    folder = find_data_dir(data_dir, download)
    read = {name: read_idx(_idx_path(folder, name), digest) for name, digest in SHA256.items()}
    return {"train_images": read["train-images-idx3-ubyte"],
            "train_labels": read["train-labels-idx1-ubyte"].long(),
            "test_images": read["t10k-images-idx3-ubyte"],
            "test_labels": read["t10k-labels-idx1-ubyte"].long()}


def _shuffled_classes(labels: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """The indices of each class, in a random order drawn from `seed`: what stratified splits cut."""
    generator = torch.Generator().manual_seed(seed)
    members = [(labels == c).nonzero().flatten() for c in labels.unique()]
    return [m[torch.randperm(len(m), generator=generator)] for m in members]


def stratified_split(labels: torch.Tensor, n_val: int = 5000, seed: int = 0):
    """Indices (train, val): n_val images held out, the same share of every class, the same every time."""
    classes = _shuffled_classes(labels, seed)
    per_class = n_val // len(classes)
    return (torch.cat([m[per_class:] for m in classes]).sort().values,
            torch.cat([m[:per_class] for m in classes]).sort().values)


def fashion_mnist_splits(data_dir=None, download: bool = False, n_val: int = 5000, seed: int = 0) -> dict:
    """The project's data: train (55k), val (5k) and test (10k) images and labels, plus
    `train_index` (each train image's index in the official training set) and `normalize`."""
    data = load_fashion_mnist(data_dir, download)
    train_idx, val_idx = stratified_split(data["train_labels"], n_val, seed)
    splits = {
        "train_images": data["train_images"][train_idx], "train_labels": data["train_labels"][train_idx],
        "val_images": data["train_images"][val_idx], "val_labels": data["train_labels"][val_idx],
        "test_images": data["test_images"], "test_labels": data["test_labels"],
        "train_index": train_idx,
    }
    splits["normalize"] = normalization_constants(splits["train_images"])
    splits["split_seed"] = seed
    return splits


def first_images(data: dict, n_train: int | None = None, n_test: int | None = None, n_val: int | None = None) -> dict:
    """`data` with only its first n_train training, n_test test and n_val validation images (quick runs); None
    keeps all (a real run never trims the validation split: model selection sees all of it)."""
    if n_train:
        for key in ("train_images", "train_labels", "train_index"):
            data[key] = data[key][:n_train]
    data["test_images"], data["test_labels"] = data["test_images"][:n_test], data["test_labels"][:n_test]
    data["val_images"], data["val_labels"] = data["val_images"][:n_val], data["val_labels"][:n_val]
    return data


def normalization_constants(images: torch.Tensor, channels: int = 3) -> dict:
    """Per-channel mean and std of uint8 images scaled to [0, 1]; grey is replicated to `channels`."""
    pixels = images.double() / 255
    return {"mean": [pixels.mean().item()] * channels, "std": [pixels.std().item()] * channels}


def check_normalization(meta: dict, normalize: dict, source="the checkpoint") -> None:
    """Raise if a model was trained with other normalisation constants than `normalize` (to 1e-6:
    the sums behind them differ in their last bits with the number of threads)."""
    for key in ("mean", "std"):
        if len(meta["normalize"][key]) != len(normalize[key]) or any(
                abs(a - b) > 1e-6 for a, b in zip(meta["normalize"][key], normalize[key])):
            raise ValueError(f"{source} was trained with normalisation {meta['normalize']}, but this data "
                             f"gives {normalize}: was it trained on another split or data set?")


def to_model_input(images: torch.Tensor, normalize: dict) -> torch.Tensor:
    """(N, 28, 28) uint8 or (N, 1, 28, 28) float in [0, 1] -> normalised (N, C, 28, 28) float."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255)
    if images.dim() == 3:
        images = images.unsqueeze(1)
    mean = torch.tensor(normalize["mean"], device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(normalize["std"], device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std  # broadcasting replicates grey to C channels


AUGMENTATIONS = {  # the students' augmentations by name: augment()'s keywords
    "none": {"flip": False, "degrees": 0.0, "translate": 0.0, "scale": (1.0, 1.0)},
    "flip": {"flip": True, "degrees": 0.0, "translate": 0.0, "scale": (1.0, 1.0)},
    "homework": {"flip": True, "degrees": 10.0, "translate": 0.1, "scale": (0.9, 1.1)},  # flip, ±10°, ±10 %, ×0.9-1.1
    # views only (teacher_mode "views"): the homework's, each view mixed with a partner training image, whose share
    # is uniform in [0, mix]; the label stays the image's, the teacher's logits are those of the mixed view
    "homework_mix": {"flip": True, "degrees": 10.0, "translate": 0.1, "scale": (0.9, 1.1), "mix": 0.4},
}


def augment(images: torch.Tensor, generator: torch.Generator | None = None, flip: bool = True,
            degrees: float = 10.0, translate: float = 0.1, scale=(0.9, 1.1), erase: float = 0.0, mix: float = 0.0):
    """The homework's augmentation on a whole batch, random parameters per image, then random erasing.

    `images` is (N, 1, H, W) float in [0, 1], so the background fills with 0 (black). Returns the
    augmented batch and the boolean mask of mirrored images (used to look up cached teacher logits).
    Rotation is uniform in +-degrees, translation uniform in +-translate of the size, scale uniform.
    With probability `erase` an image also gets `random_erasing`. Mixing (`mix`) exists for views alone.
    """
    if mix:
        raise ValueError("a mixed image needs the teacher's logits on exactly that mixture: mixing augmentations "
                         "(such as 'homework_mix') train only with teacher_mode 'views'")
    n, device = images.shape[0], images.device

    def uniform(low, high):
        return (torch.rand(n, generator=generator) * (high - low) + low).to(device)

    flipped = (torch.rand(n, generator=generator) < 0.5).to(device) if flip else torch.zeros(n, dtype=torch.bool, device=device)
    images = torch.where(flipped.view(-1, 1, 1, 1), images.flip(-1), images)
    if degrees != 0 or translate != 0 or tuple(scale) != (1, 1):
        angle = uniform(-degrees, degrees)
        factor = uniform(*scale)
        shift_x, shift_y = uniform(-translate, translate), uniform(-translate, translate)
        images = affine(images, angle, shift_x, shift_y, factor)
    if erase > 0:
        images = random_erasing(images, erase, generator)
    return images, flipped


def affine(images, angle, shift_x, shift_y, factor):
    """Rotate each image (N, C, H, W) by `angle` degrees, scale it by `factor` and shift it by `shift_x`,
    `shift_y` (fractions of the size), all (N,) tensors; bilinear, the background filled with 0."""
    angle = angle * math.pi / 180
    shift_x, shift_y = shift_x * 2, shift_y * 2  # affine_grid's coordinates span [-1, 1]
    # affine_grid maps output to input coordinates: the inverse of "rotate, scale, then shift".
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, sin, -(cos * shift_x + sin * shift_y)], 1),
                         torch.stack([-sin, cos, -(-sin * shift_x + cos * shift_y)], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


VIEW_FIELDS = ("flip", "angle", "shift_x", "shift_y", "scale", "partner", "share")   # one view's parameters, in order


def _uniform_hash(seed: int, image, view, stream: int) -> torch.Tensor:
    """Uniform numbers in [0, 1) that depend on (seed, image index, view index, stream) alone: a SplitMix64
    hash of the four integers, so any view can be regenerated without replaying a random generator."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps modulo 2^64, as the hash intends
        x = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.asarray(image, np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
             + np.asarray(view, np.uint64) * np.uint64(0x94D049BB133111EB) + np.uint64(stream) * np.uint64(0xD6E8FEB86659FD93))
        for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x = (x ^ (x >> np.uint64(shift))) * np.uint64(multiplier)
        x = x ^ (x >> np.uint64(31))
    return torch.from_numpy((x >> np.uint64(40)).astype(np.float32) / np.float32(2 ** 24))


def view_parameters(seed: int, image_index, view_index, flip: bool = True, degrees: float = 10.0,
                    translate: float = 0.1, scale=(0.9, 1.1), mix: float = 0.0, partners: int | None = None) -> torch.Tensor:
    """The parameters (..., 7) of a view (VIEW_FIELDS: mirrored or not, rotation in degrees, shifts as
    fractions of the size, scale, then the partner image's position among `partners` images and its share,
    uniform in [0, mix]; 0 and 0 without mixing) for each (image index, view index) pair, broadcast: a pure
    function of the seed and the two indices."""
    image_index, view_index = np.broadcast_arrays(np.asarray(image_index), np.asarray(view_index))
    u = [_uniform_hash(seed, image_index, view_index, stream) for stream in range(7)]
    mirrored = (u[0] < 0.5).float() if flip else torch.zeros_like(u[0])
    if mix and not partners:
        raise ValueError("mixing views needs `partners`: the number of training images a partner is drawn from")
    partner = (u[5] * partners).floor().clamp(max=partners - 1) if mix else torch.zeros_like(u[5])
    return torch.stack([mirrored, (2 * u[1] - 1) * degrees, (2 * u[2] - 1) * translate, (2 * u[3] - 1) * translate,
                        scale[0] + u[4] * (scale[1] - scale[0]), partner, u[6] * mix], -1)


def apply_views(images: torch.Tensor, params: torch.Tensor, pool: torch.Tensor | None = None) -> torch.Tensor:
    """Images (N, 1, H, W) in [0, 1] augmented by the views `params` (N, 7) of `view_parameters`: blended with
    their partners from `pool` (the uint8 training images the partner positions point into; a share of 0
    leaves an image exactly as it was), then mirrored, rotated, scaled and shifted, as `augment` does."""
    params = params.to(images.device)
    if pool is not None:   # blends every view, mixed or not: no check of the shares, no wait for the device
        share = params[:, 6].view(-1, 1, 1, 1)
        partners = pool[params[:, 5].long().to(pool.device)].to(images.device).unsqueeze(1).float().div(255)
        images = (1 - share) * images + share * partners
    elif bool((params[:, 6] > 0).any()):
        raise ValueError("these views mix in partner images: pass `pool`, the training images they come from")
    images = torch.where(params[:, 0].bool().view(-1, 1, 1, 1), images.flip(-1), images)
    return affine(images, params[:, 1], params[:, 2], params[:, 3], params[:, 4])


def random_erasing(images: torch.Tensor, p: float, generator: torch.Generator | None = None,
                   area=(0.02, 0.25), aspect=(0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al., AAAI 2020): with probability p per image, one rectangle covering a
    uniform `area` fraction of the image, its height/width ratio log-uniform in `aspect`, placed
    uniformly, is replaced by uniform noise in [0, 1]. `images` is (N, C, H, W) in [0, 1]."""
    n, _, height, width = images.shape
    rand = lambda: torch.rand(n, generator=generator)  # noqa: E731
    chosen = rand() < p
    size = (rand() * (area[1] - area[0]) + area[0]) * height * width
    ratio = torch.exp(rand() * (math.log(aspect[1]) - math.log(aspect[0])) + math.log(aspect[0]))
    h = (size * ratio).sqrt().round().clamp(1, height)
    w = (size / ratio).sqrt().round().clamp(1, width)
    top, left = (rand() * (height - h + 1)).floor(), (rand() * (width - w + 1)).floor()
    rows, cols = torch.arange(height).view(1, -1, 1), torch.arange(width).view(1, 1, -1)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + h).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + w).view(-1, 1, 1)) & chosen.view(-1, 1, 1))
    noise = torch.rand(images.shape, generator=generator)
    return torch.where(inside.unsqueeze(1).to(images.device), noise.to(images.device), images)


def batches(n: int, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
    """Index tensors covering range(n) in batches, reshuffled per call when `shuffle`."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    return list(order.split(batch_size))


# ---------------------------------------------------------------------------- 2. models

class StudentNet(nn.Module):
    """The homework's student: 3 conv + 2 FC layers, 95,386 parameters, 3x28x28 input."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.bn2 = nn.BatchNorm2d(32)
        self.bn3 = nn.BatchNorm2d(32)
        self.pool = nn.AvgPool2d(2, 2)
        self.fc1 = nn.Linear(32 * 7 * 7, 48)
        self.fc2 = nn.Linear(48, 10)
        self.dropout = nn.Dropout(0.35)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = self.pool(F.relu(self.bn3(self.conv3(x))))
        x = self.dropout(x.flatten(1))
        return self.fc2(self.fc1(x))  # no activation between fc1 and fc2, as in the report


def conv_bn_relu(in_channels: int, out_channels: int, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    """Convolution (no bias: batch norm follows), batch norm, ReLU; `groups=in_channels` is depthwise."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class GapStudentNet(nn.Module):
    """A student under 100,000 parameters that spends them on convolution instead of `fc1`:
    two 3x3 convolutions at 28x28 (32 channels) and at 14x14 (64), two depthwise-separable blocks at
    7x7 (128), then global average pooling and one linear layer. 94,250 parameters, about 20M
    mult-adds (StudentNet: 95,386 and 9.78M, of which fc1 holds 75,312 parameters)."""

    def __init__(self, dropout: float = 0.2):
        super().__init__()
        separable = lambda i, o: [conv_bn_relu(i, i, groups=i), conv_bn_relu(i, o, kernel=1)]  # noqa: E731
        self.features = nn.Sequential(
            conv_bn_relu(3, 32), conv_bn_relu(32, 32), nn.MaxPool2d(2),       # 28x28 -> 14x14
            conv_bn_relu(32, 64), conv_bn_relu(64, 64), nn.MaxPool2d(2),      # 14x14 -> 7x7
            *separable(64, 128), *separable(128, 128))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.dropout(self.features(x).mean((2, 3))))


def resnet50_teacher(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet50, untouched but for the 10-class head (its state dict loads into
    `torchvision.models.resnet50(num_classes=10)`)."""
    import torchvision
    return torchvision.models.resnet50(weights=None, num_classes=num_classes)


def zero_init_residual(model: nn.Module) -> nn.Module:
    """Set the scale of the last batch norm in each residual branch of a torchvision ResNet to zero, so that every
    block starts as the identity (Goyal et al., 2017): a deep ResNet then trains stably at a high learning rate.
    Changes the initial weights only; returns the model."""
    import torchvision
    for block in model.modules():
        if isinstance(block, torchvision.models.resnet.Bottleneck):
            nn.init.zeros_(block.bn3.weight)
        elif isinstance(block, torchvision.models.resnet.BasicBlock):
            nn.init.zeros_(block.bn2.weight)
    return model


def resnet50_stride1_teacher(num_classes: int = 10) -> nn.Module:
    """ResNet50 whose first convolution has stride 1 instead of 2, for 28x28 images.

    The default stem (7x7/2 conv, 3x3/2 max-pool) shrinks 28x28 to 7x7 before layer1 and to 1x1 in
    layer4; with stride 1, layer1 sees 14x14 maps and layer4 2x2. No weight changes shape, so the
    state dict still loads into `torchvision.models.resnet50(num_classes=10)` (set conv1.stride to 1
    there too). It costs about 3x the compute: 80 against 230 training images/s on 2 CPU cores."""
    model = resnet50_teacher(num_classes)
    model.conv1.stride = (1, 1)
    return model


ARCHS = {"student_net": StudentNet, "student_gap": GapStudentNet, "resnet50": resnet50_teacher,
         "resnet50_stride1": resnet50_stride1_teacher}


def build_model(arch: str) -> nn.Module:
    """A fresh model by name: one of ARCHS."""
    if arch not in ARCHS:
        raise ValueError(f"unknown model {arch!r}; choose one of {', '.join(ARCHS)}")
    return ARCHS[arch]()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_mult_adds(model: nn.Module, input_size=(1, 3, 28, 28)) -> int:
    """Multiply-adds of the convolution and linear weights for one image (biases and batch norm left
    out, as the report's 9.78M counts them; torchinfo 1.8 adds those and prints 9.84M)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output[0].numel() * module.weight[0].numel()
        elif isinstance(module, nn.Linear):
            total += module.weight.numel()
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()(torch.zeros(input_size, device=next(model.parameters()).device))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return total


# ---------------------------------------------------------------------------- 3. losses

def distillation_loss(student_logits, teacher_logits, labels, temperature: float = 4.0, alpha: float = 0.9):
    """Hinton, Vinyals and Dean (2015):

        alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

    KL is averaged over the batch; T^2 keeps the soft-target gradients on the scale of the hard ones.
    """
    T = temperature
    kl = F.kl_div(F.log_softmax(student_logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
                  reduction="batchmean", log_target=True)
    return alpha * T * T * kl + (1 - alpha) * F.cross_entropy(student_logits, labels)


def decoupled_kd_loss(student_logits, teacher_logits, labels, temperature: float = 4.0, alpha: float = 1.0,
                      beta: float = 8.0):
    """Decoupled knowledge distillation (Zhao, Cui, Song, Qiu and Liang, CVPR 2022):

        CE(s, y) + alpha * T^2 * TCKD + beta * T^2 * NCKD

    TCKD = KL(b_t || b_s), b = (p_y, 1 - p_y): how sure each model is of the target class;
    NCKD = KL(q_t || q_s), q = softmax over the non-target classes only: the "dark knowledge".
    Classic KD's KL equals TCKD + (1 - p_y^t) * NCKD, which damps NCKD exactly where the teacher is
    confident; DKD weighs the two parts freely. Both averaged over the batch.
    """
    T = temperature
    n, classes = student_logits.shape
    target = F.one_hot(labels, classes).bool()

    def binary(log_p):  # log (p_y, 1 - p_y)
        rest = torch.logsumexp(log_p.masked_fill(target, float("-inf")), dim=1)
        return torch.stack([log_p[target], rest], dim=1)
    log_p_s, log_p_t = F.log_softmax(student_logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1)
    tckd = F.kl_div(binary(log_p_s), binary(log_p_t), reduction="batchmean", log_target=True)
    non_target = lambda logits: F.log_softmax(logits[~target].view(n, classes - 1) / T, dim=1)  # noqa: E731
    nckd = F.kl_div(non_target(student_logits), non_target(teacher_logits), reduction="batchmean", log_target=True)
    return F.cross_entropy(student_logits, labels) + T * T * (alpha * tckd + beta * nckd)


# ---------------------------------------------------------------------------- 4. training

def default_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; otherwise the named device, checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but PyTorch sees no CUDA GPU; use device='auto' or 'cpu'")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' asked for, but MPS is not available; use device='auto' or 'cpu'")
    return torch.device(name)


PRECISIONS = ("float32", "bfloat16", "auto")


def has_native_bfloat16(device) -> bool:
    """Whether `device` computes in bfloat16 in hardware: CUDA GPUs that support it, CPUs with AVX512-BF16 or AMX.
    Elsewhere bfloat16 autocast is emulated and slower than float32 (measured on an AVX2-only CPU: ResNet50
    inference about 8x slower)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # an older or unusual build: assume not
            return False
    return False


def resolve_precision(precision: str, device) -> str:
    """"float32" or "bfloat16" as asked; "auto" is bfloat16 where `device` has it in hardware, float32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if has_native_bfloat16(device) else "float32"
    return precision


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run but the model and the source of soft targets."""
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3                 # initial (plateau) or peak (one_cycle) learning rate
    optimizer: str = "adam"          # adam (AdamW) or sgd (Nesterov momentum 0.9)
    weight_decay: float = 0.0
    schedule: str = "plateau"        # plateau: ReduceLROnPlateau on the validation loss; one_cycle: warm-up, cosine
    factor: float = 0.5              # plateau: multiply the learning rate by this ...
    patience: int = 3                # ... after this many epochs without a lower validation loss
    augmentation: dict = field(default_factory=dict)   # augment()'s keywords; the view cache's views replace it
    temperature: float = 4.0         # distillation: softmax temperature T
    alpha: float = 0.9               # distillation: weight of the soft targets
    method: str = "kd"               # kd (Hinton et al.) or dkd (decoupled KD, weighs its parts by alpha and beta)
    beta: float = 8.0
    precision: str = "float32"       # bfloat16: forward passes under autocast, weights and loss in float32; auto:
                                     # bfloat16 where the device has it in hardware (resolve_precision)
    clip_grad_norm: float = 0.0      # rescale each step's gradient to at most this L2 norm (0: never)
    seed: int = 0                    # initial weights are the caller's; shuffling, augmentation, dropout per epoch

    def __post_init__(self):
        choices = {"optimizer": ("adam", "sgd"), "schedule": ("plateau", "one_cycle"), "method": ("kd", "dkd"),
                   "precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose {' or '.join(allowed)}")
        check_parameters(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                         alpha=self.alpha, temperature=self.temperature, clip_grad_norm=self.clip_grad_norm)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def compiled(model: nn.Module):
    """`torch.compile(model)` as a callable for training steps, or the model itself, with a warning,
    where compiling fails on this machine (no C++ compiler, unsupported platform or Python).
    The parameters stay `model`'s, so its state_dict and checkpoints are unchanged."""
    def eager(err):
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        warnings.warn(f"torch.compile is unavailable here ({reason}); training runs eagerly, only slower")
        return model
    try:
        fast = torch.compile(model)
    except Exception as err:  # noqa: BLE001 - any failure means: run eagerly
        return eager(err)

    def forward(x):
        nonlocal fast
        try:
            return fast(x)
        except Exception as err:  # noqa: BLE001 - compilation happens at the first call; a real error re-raises eagerly
            if fast is model:
                raise
            fast = eager(err)
            return model(x)
    return forward


def train_one_epoch(model, images, labels, normalize, config: TrainConfig, *, optimizer, generator, epoch=0,
                    teacher=None, teacher_logits=None, views=None, lr_at=None, max_batches=None, progress=False,
                    forward=None, resume=None, on_batch=None):
    """One pass over (images, labels), uint8 on the model's device, with one of three sources of soft targets:
    a `teacher` module run on every augmented batch (online), its cached `teacher_logits` (2, N, C: each image
    and its mirror, aligned with `images`), or a `ViewCache` `views` (one of its views of each image, drawn per
    epoch, with the teacher's logits on exactly that view). With one, the loss is `distillation_loss` (method
    "kd") or `decoupled_kd_loss` ("dkd"); without, cross-entropy. `lr_at(step)` sets the learning rate per
    batch; `forward` replaces `model` for the training forward pass (e.g. `compiled(model)`).
    `on_batch(step, snapshot)` is called after each batch; `snapshot()` returns what `resume` takes to continue the
    epoch after that batch exactly as if it had never stopped (batch number, random states, running sums).
    Returns mean loss and accuracy on the augmented training batches."""
    c = config
    device = next(model.parameters()).device
    bfloat16 = resolve_precision(c.precision, device) == "bfloat16"
    distill = ((lambda s, t, y: decoupled_kd_loss(s, t, y, c.temperature, c.alpha, c.beta)) if c.method == "dkd"
               else (lambda s, t, y: distillation_loss(s, t, y, c.temperature, c.alpha)))
    model.train()
    forward = model if forward is None else forward
    order = batches(len(images), c.batch_size, shuffle=True, generator=generator)[:max_batches]
    total_loss = torch.zeros((), device=device)  # summed on the device: no host sync per batch for the sums
    total_correct = torch.zeros((), dtype=torch.long, device=device)
    seen, first = 0, 0
    if resume is not None:   # the order above is the epoch's; the random state goes on from the saved batch
        first, seen = resume["step"], resume["seen"]
        generator.set_state(resume["generator"])
        _set_rng_state(resume["rng"], device)
        total_loss += resume["loss"].to(device)
        total_correct += resume["correct"].to(device)
    for step, idx in enumerate(_progress(order[first:], progress, f"epoch {epoch + 1}"), first):
        on_device = idx.to(device)
        x = images[on_device].unsqueeze(1).float().div_(255)
        if views is not None:
            pick = torch.randint(views.count, (len(idx),), generator=generator).to(device)
            x, soft = apply_views(x, views.params[pick, on_device], images), views.logits[pick, on_device].float()
        else:
            x, flipped = augment(x, generator, **c.augmentation)
        x, y = to_model_input(x, normalize), labels[on_device]
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16):
            logits = forward(x).float()
            if teacher is not None:
                with torch.no_grad():
                    soft = teacher(x).float()
        if teacher_logits is not None:
            soft = teacher_logits[flipped.long(), on_device].float()  # the cache lives on the device: no sync
        loss = F.cross_entropy(logits, y) if teacher is None and teacher_logits is None and views is None \
            else distill(logits, soft, y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss.item()} at epoch {epoch + 1}, batch {step + 1}: lower the "
                                     f"learning rate or check the inputs; the last checkpoint is kept")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.clip_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), c.clip_grad_norm)
        optimizer.step()
        total_loss += loss.detach() * len(idx)
        total_correct += (logits.argmax(1) == y).sum()
        seen += len(idx)
        if on_batch is not None:
            on_batch(step + 1, lambda s=step + 1, n=seen: {
                "step": s, "seen": n, "generator": generator.get_state(), "rng": _rng_state(device),
                "loss": total_loss.detach().cpu(), "correct": total_correct.detach().cpu()})
    return total_loss.item() / seen, total_correct.item() / seen


def _rng_state(device) -> torch.Tensor:
    """The random state that dropout draws from on `device`."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(state: torch.Tensor, device) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state.cpu(), device)
    else:
        torch.set_rng_state(state.cpu())


def _progress(items, enabled, desc):
    if not enabled:
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc, leave=False, mininterval=2)


def one_cycle(peak_lr: float, total_steps: int, warmup: float = 0.15):
    """Linear warm-up to peak_lr, then cosine decay to ~0: lr as a function of the global step."""
    def lr_at(step):
        ramp = max(1, int(total_steps * warmup))
        if step < ramp:
            return peak_lr * (0.04 + 0.96 * step / ramp)
        return peak_lr * 0.5 * (1 + math.cos(math.pi * (step - ramp) / max(1, total_steps - ramp)))
    return lr_at


def fit(model, data, config: TrainConfig | dict, *, teacher=None, teacher_logits=None, views=None, checkpoint=None,
        settings=None, log_file=None, max_batches=None, progress=False, compile=False, save_every: float = 300.0) -> dict:
    """Train `model` on data["train_*"] with `config` (a TrainConfig or its keywords) and the soft targets of
    `teacher`, `teacher_logits` or `views` (see train_one_epoch; none: from scratch); keep the epoch with the
    best validation accuracy, whose weights are loaded into `model` at the end.

    With `checkpoint` (a path), the state after each epoch is written there atomically, with a status file
    beside it (`status_path`), and a later call with the same `settings` (a plain dict naming the run) resumes
    from it; a checkpoint of other settings is refused. Within a long epoch the state is also written every
    `save_every` seconds, so an interruption loses at most that much. Every epoch draws its randomness from the
    seed and its own number, and a resumed epoch continues from the saved random state, so a resumed run equals
    an uninterrupted one. `compile` trains through `compiled(model)`.
    Returns the history (one dict per epoch, with the precision it ran in), best epoch, best validation
    accuracy and training seconds."""
    c = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    device = next(model.parameters()).device
    train_x, train_y = data["train_images"].to(device), data["train_labels"].to(device)
    teacher_logits = None if teacher_logits is None else teacher_logits.to(device)
    views = None if views is None else views.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=c.lr, momentum=0.9, nesterov=True, weight_decay=c.weight_decay)
           if c.optimizer == "sgd" else torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay))
    steps = min(max_batches or math.inf, math.ceil(len(train_x) / c.batch_size))
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=c.factor, patience=c.patience)
               if c.schedule == "plateau" else None)
    lr_curve = one_cycle(c.lr, c.epochs * steps) if c.schedule == "one_cycle" else None
    state = {"epoch": 0, "history": [], "best": None, "best_val_accuracy": -1.0, "train_seconds": 0.0}
    partial = None   # the epoch in progress when the run stopped: its batches done, random state and running sums
    if checkpoint is not None and Path(checkpoint).exists():
        saved = _load_resumable(checkpoint, device)
        same = lambda d: json.dumps(d or {}, sort_keys=True, default=str)  # noqa: E731
        if same(saved.get("config")) != same(settings):
            raise ValueError(f"{checkpoint} was written by a run with other settings ({same(saved.get('config'))}, "
                             f"now {same(settings)}): resuming it would mix two runs; delete it or use another file")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if plateau is not None:
            plateau.load_state_dict(saved["scheduler"])
        state, partial = saved["state"], saved.get("partial")
        for h in state["history"]:
            print(_epoch_line(h, c.epochs, eta=None))
        _log(f"resumed from {checkpoint} after epoch {state['epoch']}"
             + (f", batch {partial['step']} of {steps}" if partial else ""), log_file)

    def write_status(batch=0, eta=None):
        write_json({"epoch": state["epoch"], "epochs": c.epochs, "batch": batch, "batches": steps,
                    "best_epoch": state.get("best_epoch"), "best_val_accuracy": state["best_val_accuracy"],
                    "eta_seconds": eta, "updated": time.strftime("%Y-%m-%d %H:%M:%S")}, status_path(checkpoint))

    def save(partial_epoch=None, eta=None):
        atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": plateau.state_dict() if plateau is not None else {},
                     "state": state, "config": settings or {}, **({"partial": partial_epoch} if partial_epoch else {})},
                    checkpoint)
        write_status(partial_epoch["step"] if partial_epoch else 0, eta)

    # the time left: at this process's pace once it has run a tenth of an epoch (any batch when no epoch has
    # finished yet), else at the last epochs'
    began, batches_here = time.time(), 0

    def time_left(into=0.0):
        known = batches_here >= steps / 10 or (batches_here and not state["history"])
        return seconds_left(state["history"], c.epochs, into, (time.time() - began) / batches_here * steps if known else None)

    if checkpoint is not None and state["epoch"] < c.epochs:  # `run_status` sees the run before its epoch ends
        write_status(partial["step"] if partial else 0, time_left())
    forward = compiled(model) if compile and state["epoch"] < c.epochs else model
    for epoch in range(state["epoch"], c.epochs):
        start = time.time() - (partial["seconds"] if partial else 0.0)
        generator = torch.Generator().manual_seed(c.seed * 100_003 + epoch)
        torch.manual_seed(c.seed * 100_003 + epoch)  # dropout
        lr_at = (lambda step, e=epoch: lr_curve(e * steps + step)) if lr_curve else None
        last_save = time.time()

        def on_batch(step, snapshot):
            nonlocal last_save, batches_here
            batches_here += 1
            if checkpoint is not None and step < steps and time.time() - last_save >= save_every:
                save({**snapshot(), "seconds": time.time() - start}, eta=time_left(step / steps))
                last_save = time.time()
        train_loss, train_acc = train_one_epoch(
            model, train_x, train_y, data["normalize"], c, optimizer=opt, generator=generator, epoch=epoch,
            teacher=teacher, teacher_logits=teacher_logits, views=views, lr_at=lr_at, max_batches=max_batches,
            progress=progress, forward=forward, resume=partial, on_batch=on_batch)
        partial = None
        val = evaluate(model, data["val_images"], data["val_labels"], data["normalize"])
        current_lr = opt.param_groups[0]["lr"]
        if plateau is not None:
            plateau.step(val["loss"])
        seconds = time.time() - start
        state["train_seconds"] += seconds
        state["history"].append({"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc,
                                 "val_loss": val["loss"], "val_accuracy": val["accuracy"], "lr": current_lr,
                                 "seconds": seconds, "precision": resolve_precision(c.precision, device)})
        if val["accuracy"] > state["best_val_accuracy"]:
            state["best_val_accuracy"] = val["accuracy"]
            state["best"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            state["best_epoch"] = epoch + 1
        state["epoch"] = epoch + 1
        eta = time_left()
        _log(_epoch_line(state["history"][-1], c.epochs, eta), log_file)
        if checkpoint is not None:
            save(eta=eta)
    model.load_state_dict(state["best"])
    return {"history": state["history"], "best_epoch": state.get("best_epoch"),
            "best_val_accuracy": state["best_val_accuracy"], "train_seconds": state["train_seconds"]}


def _load_resumable(path, device):
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - a half-written or damaged file: say which and what to do
        raise CheckpointError(f"resumable checkpoint {path} is truncated or corrupt ({_first_line(err)}): delete "
                              f"it to start the run again from epoch 0") from None


def train_student(data, config: dict, *, prefix: str, run_dir, arch: str = "student_net", teacher=None,
                  teacher_logits=None, views=None, teacher_sha256: str | None = None, device="cpu", compile=False,
                  progress=False, max_batches=None):
    """Build `arch` from `config["seed"]` and train it with `fit(config)`: distilled from a `teacher` module
    (online), its cached `teacher_logits`, its `views` (a ViewCache), or from scratch without any. Resumable:
    the run's name (`run_name`: prefix, config, teacher, teacher mode, training-set size, max_batches) names its
    checkpoint and log under `run_dir`, so the same call resumes and any other setting starts afresh.
    Returns (model with its best validation epoch loaded, fit's result plus "config", "tag", "teacher_mode")."""
    mode, tag = _student_run(data, config, prefix=prefix, arch=arch, teacher=teacher, teacher_logits=teacher_logits,
                             views=views, teacher_sha256=teacher_sha256, max_batches=max_batches)
    torch.manual_seed(config.get("seed", 0))
    model = build_model(arch).to(device).to(memory_format=torch.channels_last)
    run_dir = Path(run_dir)
    result = fit(model, data, config, teacher=teacher, teacher_logits=teacher_logits, views=views, compile=compile,
                 progress=progress, max_batches=max_batches, checkpoint=run_dir / f"{tag}.resume.pt",
                 log_file=run_dir / f"{tag}.log", settings=plain(config))
    return model, {**result, "config": plain(config), "tag": tag, "teacher_mode": mode}


def _student_run(data, config, *, prefix, arch="student_net", teacher=None, teacher_logits=None, views=None,
                 teacher_sha256=None, max_batches=None, **_) -> tuple[str | None, str]:
    """(teacher mode, run name) of the run that train_student would train with these keywords."""
    mode = ("online" if teacher is not None else "cached" if teacher_logits is not None
            else "views" if views is not None else None)
    tag = run_name(prefix, config, arch=arch, teacher_mode=mode, teacher_sha256=teacher_sha256 if mode else None,
                   n_train=len(data["train_labels"]), max_batches=max_batches,
                   **({"views": views.meta["key"]} if views is not None else {}))
    return mode, tag


def train_students(data, jobs: dict[str, dict], *, run_dir, device="cpu", parallel: int | None = None,
                   poll: float = 2.0, **common) -> dict[str, tuple]:
    """Train several students, {name: (model, result)} as train_student returns them, for `jobs` ({name:
    train_student's keywords for that run: config, prefix, arch, soft targets}) and the keywords `common` to all.
    On a CPU the runs go `parallel` at a time (None: as many as PyTorch has threads, up to one per job), each in
    its own process on an equal share of the threads: a small model uses one core better than two (on a 2-core
    CPU, the homework's student takes 29 s an epoch on one core beside another, 17 s alone on both: two finish
    about 1.17x sooner at once). Their epoch lines are printed as they come, each after its job's name; then
    every run is loaded from `run_dir` as train_student resumes it (a run whose process failed is resumed here, and its error raised here). On a GPU, with one job,
    or with a teacher module (online soft targets), the runs go one after the other. The processes are spawned,
    so a script that calls this runs its work under `if __name__ == "__main__":` (a notebook needs nothing)."""
    device, threads = torch.device(device), torch.get_num_threads()
    at_once = {}
    if device.type == "cpu" and not any(job.get("teacher") is not None for job in jobs.values()):
        tags = {name: _student_run(data, **job, **common)[1] for name, job in jobs.items()}
        if len(set(tags.values())) < len(tags):
            raise ValueError(f"two of the jobs {', '.join(jobs)} are the same run (same prefix and settings): "
                             f"give each its own prefix")
        at_once = {name: job for name, job in jobs.items() if not _finished(Path(run_dir) / f"{tags[name]}.resume.pt")}
        workers = min(len(at_once), threads if parallel is None else parallel)
        if workers > 1:
            _train_at_once(data, at_once, {**common, "device": device, "run_dir": run_dir, "progress": False},
                           {name: Path(run_dir) / f"{tags[name]}.log" for name in at_once}, workers,
                           max(1, threads // workers), poll)
        else:
            at_once = {}
    trained = {}
    for name, job in jobs.items():
        quiet = contextlib.redirect_stdout(io.StringIO()) if name in at_once else contextlib.nullcontext()
        with quiet:  # its process printed its epochs already
            trained[name] = train_student(data, **job, **common, run_dir=run_dir, device=device)
    return trained


def _train_at_once(data, jobs, common, logs, parallel, threads, poll):
    """Run train_student for each job in its own process (spawned: safe from a notebook), `parallel` at a time
    on `threads` threads each, printing the new lines of each run's log until all have ended. Interrupted
    (or failed), the processes are ended: their runs resume from their last saved state."""
    spawn = multiprocessing.get_context("spawn")
    waiting, running = list(jobs), {}
    read = {name: log.stat().st_size if log.exists() else 0 for name, log in logs.items()}

    def follow(name):  # print the log's lines that are new and complete
        if logs[name].exists():
            with open(logs[name], "rb") as f:
                f.seek(read[name])
                lines = f.read().decode()
            lines = lines[:lines.rfind("\n") + 1]
            read[name] += len(lines.encode())
            for line in lines.splitlines():
                print(f"{name}: {line}", flush=True)
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                name = waiting.pop(0)
                process = spawn.Process(target=_student_process, args=(data, jobs[name], common, threads),
                                        name=f"student {name}")
                process.start()
                running[name] = process
            time.sleep(poll)
            for name in list(running):
                alive = running[name].is_alive()
                follow(name)
                if not alive:
                    running.pop(name).join()
    finally:
        for process in running.values():
            process.terminate()
            process.join()


def _finished(checkpoint: Path) -> bool:
    """Whether the run of this resumable checkpoint has trained all its epochs (its status file says so)."""
    status = status_path(checkpoint)
    if not (checkpoint.exists() and status.exists()):
        return False
    s = json.loads(status.read_text())
    return s["epoch"] >= s["epochs"]


def _student_process(data, job, common, threads):
    """The body of one of _train_at_once's processes: ends with its parent (Linux), prints nothing."""
    if platform.system() == "Linux":
        import ctypes
        import signal
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a killed notebook takes its runs along
    torch.set_num_threads(threads)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        train_student(data, **job, **common)


def grid_search(data, base: dict, settings: dict, *, prefix: str, run_dir, teacher_sha256: str | None = None,
                device="cpu", max_batches=None, compile=False, parallel: int | None = None, **soft) -> dict:
    """Train the homework's student once per named setting (keywords added to the `base` config; a setting
    with a temperature distils from the soft targets `soft`, as `soft_targets` gives them, one without trains
    from scratch), each run resumable (`compile`: through torch.compile), several at once on a CPU
    (`train_students`), one line printed per run. Returns {name: best validation accuracy}."""
    jobs = {name: dict(config={**base, **extra}, prefix=f"{prefix}_{name}", **(soft if "temperature" in extra else {}))
            for name, extra in settings.items()}
    trained = train_students(data, jobs, run_dir=run_dir, device=device, parallel=parallel, max_batches=max_batches,
                             teacher_sha256=teacher_sha256, compile=compile)
    accuracy = {}
    for name, (_, result) in trained.items():
        accuracy[name] = result["best_val_accuracy"]
        print(f"{name:<24} best validation accuracy {100 * accuracy[name]:.2f}% (epoch {result['best_epoch']})")
    return accuracy


def status_path(checkpoint) -> Path:
    """Where `fit` writes a run's progress beside its resumable checkpoint (x.resume.pt -> x.status.json)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(".pt").removesuffix(".resume") + ".status.json")


def run_status(run_dir) -> list[str]:
    """One line per run under `run_dir` or its folders (newest first): epoch N of M (and the batches done of the
    next), best validation accuracy so far and the estimated time left, from the status files that `fit` writes."""
    lines = []
    for path in sorted(Path(run_dir).rglob("*.status.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        s = json.loads(path.read_text())
        left = ("finished" if s["epoch"] >= s["epochs"] else "the time left is known after an epoch"
                if s["eta_seconds"] is None else f"about {s['eta_seconds'] / 3600:.1f} h left")
        best = (f"best validation accuracy {100 * s['best_val_accuracy']:.2f} % (epoch {s['best_epoch']})"
                if s["best_epoch"] else "no epoch finished yet")
        name = path.relative_to(run_dir).as_posix().removesuffix(".status.json")
        into = f", {s['batch']} of {s['batches']} batches into epoch {s['epoch'] + 1}" if s.get("batch") else ""
        lines.append(f"{name}: epoch {s['epoch']} of {s['epochs']}{into}, {best}, {left} (updated {s['updated']})")
    return lines


def seconds_left(history: list[dict], epochs: int, into: float = 0.0, pace: float | None = None) -> float | None:
    """The time a run still needs: its epochs left (less the fraction `into` of the one in progress) times
    `pace`, the seconds an epoch takes at the speed of the process now running (once it has run long enough
    to tell; the machine may be busier or idler than when the last epochs ran), else the median time of the
    last three epochs, so one epoch slowed by a busy machine does not inflate the estimate; None before the
    first epoch without a pace."""
    recent = [h["seconds"] for h in history[-3:]]
    per_epoch = pace if pace is not None else statistics.median(recent) if recent else None
    return None if per_epoch is None else per_epoch * (epochs - len(history) - into)


def run_name(prefix: str, config: dict, **extra) -> str:
    """A readable, unique name for a run: prefix, seed and a short hash of everything that shapes it."""
    settings = json.dumps({**config, **extra}, sort_keys=True, default=str)
    return f"{prefix}_seed{config.get('seed', 0)}_{hashlib.sha256(settings.encode()).hexdigest()[:8]}"


def _epoch_line(h: dict, epochs: int, eta: float | None) -> str:
    return (f"epoch {h['epoch']}/{epochs}  loss {h['train_loss']:.4f}  train_acc {100 * h['train_accuracy']:.2f}%  "
            f"val_loss {h['val_loss']:.4f}  val_acc {100 * h['val_accuracy']:.2f}%  lr {h['lr']:.2e}  "
            + f"{h['seconds']:.0f} s" + ("" if eta is None else f"  eta {eta / 60:.1f} min"))


def _log(line: str, log_file=None):
    print(line, flush=True)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as f:
            f.write(time.strftime("%H:%M:%S ") + line + "\n")


# ---------------------------------------------------------------------------- 5. soft targets

def _images_sha256(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().cpu().numpy().tobytes()).hexdigest()


def teacher_logits_cache(teacher, images, normalize, teacher_sha256: str, cache_dir=ROOT / "cache",
                         batch_size: int = 500) -> torch.Tensor:
    """The teacher's logits for `images` and for their mirror images, (2, N, C) float32, computed once
    and kept in cache_dir under the teacher's SHA-256 and the images' (a new teacher gets a new cache)."""
    path = Path(cache_dir) / f"teacher_logits_{teacher_sha256[:16]}_{_images_sha256(images)[:16]}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    logits = torch.stack([predict(teacher, images, normalize, batch_size, flip=flip) for flip in (False, True)])
    atomic_save(logits, path)
    return logits


def soft_targets(mode: str, teacher, data: dict, teacher_sha256: str, *, views: int = 8, augmentation=None,
                 cache_dir=ROOT / "cache") -> dict:
    """`teacher`'s soft targets for data["train_images"] in `mode`, as the keywords that `fit` and
    `train_student` take: "online" {"teacher": the module}, "cached" {"teacher_logits": of each image and its
    mirror} or "views" {"views": a ViewCache of `views` views drawn from `augmentation`}; the caches are
    built once (in bfloat16 where the device has it in hardware) and kept in cache_dir."""
    if mode == "online":
        return {"teacher": teacher}
    if mode == "cached":
        return {"teacher_logits": teacher_logits_cache(teacher, data["train_images"], data["normalize"], teacher_sha256,
                                                       cache_dir)}
    if mode == "views":
        return {"views": view_cache(teacher, data, teacher_sha256, views=views, augmentation=augmentation,
                                    cache_dir=cache_dir, precision="auto")}
    raise ValueError(f"unknown teacher mode {mode!r}; choose cached, views or online")


class ViewCacheError(RuntimeError):
    """A view cache is damaged, or was made by another teacher, other images or other settings."""


@dataclass
class ViewCache:
    """`count` augmented views of each training image and the teacher's logits on exactly those views
    (FKD, Shen and Xing, 2022): `params` (count, N, 7) from `view_parameters`, `logits` (count, N, C) float16.
    Training draws one view per image per epoch and regenerates its pixels (`apply_views`): consistent
    teaching (Beyer et al., 2022) for the cost of the student alone."""
    params: torch.Tensor
    logits: torch.Tensor
    meta: dict

    @property
    def count(self) -> int:
        return self.params.shape[0]

    def to(self, device) -> "ViewCache":
        return ViewCache(self.params.to(device), self.logits.to(device), self.meta)

    def first(self, count: int) -> "ViewCache":
        """The first `count` views of each image: the cache that `view_cache` builds with views=count (a view
        is a function of its number), so comparing how many views a student needs costs no teacher time."""
        if not 0 < count <= self.count:
            raise ValueError(f"views = {count}: this cache holds {self.count} views of each image; ask for 1 to {self.count}")
        meta = {**self.meta, "views": count}
        return ViewCache(self.params[:count], self.logits[:count], {**meta, "key": _view_key(meta)})


def _view_key(meta: dict) -> str:
    """The key of a view cache: the teacher, the images and the view settings, the precision aside."""
    fields = {k: meta[k] for k in ("teacher_sha256", "images_sha256", "views", "seed", "augmentation")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def view_cache(teacher, data: dict, teacher_sha256: str, *, views: int = 8, seed: int = 0, augmentation=None,
               cache_dir=ROOT / "cache", batch_size: int = 250, precision: str = "auto",
               progress: bool = True) -> ViewCache:
    """The ViewCache of `views` views of each of data["train_images"], drawn from `augmentation` (keywords of
    `view_parameters`: the homework's flip, rotation, translation and scaling by default) for each image's
    index in the official training set and the view's number under `seed`, with `teacher`'s logits on each
    (under bfloat16 autocast when `resolve_precision(precision)` says so; the precision is recorded in the meta,
    not part of the key: the logits are the same teacher's either way). Kept in `cache_dir`, keyed by the
    teacher's SHA-256, the images' and the view settings, and reused when present; an interrupted build resumes
    from its last finished view."""
    unknown = set(augmentation or {}) - {"flip", "degrees", "translate", "scale", "mix"}
    if unknown:
        raise ValueError(f"views take flip, degrees, translate, scale and mix, not {', '.join(sorted(unknown))}")
    augmentation = {**AUGMENTATIONS["homework"], **(augmentation or {})}
    images, index = data["train_images"], data["train_index"]
    meta = {"teacher_sha256": teacher_sha256, "images_sha256": _images_sha256(images), "views": views, "seed": seed,
            "augmentation": plain(augmentation)}
    meta["key"] = _view_key(meta)
    device = next(teacher.parameters()).device
    meta["precision"] = resolve_precision(precision, device)
    path = Path(cache_dir) / f"views_{teacher_sha256[:12]}_{meta['key']}.pt"
    if path.exists():
        return load_view_cache(path, meta)
    partial = path.with_name(path.name + ".partial")
    params = view_parameters(seed, index.numpy()[None, :], np.arange(views)[:, None], **augmentation,
                             partners=len(images))
    logits, done = [], 0
    if partial.exists():
        saved = load_view_cache(partial, meta)
        logits, done = list(saved.logits), saved.meta["done"]
    teacher.eval()
    chunks = [(v, i) for v in range(done, views) for i in torch.arange(len(images)).split(batch_size)]
    outputs = []
    bfloat16 = meta["precision"] == "bfloat16"
    for v, idx in _progress(chunks, progress, f"teacher on {views} views of {len(images):,} images"):
        x = apply_views(images[idx].unsqueeze(1).float().div(255).to(device), params[v, idx], images)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16):
            outputs.append(teacher(to_model_input(x, data["normalize"])).float().half().cpu())
        if idx[-1] == len(images) - 1:  # a view is finished: keep it
            logits.append(torch.cat(outputs))
            outputs = []
            if len(logits) < views:
                atomic_save({"params": params, "logits": torch.stack(logits), "meta": {**meta, "done": len(logits)}},
                            partial)
    atomic_save({"params": params, "logits": torch.stack(logits), "meta": meta}, path)
    partial.unlink(missing_ok=True)
    return ViewCache(params, torch.stack(logits), meta)


def load_view_cache(path, expected: dict) -> ViewCache:
    """A ViewCache from `path`, refused (ViewCacheError, naming the file) when it cannot be read or when its
    teacher, images or settings differ from `expected` (the meta that view_cache would write)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        params, logits, meta = saved["params"], saved["logits"], saved["meta"]
    except Exception as err:  # noqa: BLE001 - truncated, damaged or not a view cache at all
        raise ViewCacheError(f"view cache {path} is truncated or corrupt ({_first_line(err)}): delete it and it "
                             f"is built again") from None
    for key in ("teacher_sha256", "images_sha256", "views", "seed", "augmentation"):
        if meta.get(key) != expected.get(key):
            raise ViewCacheError(f"view cache {path} was made with {key} = {meta.get(key)!r}, not {expected.get(key)!r}: "
                                 f"it belongs to another teacher or setting; delete it or pass its settings")
    if params.shape[-1] != len(VIEW_FIELDS):
        raise ViewCacheError(f"view cache {path} holds {params.shape[-1]} parameters per view, not {len(VIEW_FIELDS)} "
                             f"({', '.join(VIEW_FIELDS)}): an older version made it; delete it and it is built again")
    if params.shape[:2] != logits.shape[:2] and "done" not in meta:
        raise ViewCacheError(f"view cache {path} holds {logits.shape[0]} views of logits for {params.shape[0]} views")
    return ViewCache(params, logits, meta)


# ---------------------------------------------------------------------------- 6. evaluation

@torch.no_grad()
def predict(model, images, normalize, batch_size: int = 1000, flip: bool = False) -> torch.Tensor:
    """Logits for uint8 images (N, 28, 28), in eval mode; `flip` mirrors them first."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for idx in batches(len(images), batch_size):
        x = images[idx].to(device).unsqueeze(1).float().div_(255)
        out.append(model(to_model_input(x.flip(-1) if flip else x, normalize)).float().cpu())
    return torch.cat(out)


def evaluate(model, images, labels, normalize, batch_size: int = 1000) -> dict:
    """Cross-entropy loss, accuracy and logits on a labelled set, in eval mode."""
    logits = predict(model, images, normalize, batch_size)
    labels = labels.cpu()
    return {"loss": F.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(1) == labels).float().mean().item(), "logits": logits}


def fewest_within_noise(accuracy: dict[int, float], n: int) -> int:
    """The smallest key of `accuracy` (a number of views, say) whose accuracy on `n` images is within one binomial
    standard error of the best one's: the cheapest setting that a measurement on n images cannot tell from the best."""
    best = max(accuracy.values())
    margin = math.sqrt(best * (1 - best) / n)
    return min(k for k, a in accuracy.items() if a >= best - margin)


def soft_target_statistics(logits, labels, temperature: float = 1.0) -> dict:
    """What soft targets teach beyond the labels: how often their top class is the label (`agreement`), the
    mean probability they give the label (`label_probability`), the share of images where that exceeds 0.99
    (`confident`) and their mean entropy in nats (`entropy`), at `temperature`."""
    probs = F.softmax(logits.float() / temperature, 1)
    label_probs = probs.gather(1, labels.view(-1, 1)).flatten()
    return {"agreement": (probs.argmax(1) == labels).float().mean().item(),
            "label_probability": label_probs.mean().item(), "confident": (label_probs > 0.99).float().mean().item(),
            "entropy": -(probs * probs.clamp_min(1e-12).log()).sum(1).mean().item(), "n": len(labels)}


@torch.no_grad()
def teacher_on_training_images(teacher, data: dict, n: int = 2000, seed: int = 0, batch_size: int = 500) -> dict:
    """`soft_target_statistics` of `teacher` on n training images drawn at random (seeded), seen four ways:
    clean, as the homework augments them (flip, +-10 degrees, +-10 % shift, scale 0.9-1.1), and mixed with
    another training image (0.7 of the image, 0.3 of the other; the label is the first's). Whether the teacher's
    soft targets there differ from the labels, and whether they are right on the views a student sees."""
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(data["train_labels"]), generator=generator)[:n]
    images, labels = data["train_images"][pick].unsqueeze(1).float().div(255), data["train_labels"][pick]
    views = {"clean": images,
             "homework views": augment(images, generator, flip=True, degrees=10.0, translate=0.1, scale=(0.9, 1.1))[0],
             "mixed 0.7 / 0.3": 0.7 * images + 0.3 * images[torch.randperm(n, generator=generator)]}
    teacher.eval()
    device = next(teacher.parameters()).device
    logits = {name: torch.cat([teacher(to_model_input(chunk.to(device), data["normalize"])).float().cpu()
                               for chunk in x.split(batch_size)]) for name, x in views.items()}
    return {name: soft_target_statistics(value, labels) for name, value in logits.items()}


def soft_target_summary(logits, labels) -> str:
    """One line of `soft_target_statistics` at T = 1, for a notebook."""
    s = soft_target_statistics(logits, labels)
    return (f"soft targets {tuple(logits.shape)}: top class = label for {100 * s['agreement']:.2f}%, mean probability "
            f"of the label {s['label_probability']:.3f} (> 0.99 for {100 * s['confident']:.1f}%), mean entropy "
            f"{s['entropy']:.3f} nats")


def confusion_matrix(logits, labels, num_classes: int = 10) -> torch.Tensor:
    """Counts: row = true class, column = predicted class."""
    pairs = labels.cpu() * num_classes + logits.argmax(1).cpu()
    return torch.bincount(pairs, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    return (confusion.diag() / confusion.sum(1)).tolist()


def most_confused_pairs(confusion: torch.Tensor, k: int = 5) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal counts as (true, predicted, count)."""
    off = confusion.clone().fill_diagonal_(0)
    top = off.flatten().topk(k)
    n = confusion.shape[0]
    return [(i // n, i % n, c) for i, c in zip(top.indices.tolist(), top.values.tolist())]


def confused_examples(images, labels, predicted, pairs, per_pair: int = 6):
    """Up to `per_pair` images of each (true, predicted, count) pair, padded with blanks so each pair
    fills one row: (images (len(pairs) * per_pair, 28, 28) uint8, titles) for plot_images."""
    rows, titles = [], []
    for true, pred, _ in pairs:
        idx = ((labels == true) & (predicted == pred)).nonzero().flatten()[:per_pair]
        blanks = per_pair - len(idx)
        rows += [images[idx], torch.zeros(blanks, *images.shape[1:], dtype=images.dtype)]
        titles += [f"{CLASSES[true]}\n→ {CLASSES[pred]}"] * len(idx) + [""] * blanks
    return torch.cat(rows), titles


def expected_calibration_error(logits, labels, bins: int = 15) -> dict:
    """ECE = sum_b |B_b|/N * |accuracy(B_b) - confidence(B_b)| over equal-width confidence bins
    (Guo et al., 2017); also returns the per-bin accuracy, confidence and count."""
    confidence, predicted = F.softmax(logits.float(), 1).max(1)
    correct = (predicted == labels.cpu()).float()
    which = (confidence * bins).clamp(max=bins - 1).long()
    count = torch.bincount(which, minlength=bins).float()
    acc = torch.bincount(which, correct, minlength=bins) / count.clamp(min=1)
    conf = torch.bincount(which, confidence, minlength=bins) / count.clamp(min=1)
    ece = (count / len(labels) * (acc - conf).abs()).sum().item()
    return {"ece": ece, "accuracy": acc.tolist(), "confidence": conf.tolist(), "count": count.long().tolist()}


# ---------------------------------------------------------------------------- 7. artefacts

def atomic_save(obj, path) -> None:
    """torch.save to a temporary file, then rename: a crash leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json(obj, path) -> None:
    """Write JSON atomically, keys sorted, so a re-run with the same numbers leaves no diff."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def plain(obj):
    """`obj` with tuples turned into lists, recursively: what JSON and weights_only checkpoints hold."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_info(seed: int | None = None) -> dict:
    """Seed, versions, git commit and whether tracked source files differed from it (`git_dirty`; the
    outputs that runs themselves write, report/ and checkpoints/, do not count), processor and PyTorch's
    CPU threads: recorded in every metrics file and checkpoint."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = (bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!report", ":!checkpoints"))
             if commit != "unknown" else None)
    import torchvision
    return {"seed": seed, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": platform.python_version(), "git_commit": commit, "git_dirty": dirty,
            "machine": platform.machine(), "cpu": cpu_name(), "threads": torch.get_num_threads()}


def cpu_name(cpuinfo="/proc/cpuinfo") -> str:
    """The processor's model name, with '(VNNI)' where it has the int8 dot-product instructions that
    int8 inference speed and accuracy depend on (see quantize_int8); the machine name elsewhere."""
    try:
        info = Path(cpuinfo).read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    return f"{name or platform.machine()}{' (VNNI)' if 'vnni' in info else ''}"


def save_checkpoint(model, meta: dict, path, half: bool = False) -> str:
    """{'state_dict', 'meta'} of plain tensors and types (loads with weights_only=True); float
    weights in float16 when `half`. Writes path and path.sha256; returns the SHA-256."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    atomic_save({"state_dict": state, "meta": meta}, path)
    return write_sha256(path)


def write_sha256(path) -> str:
    """Write path.sha256 ("<digest>  <name>", as sha256sum does) beside a shipped file; returns the digest."""
    digest = sha256_of(path)
    Path(f"{path}.sha256").write_text(f"{digest}  {Path(path).name}\n")
    return digest


class CheckpointError(RuntimeError):
    """A checkpoint is missing, altered, unsafe or does not fit the model."""


def load_checkpoint(path, device="cpu", verify: bool = True):
    """(model, meta) from a checkpoint written by save_checkpoint, weights back in float32.
    Verifies the SHA-256 beside it, loads with weights_only=True only, checks every key and shape."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: run the notebook that trains it, "
                              f"or restore it with `git checkout -- {path}`")
    sidecar = Path(f"{path}.sha256")
    if verify and sidecar.is_file():
        expected, actual = sidecar.read_text().split()[0], sha256_of(path)
        if expected != actual:
            raise CheckpointError(f"checkpoint {path} has SHA-256 {actual}, but {sidecar} expects {expected}: "
                                  f"the file was altered or is incomplete; restore it with `git checkout -- {path}`")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # never fall back to unsafe loading
        if "Unsupported global" not in str(err):  # anything else is a damaged file, not a dangerous one
            raise CheckpointError(f"checkpoint {path} is corrupt ({_first_line(err)}): restore it with "
                                  f"`git checkout -- {path}` or run the notebook that writes it again") from None
        unsupported = next(line.strip() for line in str(err).splitlines() if "Unsupported global" in line)
        raise CheckpointError(f"checkpoint {path} is refused: it holds more than tensors and plain data (it may "
                              f"carry code), so it cannot be loaded with weights_only=True: {unsupported}") from None
    except Exception as err:  # noqa: BLE001 - truncated or damaged
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({_first_line(err)}): restore it with "
                              f"`git checkout -- {path}` or run the notebook that writes it again") from None
    if not isinstance(saved, dict) or "state_dict" not in saved or "meta" not in saved:
        raise CheckpointError(f"checkpoint {path} is not a {{'state_dict', 'meta'}} dict written by save_checkpoint")
    meta = saved["meta"]
    model = build_model(meta.get("arch", "?"))
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in saved["state_dict"]:
            raise CheckpointError(f"checkpoint {path} lacks {key!r} that {meta.get('arch')} needs")
        if saved["state_dict"][key].shape != value.shape:
            raise CheckpointError(f"checkpoint {path}: {key!r} has shape {tuple(saved['state_dict'][key].shape)}, "
                                  f"{meta.get('arch')} needs {tuple(value.shape)}")
    extra = [k for k in saved["state_dict"] if k not in expected]
    if extra:
        raise CheckpointError(f"checkpoint {path} has {extra[0]!r}, unknown to {meta.get('arch')}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in saved["state_dict"].items()})
    return model.to(device).eval(), meta


def load_teacher(path, normalize: dict, device="cpu"):
    """(teacher, meta, sha256) from a shipped teacher checkpoint, after checking that it was trained
    with the data's normalisation constants; the SHA-256 names the teacher in runs and metrics. The teacher is
    in channels_last memory format, which speeds up its convolutions on CPUs (about 1.5x on a 2-core AVX2 CPU)."""
    teacher, meta = load_checkpoint(path, device)
    check_normalization(meta, normalize, path)
    return teacher.to(memory_format=torch.channels_last), meta, sha256_of(path)


STEMS = {"resnet50": "torchvision default (7x7/2 conv + max-pool: 7x7 maps in layer1)",
         "resnet50_stride1": "7x7 conv with stride 1 + max-pool (14x14 maps in layer1)"}


def ship_teacher(model, result: dict, data: dict, path, metrics_path, *, arch: str, config: dict,
                 augmentation: dict, seed: int, device="cpu") -> dict:
    """Ship a trained teacher: the one look at the test set, then the float16 checkpoint (`meta`: arch, stem,
    normalisation, recipe, epochs, validation and test accuracy, run info) with its SHA-256; reloaded from
    disk, it must score within 0.1 point of the float32 weights. Writes and returns the metrics JSON
    (history, both accuracies, checkpoint SHA-256). `result` is fit's, the weights kept on validation."""
    val = evaluate(model, data["val_images"], data["val_labels"], data["normalize"])
    test = evaluate(model, data["test_images"], data["test_labels"], data["normalize"])
    meta = {"arch": arch, "stem": STEMS.get(arch), "normalize": data["normalize"], "in_channels": 3, "num_classes": 10,
            "epochs": config["epochs"], "best_epoch": result["best_epoch"],
            "config": plain({k: v for k, v in config.items() if k != "augmentation"}),
            "augmentation": plain(augmentation), "val_accuracy": val["accuracy"], "test_accuracy": test["accuracy"],
            "train_seconds": result["train_seconds"], **run_info(seed)}
    digest = save_checkpoint(model, meta, path, half=True)
    reloaded, _ = load_checkpoint(path, device)
    test16 = evaluate(reloaded, data["test_images"], data["test_labels"], data["normalize"])["accuracy"]
    if abs(test16 - test["accuracy"]) > 0.001:
        raise CheckpointError(f"{path}: float16 storage changed the test accuracy from {test['accuracy']} to {test16}")
    metrics = {"run": meta, "history": result["history"], "val_accuracy": val["accuracy"],
               "test_accuracy": test["accuracy"], "test_accuracy_float16": test16, "checkpoint_sha256": digest}
    write_json(metrics, metrics_path)
    return metrics


def ship_student(model, result: dict, test: dict, data: dict, path, metrics_path, *, arch: str,
                 augmentation: dict, teacher_sha256: str | None, seed: int, device="cpu", method: str | None = None,
                 **extra) -> dict:
    """Ship a trained student: write the checkpoint (`meta` in the teachers' format, with `arch`,
    `normalize`, `in_channels`, the training config and both accuracies), reload it from disk and check
    that the reloaded model scores exactly `test["accuracy"]`, then write its metrics JSON (history,
    accuracies, per-class accuracy, checkpoint SHA-256, plus `extra`). `method` says how it was trained
    (default: "kd" with a teacher, else "scratch"). `result` is train_student's,
    `test` is evaluate()'s on data's test split. Returns the metrics."""
    labels = data["test_labels"]
    meta = {"arch": arch, "normalize": data["normalize"], "in_channels": 3, "num_classes": 10,
            "parameters": count_parameters(model), "mult_adds": count_mult_adds(model), "config": result["config"],
            "augmentation": plain(augmentation), "teacher_mode": result["teacher_mode"],
            "method": method or ("kd" if result["teacher_mode"] else "scratch"),
            "teacher_sha256": teacher_sha256 if result["teacher_mode"] else None,
            "best_epoch": result["best_epoch"], "val_accuracy": result["best_val_accuracy"],
            "test_accuracy": test["accuracy"], "train_seconds": result["train_seconds"],
            "n_train": len(data["train_labels"]), "split_seed": data.get("split_seed"), **run_info(seed)}
    digest = save_checkpoint(model, meta, path)
    reloaded, reloaded_meta = load_checkpoint(path, device)
    again = evaluate(reloaded, data["test_images"], labels, data["normalize"])["accuracy"]
    if reloaded_meta["arch"] != arch or again != test["accuracy"]:
        raise CheckpointError(f"{path}: the reloaded student ({reloaded_meta['arch']}, test accuracy {again}) "
                              f"disagrees with the trained one ({arch}, {test['accuracy']})")
    metrics = {"run": meta, "history": result["history"], "test_accuracy": test["accuracy"],
               "val_accuracy": result["best_val_accuracy"],
               "per_class_accuracy": dict(zip(CLASSES, per_class_accuracy(confusion_matrix(test["logits"], labels)))),
               "checkpoint_sha256": digest, **extra}
    write_json(metrics, metrics_path)
    return metrics


def check_parameters(**params) -> None:
    """Validate notebook parameters; a bad one raises ValueError saying what it must be."""
    def fail(name, value, must):
        raise ValueError(f"parameter {name}={value!r} is invalid: it must be {must}")
    mixing = {a for a, kw in AUGMENTATIONS.items() if kw.get("mix")}   # views only: the teacher labels each mixture
    for name, value in params.items():
        if name in ("epochs", "batch_size", "seeds", "calibration_images", "repeats") and not (isinstance(value, int) and value > 0):
            fail(name, value, "a positive integer")
        if name in ("max_batches", "n_train", "n_test", "n_val") and value is not None and not (isinstance(value, int) and value > 0):
            fail(name, value, "None or a positive integer")
        if name == "patience" and not (isinstance(value, int) and value >= 0):
            fail(name, value, "a non-negative integer")
        if name == "degrees" and not (isinstance(value, (int, float)) and 0 <= value <= 180):
            fail(name, value, "a rotation range in degrees, in [0, 180]")
        if name == "scale" and not (isinstance(value, (list, tuple)) and len(value) == 2
                                    and all(isinstance(v, (int, float)) for v in value) and 0 < value[0] <= value[1]):
            fail(name, value, "[low, high] with 0 < low <= high, e.g. [0.9, 1.1]; [1, 1] for none")
        if name == "translate" and not (isinstance(value, (int, float)) and 0 <= value < 0.5):
            fail(name, value, "a fraction of the image size in [0, 0.5)")
        if name == "erase" and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            fail(name, value, "a probability in [0, 1]")
        if name in ("augmentation", "scratch_augmentation") and value not in AUGMENTATIONS:
            fail(name, value, f"the name of an augmentation: {', '.join(map(repr, AUGMENTATIONS))}")
        if name in ("scratch_augmentations", "view_augmentations") and not (
                isinstance(value, list) and (value or name == "view_augmentations") and set(value) <= set(AUGMENTATIONS)):
            fail(name, value, f"a list of augmentation names from {', '.join(map(repr, AUGMENTATIONS))}")
        if name in ("scratch_augmentation", "scratch_augmentations") and set(value if isinstance(value, list) else [value]) & mixing:
            fail(name, value, "free of mixing: a student from scratch has no teacher to label a mixed image")
        if name == "augmentation" and value in mixing and params.get("teacher_mode", "views") != "views":
            fail(name, value, "used with teacher_mode 'views' alone: a mixed view needs the teacher's logits on it")
        if name == "teacher_mode" and value not in ("cached", "views", "online"):
            fail(name, value, "'cached', 'views' or 'online'")
        if name == "views" and not (isinstance(value, int) and value > 0):
            fail(name, value, "a positive integer (views per training image)")
        if name == "view_counts" and not (isinstance(value, list) and all(
                isinstance(v, int) and 0 < v < params.get("views", math.inf) for v in value)):
            fail(name, value, "a list of view counts below `views`, e.g. [2, 4] ([] for none)")
        if name == "students" and not (isinstance(value, list) and value and set(value) <= {"kd", "scratch"}):
            fail(name, value, "a list of 'kd' and/or 'scratch'")
        if name == "precision" and value not in PRECISIONS:
            fail(name, value, "'float32', 'bfloat16' (autocast for training) or 'auto' (bfloat16 where the hardware "
                              "has it)")
        if name == "alpha" and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            fail(name, value, "a number in [0, 1]")
        if name in ("temperature", "lr") and not (isinstance(value, (int, float)) and value > 0):
            fail(name, value, "a positive number")
        if name == "factor" and not (isinstance(value, (int, float)) and 0 < value < 1):
            fail(name, value, "a number in (0, 1)")
        if name == "clip_grad_norm" and not (isinstance(value, (int, float)) and value >= 0):
            fail(name, value, "a non-negative number (0 for no clipping)")
        if name == "weight_decay" and not (isinstance(value, (int, float)) and value >= 0):
            fail(name, value, "a non-negative number")
        if name == "optimizer" and value not in ("adam", "sgd"):
            fail(name, value, "'adam' (AdamW) or 'sgd'")
        if name == "arch" and value not in ARCHS:
            fail(name, value, f"one of {', '.join(ARCHS)}")
        if name == "profile" and value not in ("quick", "full"):
            fail(name, value, "'quick' or 'full'")
        if name == "device" and value not in ("auto", "cpu", "cuda", "mps"):
            fail(name, value, "'auto', 'cpu', 'cuda' or 'mps'")


def project_path(path) -> Path:
    """A notebook path parameter: absolute as given, relative to the repository root otherwise."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else ROOT / path


def runs_dir(path=None) -> Path:
    """Where resumable training state and logs live: `path` when given (relative to the repository root),
    else $KD_RUNS_DIR, else ~/.cache/kd-fashion. Outside the repository by default, so a run longer than
    one sitting survives a fresh clone and is resumed by running the same command again."""
    if path is not None:
        return project_path(path)
    return Path(os.environ.get("KD_RUNS_DIR") or Path.home() / ".cache" / "kd-fashion").expanduser()


# ---------------------------------------------------------------------------- 8. figures

# matplotlib is imported on first use, so the training code does not need it.

def save_fig(fig, name: str, folder=ROOT / "report" / "figures") -> Path:
    """Save a figure as PNG with fixed metadata, so a re-run with equal pixels leaves no diff."""
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    return path


def plot_images(images, titles=None, ncols: int = 10, size: float = 1.1):
    """A grid of grey images (N, 28, 28) or (N, 1, 28, 28), uint8 or float."""
    import matplotlib.pyplot as plt
    images = images.reshape(len(images), images.shape[-2], images.shape[-1]).float().cpu()
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * (1.25 if titles else 1)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:len(images)]):
        ax.imshow(images[i], cmap="gray")
        if titles:
            ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(confusion, title: str = ""):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(confusion, cmap="Blues")
    n = confusion.shape[0]
    for i in range(n):
        for j in range(n):
            value = int(confusion[i, j])
            ax.text(j, i, value, ha="center", va="center", fontsize=7,
                    color="white" if value > confusion.max() / 2 else "black")
    ax.set_xticks(range(n), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(n), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_learning_curves(histories: dict):
    """Loss, accuracy and learning rate per epoch for each named run's history."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        for ax, key, scale in zip(axes[:2], ("loss", "accuracy"), (1, 100)):
            line, = ax.plot(epochs, [scale * h[f"val_{key}"] for h in history], label=f"{name} val")
            ax.plot(epochs, [scale * h[f"train_{key}"] for h in history], "--", color=line.get_color(),
                    label=f"{name} train (augmented)")
        axes[2].plot(epochs, [h["lr"] for h in history], label=name)
    for ax, title in zip(axes, ("loss", "accuracy (%)", "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    axes[2].set_yscale("log")
    fig.tight_layout()
    return fig


def plot_reliability(calibration: dict, title: str = ""):
    import matplotlib.pyplot as plt
    bins = len(calibration["accuracy"])
    centres = [(i + 0.5) / bins for i in range(bins)]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.bar([100 * c for c in centres], [100 * a for a in calibration["accuracy"]], width=100 / bins, edgecolor="k",
           alpha=0.7, label="accuracy")
    ax.plot([0, 100], [0, 100], "r--", label="perfect calibration")
    ax.set_xlabel("confidence (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{title} ECE = {100 * calibration['ece']:.2f}%")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_soft_targets(images, logits, labels, temperatures=(1, 2, 4, 8)):
    """One row per image: the image, then softmax(logits / T) as bars for each temperature T."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(images), len(temperatures) + 1, figsize=(3 * (len(temperatures) + 1),
                             3.0 * len(images)), squeeze=False)
    for row, (image, logit, label) in enumerate(zip(images, logits, labels)):
        axes[row, 0].imshow(image.reshape(28, 28), cmap="gray")
        axes[row, 0].set_title(f"true: {CLASSES[label]}", fontsize=8)
        axes[row, 0].axis("off")
        for col, T in enumerate(temperatures, start=1):
            probs = F.softmax(logit.float() / T, 0)
            axes[row, col].bar(range(len(CLASSES)), probs, color=["C3" if i == label else "C0" for i in range(10)])
            axes[row, col].set_ylim(0, 1)
            axes[row, col].set_xticks(range(len(CLASSES)), CLASSES, rotation=90, fontsize=7)
            if row == 0:
                axes[row, col].set_title(f"T = {T}")
    fig.tight_layout()
    return fig


def plot_per_class_accuracy(series: dict):
    """Grouped bars of per-class accuracy, one group per class, one bar per model (series: label -> 10 values)."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        ax.bar([c + i * width for c in range(len(CLASSES))], [100 * v for v in values], width, label=label)
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(CLASSES))], CLASSES, rotation=30)
    ax.set_ylim(60, 100)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # beside the bars, never over one
    fig.tight_layout()
    return fig


def plot_heatmap(values, row_labels, col_labels, row_title: str, col_title: str, title: str = ""):
    """A grid of numbers (e.g. validation accuracy in %) as a heatmap with each value written in its cell."""
    import matplotlib.pyplot as plt
    values = torch.as_tensor(values, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(1.2 * len(col_labels) + 2.5, 0.8 * len(row_labels) + 1.8))
    image = ax.imshow(values, cmap="viridis")
    ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels])
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels])
    ax.set_xlabel(col_title)
    ax.set_ylabel(row_title)
    middle = (values.max() + values.min()) / 2
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center",
                    color="black" if values[i, j] > middle else "white")
    fig.colorbar(image, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_pareto(rows: dict, n_test: int = 10_000):
    """Test accuracy against parameters, multiply-adds, size on disk and latency, one point per model
    (rows: "model, format" -> dict with test_accuracy, parameters, mult_adds, bytes, latency_ms): one
    colour per model, one marker per format, log x axes; error bars of +-1.96 binomial standard errors
    of an accuracy on `n_test` images."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    axes_spec = (("parameters", "parameters", 1), ("mult_adds", "multiply-adds per image", 1),
                 ("bytes", "size on disk (KB)", 1 / 1024), ("latency_ms", "latency at batch 1 (ms)", 1))
    models = list(dict.fromkeys(label.split(",")[0] for label in rows))
    formats = list(dict.fromkeys(label.split(",", 1)[-1].strip() for label in rows))
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.6), sharey=True)
    for ax, (key, title, scale) in zip(axes, axes_spec):
        for label, r in rows.items():
            model, fmt = label.split(",")[0], label.split(",", 1)[-1].strip()
            se = 100 * 1.96 * math.sqrt(r["test_accuracy"] * (1 - r["test_accuracy"]) / n_test)
            ax.errorbar(r[key] * scale, 100 * r["test_accuracy"], yerr=se, color=f"C{models.index(model)}",
                        marker="osD^v"[formats.index(fmt) % 5], markersize=7, alpha=0.8, capsize=3, label=label)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=min(4, len(rows)), fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


# ---------------------------------------------------------------------------- 9. deployment

def export_onnx(model: nn.Module, path) -> Path:
    """The model as one self-contained ONNX file with a dynamic batch size; input "input"
    (N, 3, 28, 28) normalised, output "logits". Puts `model` itself in float32, on the CPU, in eval mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    torch.onnx.export(model, (torch.zeros(2, 3, 28, 28),), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=65536)}}, dynamo=True,
                      external_data=False, verbose=False)
    return path


def input_contract(meta: dict) -> dict:
    """What an ONNX user must feed a shipped model and what comes out, as ONNX metadata (strings only):
    the preprocessing with the normalisation constants, the input and output shapes, the class names."""
    return {"arch": meta["arch"], "input": "input: float32 (N, 3, 28, 28)",
            "preprocessing": "28x28 grey image, pixels / 255, repeated to 3 channels, then (x - mean) / std per channel",
            "normalize_mean": json.dumps(meta["normalize"]["mean"]), "normalize_std": json.dumps(meta["normalize"]["std"]),
            "output": "logits: float32 (N, 10), softmax gives class probabilities", "classes": json.dumps(list(CLASSES))}


def write_onnx_metadata(path, metadata: dict) -> None:
    """Store string key-value pairs in an ONNX file's metadata_props (replacing those keys)."""
    import onnx
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, str(path))


def read_onnx_metadata(path) -> dict:
    """The metadata_props of an ONNX file, as ONNX Runtime reads them (custom_metadata_map)."""
    return dict(onnx_session(path).get_modelmeta().custom_metadata_map)


def deploy_student(model, meta: dict, name: str, *, onnx_dir, int8_dir, calibration: torch.Tensor) -> dict:
    """Export a shipped student to ONNX (float32, under onnx_dir) and quantise it to int8 (`quantize_int8`,
    under int8_dir as student_<name>_int8.onnx with its SHA-256 beside it); both files carry the input
    contract (`input_contract`) in their metadata. Returns the two paths and the int8 file's SHA-256."""
    fp32 = export_onnx(model, Path(onnx_dir) / f"student_{name}.onnx")
    int8 = quantize_int8(fp32, Path(int8_dir) / f"student_{name}_int8.onnx", calibration)
    for path in (fp32, int8):
        write_onnx_metadata(path, input_contract(meta))
    return {"onnx_float32": fp32, "onnx_int8": int8, "int8_sha256": write_sha256(int8)}


def format_rows(name: str, model, checkpoint, deployed: dict, test_images, test_labels, normalize) -> dict:
    """Test accuracy, bytes on disk, parameters and multiply-adds of one student in its three formats
    (PyTorch float32, ONNX float32, ONNX int8), keyed "student <name>, <format>"; the int8 row also has its
    SHA-256 and `drop_points`, the test accuracy it lost against PyTorch, in points."""
    accuracy = lambda logits: (logits.argmax(1) == test_labels).float().mean().item()  # noqa: E731
    predictions = {"PyTorch float32": (predict(model, test_images, normalize), Path(checkpoint)),
                   **{f"ONNX {kind}": (onnx_predict(onnx_session(deployed[f"onnx_{kind}"]), test_images, normalize),
                                       Path(deployed[f"onnx_{kind}"])) for kind in ("float32", "int8")}}
    rows = {f"student {name}, {fmt}": {"test_accuracy": accuracy(logits), "bytes": path.stat().st_size,
                                       "file": f"{path.parent.name}/{path.name}", "parameters": count_parameters(model),
                                       "mult_adds": count_mult_adds(model)}
            for fmt, (logits, path) in predictions.items()}
    int8 = rows[f"student {name}, ONNX int8"]
    int8.update(sha256=deployed["int8_sha256"],
                drop_points=100 * (rows[f"student {name}, PyTorch float32"]["test_accuracy"] - int8["test_accuracy"]))
    return rows


def calibration_images(data: dict, n: int, seed: int = 0) -> torch.Tensor:
    """`n` training images drawn at random (seeded), normalised as the models see them: the activation
    ranges of the int8 models are calibrated on these, never on validation or test images."""
    if not 0 < n <= len(data["train_labels"]):
        raise ValueError(f"{n} calibration images requested, but the training split has "
                         f"{len(data['train_labels']):,}: choose 1 to {len(data['train_labels']):,}")
    pick = torch.randperm(len(data["train_labels"]), generator=torch.Generator().manual_seed(seed))[:n]
    return to_model_input(data["train_images"][pick], data["normalize"])


INT8_SCHEME = {"format": "QDQ", "weights": "uint8, per output channel", "activations": "uint8"}


def quantize_int8(onnx_path, int8_path, calibration: torch.Tensor, batch_size: int = 100,
                  weights: str = "uint8", activations: str = "uint8", reduce_range: bool = False) -> Path:
    """ONNX Runtime's static 8-bit quantisation (QDQ format, per-channel weights), with activation ranges
    calibrated on `calibration`: normalised training images (N, 3, 28, 28).

    The project ships weights and activations both uint8 ("U8U8", INT8_SCHEME). The usual U8S8 (int8
    weights) runs through the VPMADDUBSW instruction on x86 CPUs without VNNI, whose 16-bit sums saturate
    (ONNX Runtime's quantisation guide names the issue): benchmarks/int8_schemes.py measures every scheme
    on the validation split and records the processor (report/metrics/int8_schemes.json).
    weights, activations: "uint8" or "int8"; reduce_range: 7-bit weights, ONNX Runtime's other remedy."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter({"input": b.numpy()} for b in calibration.float().split(batch_size))

        def get_next(self):
            return next(self.feeds, None)

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    for name, value in (("weights", weights), ("activations", activations)):
        if value not in types:
            raise ValueError(f"{name}={value!r} is not a quantisation type: use 'uint8' or 'int8'")
    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    prepared = int8_path.with_suffix(".prepared.onnx")
    try:
        quant_pre_process(str(onnx_path), str(prepared))
        quantize_static(str(prepared), str(int8_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=types[activations], weight_type=types[weights], reduce_range=reduce_range)
    finally:
        prepared.unlink(missing_ok=True)
    return int8_path


def onnx_session(path, threads: int | None = None):
    """An ONNX Runtime CPU session for `path`, with `threads` intra-op threads (None: PyTorch's count)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_predict(session, images, normalize, batch_size: int = 1000) -> torch.Tensor:
    """Logits of an ONNX session for uint8 images (N, 28, 28), like `predict` for a PyTorch model."""
    return torch.cat([torch.from_numpy(session.run(None, {"input": to_model_input(chunk, normalize).numpy()})[0])
                      for chunk in images.split(batch_size)])


def inference_speed(model_or_session, batch_size: int, repeats: int = 20) -> dict:
    """Latency (ms per call) and throughput (images/s) of a PyTorch model or an ONNX Runtime session
    on a random normalised batch of `batch_size`, after one warm-up call."""
    x = torch.randn(batch_size, 3, 28, 28)
    if isinstance(model_or_session, nn.Module):
        model = model_or_session.eval()
        run = lambda: model(x)  # noqa: E731
    else:
        feed = {"input": x.numpy()}
        run = lambda: model_or_session.run(None, feed)  # noqa: E731
    with torch.no_grad():
        run()
        start = time.perf_counter()
        for _ in range(repeats):
            run()
    seconds = (time.perf_counter() - start) / repeats
    return {"batch_size": batch_size, "latency_ms": 1000 * seconds, "images_per_s": batch_size / seconds}


def compression_table(rows: dict, order: list[str] | None = None) -> str:
    """The compression table in Markdown: one row per model (test accuracy, parameters, mult-adds, bytes on
    disk, latency at batch 1, throughput at batch 256), in `order` (default: the dict's)."""
    lines = ["| model | test accuracy | parameters | mult-adds | size on disk | latency, batch 1 | throughput, batch 256 (images/s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label in order or list(rows):
        r = rows[label]
        lines.append(f"| {label} | {100 * r['test_accuracy']:.2f} % | {r['parameters']:,} | {r['mult_adds'] / 1e6:.2f}M | "
                     f"{r['bytes'] / 1024:,.0f} KB | {r['latency_ms']:.2f} ms | {r['images_per_s']:,.0f} |")
    return "\n".join(lines)
