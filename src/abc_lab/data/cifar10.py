"""CIFAR-10 through torchvision, held in memory as uint8 tensors for fast batched transforms.

torchvision already decodes the whole set into one array, so each batch is cropped,
flipped and normalised with tensor ops instead of PIL per sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from abc_lab.data.base import ClassificationDataModule, DataError, default_cache_dir
from abc_lab.data.tensor_dataset import BatchImageTransform, TensorImageDataset

BASE_FOLDER = "cifar-10-batches-py"  # torchvision's folder under root
REQUIRED_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
CLASS_NAMES: list[str] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class CIFAR10DataModule(ClassificationDataModule):
    """CIFAR-10: 32x32 RGB, 10 classes; 45000 / 5000 / 10000 by default.

    ``data_dir`` is torchvision's root (holding ``cifar-10-batches-py/``) or that folder
    itself; without it, ``~/.cache/abc-lab``. Training augmentation: random 32x32 crop of
    the image zero-padded by 4 pixels and a random horizontal flip.
    """

    name: ClassVar[str] = "cifar10"

    def __init__(self, **kwargs: Any) -> None:
        """Takes the arguments of :class:`ClassificationDataModule`."""
        super().__init__(**kwargs)

    @property
    def num_classes(self) -> int:
        return len(CLASS_NAMES)

    @property
    def in_channels(self) -> int:
        return 3

    @property
    def input_size(self) -> int:
        return 32

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    @property
    def root(self) -> Path:
        """torchvision's root folder (the parent of ``cifar-10-batches-py``)."""
        if self.data_dir is None:
            return default_cache_dir()
        path = Path(self.data_dir).expanduser()
        return path.parent if path.name == BASE_FOLDER else path

    def check(self) -> None:
        """Verify the extracted batches exist (no decoding); with ``download`` they may not."""
        folder = self.root / BASE_FOLDER
        absent = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
        if not absent or self.download:
            return
        where = f"data_dir '{self.data_dir}'" if self.data_dir else f"'{self.root}'"
        if self.data_dir and not self.root.is_dir():
            problem = f"{where} does not exist"
        else:
            problem = f"CIFAR-10 was not found in {where} ('{folder}/{absent[0]}' is missing)"
        raise DataError(
            f"{problem}; set data.download=true to fetch it there, or pass "
            f"data.data_dir=<folder holding {BASE_FOLDER}/ from the python version of CIFAR-10>"
        )

    def prepare_data(self) -> None:
        """Download (once) through torchvision when ``download=True``."""
        if self.download:
            import torchvision

            for train in (True, False):
                torchvision.datasets.CIFAR10(str(self.root), train=train, download=True)

    def _dataset(self, train: bool, transform: BatchImageTransform) -> TensorImageDataset:
        import torchvision

        try:
            data = torchvision.datasets.CIFAR10(str(self.root), train=train, download=self.download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            raise DataError(
                f"CIFAR-10 in '{self.root / BASE_FOLDER}' is missing or corrupted ({err}); "
                "set data.download=true to fetch a fresh copy"
            ) from err
        self.source = str(self.root / BASE_FOLDER)
        images = torch.from_numpy(np.ascontiguousarray(data.data)).permute(0, 3, 1, 2)
        labels = torch.as_tensor(data.targets, dtype=torch.int64)
        return TensorImageDataset(images.contiguous(), labels, transform)

    def _load_train_pool(self) -> tuple[Dataset, Dataset]:
        train_view = self._dataset(True, BatchImageTransform(MEAN, STD, crop_padding=4, hflip=True))
        eval_view = TensorImageDataset(train_view.images, train_view.labels, self.eval_transform())
        return train_view, eval_view

    def _load_test(self) -> Dataset:
        return self._dataset(False, self.eval_transform())

    @staticmethod
    def eval_transform() -> BatchImageTransform:
        """Normalisation only (validation, test, and training with ``augment=False``)."""
        return BatchImageTransform(MEAN, STD)
