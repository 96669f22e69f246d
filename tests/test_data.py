import gzip
import shutil

import pytest
import torch

import kd_helpers as kd


def test_splits_have_the_documented_shapes_and_types(data):
    assert data["train_images"].shape == (55000, 28, 28) and data["train_images"].dtype == torch.uint8
    assert data["val_images"].shape == (5000, 28, 28) and data["test_images"].shape == (10000, 28, 28)
    assert data["train_labels"].dtype == torch.int64 and data["train_labels"].shape == (55000,)
    assert set(data["test_labels"].tolist()) == set(range(10))


def test_validation_split_is_stratified_disjoint_and_stable(data):
    assert torch.bincount(data["val_labels"]).tolist() == [500] * 10
    assert torch.bincount(data["train_labels"]).tolist() == [5500] * 10
    labels = kd.load_fashion_mnist()["train_labels"]
    train, val = kd.stratified_split(labels, 5000, seed=0)
    assert len(set(train.tolist()) | set(val.tolist())) == 60000 and not set(train.tolist()) & set(val.tolist())
    again_train, again_val = kd.stratified_split(labels, 5000, seed=0)
    assert torch.equal(val, again_val) and torch.equal(train, again_train)
    assert not torch.equal(val, kd.stratified_split(labels, 5000, seed=1)[1])


def test_normalised_training_data_has_zero_mean_unit_std(data):
    x = kd.to_model_input(data["train_images"][:20000], data["normalize"])
    assert x.shape == (20000, 3, 28, 28)
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02
    assert 0.2 < data["normalize"]["mean"][0] < 0.4  # computed from the pixels, not typed


def test_flip_is_the_mirror_image(data):
    images = data["train_images"][:64].unsqueeze(1).float() / 255
    out, flipped = kd.augment(images, torch.Generator().manual_seed(0), flip=True, degrees=0, translate=0,
                              scale=(1, 1))
    assert 0 < flipped.sum() < 64
    assert torch.equal(out[flipped], images[flipped].flip(-1))
    assert torch.equal(out[~flipped], images[~flipped])


def test_translation_moves_the_image_and_fills_with_background():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 10:18, 10:18] = 1.0
    out, _ = kd.augment(image, torch.Generator().manual_seed(3), flip=False, degrees=0, translate=0.1,
                        scale=(1, 1))
    assert out.min() >= 0 and abs(out.sum() - image.sum()) < 1.0      # same mass, shifted
    assert not torch.allclose(out, image)
    assert out[0, 0, 0].abs().sum() == 0                              # border is background (0)


def test_rotation_and_scaling_keep_the_centre_and_vary_per_image():
    images = torch.zeros(8, 1, 28, 28)
    images[:, :, 4:24, 12:16] = 1.0                                   # a vertical bar
    out, _ = kd.augment(images, torch.Generator().manual_seed(0), flip=False, degrees=30, translate=0,
                        scale=(0.8, 1.2))
    assert out[:, 0, 13:15, 13:15].min() > 0.5                        # centre stays put
    assert not torch.allclose(out[0], out[1])                         # parameters differ per image


def test_random_erasing_replaces_one_rectangle_in_about_p_of_the_images():
    images = torch.zeros(2000, 1, 28, 28)
    out = kd.random_erasing(images, 0.5, torch.Generator().manual_seed(0), area=(0.02, 0.25))
    erased = out.flatten(1).ne(0)
    hit = erased.any(1)
    assert 0.45 < hit.float().mean() < 0.55
    fraction = erased[hit].float().mean(1)
    assert fraction.min() > 0.01 and fraction.max() < 0.30          # the area range, up to rounding
    rows, cols = erased[hit].view(-1, 28, 28).any(2), erased[hit].view(-1, 28, 28).any(1)
    assert torch.equal(erased[hit].sum(1), rows.sum(1) * cols.sum(1))  # a rectangle: rows x columns
    assert out.min() >= 0 and out.max() <= 1


def test_augment_without_erasing_draws_the_same_randomness_as_before():
    images = torch.rand(16, 1, 28, 28)
    shifted = lambda **erase: kd.augment(images, torch.Generator().manual_seed(5), degrees=0, translate=0.07,  # noqa: E731
                                         scale=(1, 1), **erase)[0]
    assert torch.equal(shifted(), shifted(erase=0.0))
    assert not torch.equal(shifted(), shifted(erase=1.0))


def copy_dataset(tmp_path):
    source = kd.find_data_dir()
    for name in kd.SHA256:
        shutil.copy(kd._idx_path(source, name), tmp_path)
    return tmp_path


def test_missing_folder_names_the_path_and_the_remedies(tmp_path):
    with pytest.raises(kd.DataError, match="does not exist") as err:
        kd.find_data_dir(tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "apt-get install dataset-fashion-mnist" in str(err.value)


def test_missing_file_is_named(tmp_path):
    copy_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(kd.DataError, match="t10k-labels-idx1-ubyte"):
        kd.load_fashion_mnist(tmp_path)


def test_truncated_gzip_is_reported(tmp_path):
    copy_dataset(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(kd.DataError, match="truncated") as err:
        kd.load_fashion_mnist(tmp_path)
    assert str(path) in str(err.value)


def test_truncated_idx_file_is_reported(tmp_path):
    copy_dataset(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw[:-10])   # uncompressed, 10 labels short
    with pytest.raises(kd.DataError, match="truncated"):
        kd.load_fashion_mnist(tmp_path)


def test_checksum_mismatch_is_reported(tmp_path):
    copy_dataset(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[100] = (raw[100] + 1) % 10                                    # one label changed, length intact
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(kd.DataError, match="SHA-256") as err:
        kd.load_fashion_mnist(tmp_path)
    assert "0402a96d" in str(err.value)


def test_environment_variable_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(kd.DataError, match="elsewhere"):
        kd.find_data_dir()


def test_batches_cover_every_index_once():
    parts = kd.batches(1000, 128, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert sorted(torch.cat(parts).tolist()) == list(range(1000)) and len(parts) == 8
