"""Data modules: real Fashion-MNIST (Debian copy), tiny generated image folders, error paths."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from abc_lab.data import (
    CIFAR10DataModule,
    ClassificationDataModule,
    DataError,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    ImageNetDataModule,
)
from abc_lab.data import fashion_mnist as fashion_mnist_module
from abc_lab.data.idx import read_idx

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_GZ = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
needs_fmnist = pytest.mark.skipif(
    not all((DEBIAN_FMNIST / name).is_file() for name in IDX_GZ),
    reason=f"Fashion-MNIST is not installed at {DEBIAN_FMNIST} (Debian: dataset-fashion-mnist)",
)
ALL_MODULES = [FashionMNISTDataModule, CIFAR10DataModule, ImageNetDataModule, ImageFolderDataModule]


@pytest.fixture(scope="module")
def fmnist() -> FashionMNISTDataModule:
    dm = FashionMNISTDataModule(batch_size=64, seed=0)
    dm.setup()
    return dm


def _write_pngs(folder: Path, classes: dict[str, int], offset: int = 0) -> None:
    """``count`` small non-square PNGs per class, each a distinct flat colour."""
    for c, (name, count) in enumerate(classes.items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            colour = (40 * c + 10, 20 * i + offset, 200 - 10 * i)
            Image.new("RGB", (40, 30), colour).save(folder / name / f"img_{i}.png")


@pytest.fixture
def single_folder(tmp_path: Path) -> Path:
    _write_pngs(tmp_path / "trails", {"left": 6, "right": 6, "straight": 6})
    return tmp_path / "trails"


# ---- constructor properties (no data needed) ----------------------------------------------


@pytest.mark.parametrize(
    ("cls", "classes", "channels", "size"),
    [
        (FashionMNISTDataModule, 10, 1, 28),
        (CIFAR10DataModule, 10, 3, 32),
        (ImageNetDataModule, 1000, 3, 224),
    ],
)
def test_properties_known_after_construction(
    tmp_path: Path, cls: type[ClassificationDataModule], classes: int, channels: int, size: int
) -> None:
    dm = cls(data_dir=str(tmp_path / "absent"))
    assert (dm.num_classes, dm.in_channels, dm.input_size) == (classes, channels, size)
    assert dm.input_shape == (channels, size, size)
    assert dm.train_dataset is None  # nothing was loaded
    if cls is not ImageNetDataModule:
        assert dm.class_names is not None and len(dm.class_names) == classes


def test_imagenet_num_classes_from_train_folder_names(tmp_path: Path) -> None:
    for name in ("n01440764", "n01443537", "n01484850"):
        (tmp_path / "train" / name).mkdir(parents=True)
    dm = ImageNetDataModule(data_dir=str(tmp_path))
    assert dm.num_classes == 3
    assert dm.class_names == ["n01440764", "n01443537", "n01484850"]


def test_image_folder_num_classes_before_setup(single_folder: Path) -> None:
    dm = ImageFolderDataModule(data_dir=str(single_folder), image_size=32)
    assert (dm.num_classes, dm.in_channels, dm.input_size) == (3, 3, 32)
    assert dm.class_names == ["left", "right", "straight"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"val_size": 1.5},
        {"val_size": -3},
        {"train_subset": 0},
        {"num_workers": -1},
        {"image_size": 0},
    ],
)
def test_bad_arguments_raise_data_error(kwargs: dict) -> None:
    with pytest.raises(DataError, match=next(iter(kwargs))):
        ImageFolderDataModule(data_dir="unused", **kwargs)


# ---- error paths: every module's check() names the bad path ---------------------------------


@pytest.mark.parametrize("cls", ALL_MODULES)
def test_check_nonexistent_data_dir(tmp_path: Path, cls: type[ClassificationDataModule]) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(DataError) as err:
        cls(data_dir=str(missing)).check()
    message = str(err.value)
    assert str(missing) in message
    assert "data.data_dir" in message or "data.download" in message
    assert "\n" not in message
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("cls", ALL_MODULES)
def test_check_empty_data_dir(tmp_path: Path, cls: type[ClassificationDataModule]) -> None:
    with pytest.raises(DataError) as err:
        cls(data_dir=str(tmp_path)).check()
    assert str(tmp_path) in str(err.value)


def test_fashion_mnist_not_found_anywhere_names_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fashion_mnist_module, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DataError, match="dataset-fashion-mnist") as err:
        FashionMNISTDataModule().check()
    assert str(tmp_path / "debian") in str(err.value)
    FashionMNISTDataModule(download=True).check()  # would be fetched by prepare_data()


def test_cifar10_accepts_batches_folder_and_download_flag(tmp_path: Path) -> None:
    batches = tmp_path / "cifar-10-batches-py"
    assert CIFAR10DataModule(data_dir=str(batches)).root == tmp_path
    with pytest.raises(DataError, match="data.download=true"):
        CIFAR10DataModule(data_dir=str(tmp_path)).check()
    CIFAR10DataModule(data_dir=str(tmp_path), download=True).check()  # nothing fetched yet


def test_imagenet_flat_val_folder_is_explained(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", {"a": 1, "b": 1})
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.png")
    with pytest.raises(DataError, match="images directly") as err:
        ImageNetDataModule(data_dir=str(tmp_path)).check()
    assert str(tmp_path / "val") in str(err.value)


# ---- Fashion-MNIST from the Debian copy ------------------------------------------------------


@needs_fmnist
def test_fashion_mnist_sizes(fmnist: FashionMNISTDataModule) -> None:
    info = fmnist.describe()
    assert (info["train_size"], info["val_size"], info["test_size"]) == (55000, 5000, 10000)
    assert info["input_shape"] == [1, 28, 28]
    assert info["num_classes"] == 10
    assert info["name"] == "fashion_mnist"
    assert info["data_dir"] == str(DEBIAN_FMNIST)


@needs_fmnist
def test_fashion_mnist_batches(fmnist: FashionMNISTDataModule) -> None:
    for loader in (fmnist.train_dataloader(), fmnist.val_dataloader(), fmnist.test_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (64, 1, 28, 28)
        assert x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert 0 <= int(y.min()) and int(y.max()) <= 9
    labels = fmnist.test_dataset.labels  # type: ignore[union-attr]
    assert torch.equal(labels.unique(), torch.arange(10))


@needs_fmnist
def test_fashion_mnist_normalisation_without_augmentation() -> None:
    dm = FashionMNISTDataModule(batch_size=2000, augment=False)
    x, _ = next(iter(dm.train_dataloader()))
    assert abs(float(x.mean())) < 0.05
    assert abs(float(x.std()) - 1.0) < 0.05
    background = (0.0 - 0.2860) / 0.3530
    assert float(x.min()) == pytest.approx(background, abs=1e-5)


@needs_fmnist
def test_fashion_mnist_validation_split(fmnist: FashionMNISTDataModule) -> None:
    train, val = set(fmnist.train_indices), set(fmnist.val_indices)
    assert not train & val
    assert train | val == set(range(60000))
    assert fmnist.val_dataset.indices == fmnist.val_indices  # type: ignore[union-attr]

    same = FashionMNISTDataModule(seed=0)
    same.setup("fit")
    other = FashionMNISTDataModule(seed=1)
    other.setup("fit")
    assert same.val_indices == fmnist.val_indices
    assert other.val_indices != fmnist.val_indices
    assert len(other.val_indices) == 5000


@needs_fmnist
def test_fashion_mnist_train_subset_and_fraction() -> None:
    dm = FashionMNISTDataModule(train_subset=100, val_size=0.1)
    dm.setup("fit")
    assert len(dm.train_dataset) == 100  # type: ignore[arg-type]
    assert len(dm.val_dataset) == 6000  # type: ignore[arg-type]
    full = FashionMNISTDataModule(val_size=0.1)
    full.setup("fit")
    assert dm.train_indices == full.train_indices[:100]


@needs_fmnist
def test_fashion_mnist_augmentation(fmnist: FashionMNISTDataModule) -> None:
    augmented = fmnist.train_dataset.dataset  # type: ignore[union-attr]
    plain = fmnist.val_dataset.dataset  # type: ignore[union-attr]
    assert augmented.images.data_ptr() == plain.images.data_ptr()  # one in-memory copy
    idx = list(range(256))
    torch.manual_seed(0)
    aug_x, aug_y = torch.utils.data.default_collate(augmented.__getitems__(idx))
    eval_x, eval_y = torch.utils.data.default_collate(plain.__getitems__(idx))
    assert torch.equal(aug_y, eval_y)
    changed = (aug_x != eval_x).flatten(1).any(dim=1).float().mean()
    assert changed > 0.8  # only crop offset (2, 2) without flip leaves a sample unchanged
    again, _ = torch.utils.data.default_collate(plain.__getitems__(idx))
    assert torch.equal(eval_x, again)  # evaluation is deterministic
    single_x, single_y = plain[5]
    assert torch.equal(single_x, eval_x[5]) and single_y == int(eval_y[5])
    # every sample draws its own crop and flip, even within one batch
    repeated, _ = torch.utils.data.default_collate(augmented.__getitems__([7] * 64))
    assert len({tuple(r.flatten().tolist()) for r in repeated}) > 10
    assert not FashionMNISTDataModule(augment=False).augment


@needs_fmnist
def test_fashion_mnist_torchvision_raw_layout(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_GZ:
        (raw / name).symlink_to(DEBIAN_FMNIST / name)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=1000)
    dm.check()
    info = dm.describe()
    assert info["data_dir"] == str(raw)
    assert (info["train_size"], info["val_size"], info["test_size"]) == (59000, 1000, 10000)


@needs_fmnist
def test_idx_reader_plain_equals_gzipped_and_corruption_is_reported(tmp_path: Path) -> None:
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    with gzip.open(DEBIAN_FMNIST / "t10k-labels-idx1-ubyte.gz") as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    labels = read_idx(plain)
    assert labels.dtype == np.uint8 and labels.shape == (10000,)
    assert np.array_equal(labels, read_idx(DEBIAN_FMNIST / "t10k-labels-idx1-ubyte.gz"))

    for name in IDX_GZ[:3]:
        (tmp_path / name).symlink_to(DEBIAN_FMNIST / name)
    plain.write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        FashionMNISTDataModule(data_dir=str(tmp_path)).check()


# ---- image folders (tiny generated PNGs) ------------------------------------------------------


def test_image_folder_single_folder_split(single_folder: Path) -> None:
    dm = ImageFolderDataModule(
        data_dir=str(single_folder), image_size=32, batch_size=4, val_size=0.2, test_size=0.2
    )
    info = dm.describe()
    assert (info["train_size"], info["val_size"], info["test_size"]) == (11, 3, 4)
    assert info["input_shape"] == [3, 32, 32] and info["num_classes"] == 3

    def files(subset) -> set[str]:
        return {dm._full.samples[subset.dataset.indices[i]][0] for i in subset.indices}

    train, val = files(dm.train_dataset), files(dm.val_dataset)
    test = {dm._full.samples[i][0] for i in dm.test_dataset.indices}  # type: ignore[union-attr]
    assert len(train | val | test) == 18 and not (train & val or train & test or val & test)

    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and set(y.tolist()) <= {0, 1, 2}

    other = ImageFolderDataModule(data_dir=str(single_folder), val_size=0.2, test_size=0.2, seed=1)
    other.setup()
    assert other.test_dataset.indices == dm.test_dataset.indices  # type: ignore[union-attr]
    assert other.val_indices != dm.val_indices


@pytest.mark.parametrize("test_name", ["test", "val"])
def test_image_folder_train_test_layout(tmp_path: Path, test_name: str) -> None:
    _write_pngs(tmp_path / "train", {"a": 4, "b": 4, "c": 4})
    _write_pngs(tmp_path / test_name, {"c": 3}, offset=5)  # test may lack classes
    dm = ImageFolderDataModule(data_dir=str(tmp_path), image_size=16, val_size=2, batch_size=8)
    assert dm.num_classes == 3
    info = dm.describe()
    assert (info["train_size"], info["val_size"], info["test_size"]) == (10, 2, 3)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (3, 3, 16, 16)
    assert y.tolist() == [2, 2, 2]  # the training folder's label of class "c"
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 16, 16)


def test_image_folder_errors(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", {"a": 2, "b": 2})
    with pytest.raises(DataError, match="no sibling test/ or val/"):
        ImageFolderDataModule(data_dir=str(tmp_path)).check()
    _write_pngs(tmp_path / "test", {"a": 1, "z": 1})
    with pytest.raises(DataError, match="lacks") as err:
        ImageFolderDataModule(data_dir=str(tmp_path)).check()
    assert str(tmp_path / "test") in str(err.value)
    shutil.rmtree(tmp_path / "test" / "z")
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="without images") as err:
        ImageFolderDataModule(data_dir=str(tmp_path)).setup("fit")
    assert str(tmp_path / "train") in str(err.value)
    shutil.rmtree(tmp_path / "train" / "empty")
    with pytest.raises(DataError, match="val_size 100"):
        ImageFolderDataModule(data_dir=str(tmp_path), val_size=100).setup("fit")
    with pytest.raises(DataError, match="data.data_dir"):
        ImageFolderDataModule().check()


def test_imagenet_on_tiny_tree(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", {"n1": 3, "n2": 3})
    _write_pngs(tmp_path / "val", {"n1": 1, "n2": 1}, offset=7)
    dm = ImageNetDataModule(data_dir=str(tmp_path), val_size=2, batch_size=2)
    info = dm.describe()
    assert (info["train_size"], info["val_size"], info["test_size"]) == (4, 2, 2)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 224, 224) and set(y.tolist()) <= {0, 1}
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (2, 3, 224, 224) and y.tolist() == [0, 1]
