import os
import tempfile

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "agg")
os.environ["KD_RUNS_DIR"] = tempfile.mkdtemp(prefix="kd-test-runs-")  # tests never touch the real runs folder
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one thread each, for the workers and their kernels
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

import kd_helpers as kd  # noqa: E402


@pytest.fixture(scope="session")
def data():
    """The real data set, split as the notebooks split it (needs dataset-fashion-mnist or FASHION_MNIST_DIR)."""
    return kd.fashion_mnist_splits()


@pytest.fixture(scope="session")
def small_data(data):
    """A few hundred images of each split: enough to train for a couple of batches."""
    g = torch.Generator().manual_seed(1)
    pick = {s: torch.randperm(len(data[f"{s}_labels"]), generator=g)[:n]
            for s, n in (("train", 512), ("val", 256), ("test", 256))}
    small = {f"{s}_{k}": data[f"{s}_{k}"][i] for s, i in pick.items() for k in ("images", "labels")}
    small["train_index"] = data["train_index"][pick["train"]]
    small["normalize"] = data["normalize"]
    return small
