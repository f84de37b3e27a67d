"""Fashion-MNIST, read from local IDX files into memory (no PIL, no per-sample decode).

Where the files are looked for, in order: ``data_dir`` (the four IDX files in it, or
torchvision's ``<data_dir>/FashionMNIST/raw/``); without ``data_dir`` the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) and then the download
cache; only with ``download=True`` is the data fetched, through torchvision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from abc_lab.data.base import ClassificationDataModule, DataError, default_cache_dir
from abc_lab.data.idx import IDXFormatError, read_idx, read_idx_header
from abc_lab.data.tensor_dataset import BatchImageTransform, TensorImageDataset

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MEAN, STD = (0.2860,), (0.3530,)
_LAYOUT = "the 4 Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...) or FashionMNIST/raw/"


def _idx_file(folder: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` in ``folder`` (the uncompressed one first: faster)."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


class FashionMNISTDataModule(ClassificationDataModule):
    """Fashion-MNIST: 28x28 grey images, 10 classes; 55000 / 5000 / 10000 by default.

    Training augmentation (``augment=True``): random 28x28 crop of the image zero-padded by
    2 pixels, and a random horizontal flip; every sample draws its own.
    """

    name: ClassVar[str] = "fashion_mnist"

    def __init__(self, **kwargs: Any) -> None:
        """Takes the arguments of :class:`ClassificationDataModule`."""
        super().__init__(**kwargs)
        self._arrays: dict[str, torch.Tensor] | None = None

    @property
    def num_classes(self) -> int:
        return len(CLASS_NAMES)

    @property
    def in_channels(self) -> int:
        return 1

    @property
    def input_size(self) -> int:
        return 28

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    # ---- locating the files ------------------------------------------------------------

    def _download_root(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else default_cache_dir()

    def _candidates(self) -> list[Path]:
        if self.data_dir:
            root = Path(self.data_dir).expanduser()
            return [root, root / "FashionMNIST" / "raw"]
        return [DEBIAN_DIR, default_cache_dir() / "FashionMNIST" / "raw"]

    def find_files(self) -> dict[str, Path] | None:
        """The four IDX files from the first place that has all of them, else ``None``."""
        for folder in self._candidates():
            files = {key: _idx_file(folder, stem) for key, stem in IDX_FILES.items()}
            if all(files.values()):
                return files  # type: ignore[return-value]
        return None

    def _not_found_error(self) -> DataError:
        if self.data_dir:
            root = Path(self.data_dir).expanduser()
            if not root.is_dir():
                what = f"data_dir '{self.data_dir}' does not exist"
            else:
                missing = []
                for folder in self._candidates():
                    found = {stem: _idx_file(folder, stem) for stem in IDX_FILES.values()}
                    if any(found.values()):
                        missing += [f"{folder / s}[.gz]" for s, p in found.items() if p is None]
                what = f"data_dir '{self.data_dir}' holds no complete set of Fashion-MNIST files"
                if missing:
                    what += f" ({', '.join(missing)} missing)"
            return DataError(
                f"{what}; pass data.data_dir=<folder with {_LAYOUT}>, set data.download=true "
                "to fetch it there, or drop data_dir to use the Debian package "
                "dataset-fashion-mnist"
            )
        places = " or ".join(f"'{p}'" for p in self._candidates())
        return DataError(
            f"Fashion-MNIST was not found in {places}; install the Debian package "
            f"dataset-fashion-mnist, pass data.data_dir=<folder with {_LAYOUT}>, "
            "or set data.download=true"
        )

    def check(self) -> None:
        """Verify the IDX files exist and their headers agree (reads a few bytes only)."""
        files = self.find_files()
        if files is None:
            if self.download:
                return  # prepare_data() fetches it
            raise self._not_found_error()
        shapes = {}
        for key, path in files.items():
            try:
                shapes[key] = read_idx_header(path)[1]
            except IDXFormatError as err:
                raise DataError(
                    f"{err}; replace it with an intact copy (e.g. reinstall dataset-fashion-mnist)"
                ) from err
        for split in ("train", "test"):
            images, labels = shapes[f"{split}_images"], shapes[f"{split}_labels"]
            if len(images) != 3 or images[1:] != (28, 28) or len(labels) != 1:
                raise DataError(
                    f"'{files[f'{split}_images']}' holds shape {images}, not [N, 28, 28]; "
                    "point data.data_dir at the Fashion-MNIST files"
                )
            if images[0] != labels[0]:
                raise DataError(
                    f"'{files[f'{split}_images']}' has {images[0]} images but "
                    f"'{files[f'{split}_labels']}' has {labels[0]} labels; replace the pair "
                    "with an intact copy"
                )

    def prepare_data(self) -> None:
        """Download through torchvision when ``download=True`` and nothing is found locally."""
        if self.download and self.find_files() is None:
            import torchvision

            torchvision.datasets.FashionMNIST(str(self._download_root()), download=True)

    # ---- loading -----------------------------------------------------------------------

    def _load_arrays(self) -> dict[str, torch.Tensor]:
        if self._arrays is None:
            files = self.find_files()
            if files is None:
                self.prepare_data()
                files = self.find_files()
            if files is None:
                raise self._not_found_error()
            self.check()
            arrays = {}
            for key, path in files.items():
                try:
                    arrays[key] = torch.from_numpy(read_idx(path))
                except IDXFormatError as err:
                    raise DataError(f"{err}; replace it with an intact copy") from err
            self._arrays = arrays
            self.source = str(files["train_images"].parent)
        return self._arrays

    def _dataset(self, split: str, transform: BatchImageTransform) -> TensorImageDataset:
        arrays = self._load_arrays()
        images = arrays[f"{split}_images"].unsqueeze(1)  # [N, 1, 28, 28]
        return TensorImageDataset(images, arrays[f"{split}_labels"], transform)

    def _load_train_pool(self) -> tuple[Dataset, Dataset]:
        augment = BatchImageTransform(MEAN, STD, crop_padding=2, hflip=True)
        return self._dataset("train", augment), self._dataset("train", self.eval_transform())

    def _load_test(self) -> Dataset:
        return self._dataset("test", self.eval_transform())

    @staticmethod
    def eval_transform() -> BatchImageTransform:
        """Normalisation only (validation, test, and training with ``augment=False``)."""
        return BatchImageTransform(MEAN, STD)
