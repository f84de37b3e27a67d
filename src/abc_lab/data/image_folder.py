"""Any class-per-folder image dataset (e.g. the forest-trail set of the ABC-Net paper).

Two layouts are accepted:

* ``<data_dir>/train/<class>/...`` plus ``<data_dir>/test/<class>/...`` (or ``val/``) as
  the test set; the validation split is held out of ``train``;
* ``<data_dir>/<class>/...`` only: a fixed ``test_size`` share becomes the test set (the
  same for every ``seed``, so runs with different seeds are scored on the same images),
  and the validation split is held out of the rest with ``seed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from abc_lab.data.base import (
    ClassificationDataModule,
    DataError,
    TransformedDataset,
    resolve_count,
    split_indices,
)
from abc_lab.data.folders import (
    ClassListImageFolder,
    eval_image_transform,
    load_image_folder,
    require_classes,
    train_image_transform,
)

TEST_SPLIT_SEED = 0  # the test split of a single folder never depends on ``seed``
_HINT = (
    "pass data.data_dir=<folder with one sub-folder of images per class, "
    "or with train/ and test/ (or val/) holding such sub-folders>"
)


class ImageFolderDataModule(ClassificationDataModule):
    """Class-per-folder images resized to ``image_size`` x ``image_size`` RGB.

    Args (beyond :class:`ClassificationDataModule`'s):
        image_size: side of the square model input.
        test_size: count or fraction held out as the test set (single-folder layout only).
        hflip: random horizontal flips in training; turn off where a flip changes the
            label (forest trails: a flipped "left" image shows a "right" trail).
    """

    name: ClassVar[str] = "image_folder"

    def __init__(
        self,
        image_size: int = 64,
        test_size: int | float = 0.1,
        hflip: bool = True,
        val_size: int | float = 0.1,
        **kwargs: Any,
    ) -> None:
        """Takes :class:`ClassificationDataModule`'s arguments plus the image-folder ones."""
        super().__init__(val_size=val_size, **kwargs)
        if not isinstance(image_size, int) or image_size < 1:
            raise DataError(f"image_size {image_size!r} is not a positive integer; pass e.g. 64")
        self.image_size = image_size
        self.test_size = test_size
        self.hflip = hflip
        self._classes: list[str] | None = None
        self._full: ClassListImageFolder | None = None
        self._test_indices: list[int] = []
        self._pool_indices: list[int] = []

    # ---- layout ------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        if self.data_dir is None:
            raise DataError(f"image_folder has no default location; {_HINT}")
        return Path(self.data_dir).expanduser()

    @property
    def split_layout(self) -> bool:
        """Whether ``data_dir`` has a ``train/`` folder (else it is one folder to split)."""
        return (self.root / "train").is_dir()

    @property
    def train_dir(self) -> Path:
        return self.root / "train" if self.split_layout else self.root

    @property
    def test_dir(self) -> Path | None:
        """``test/`` or else ``val/`` in the split layout; ``None`` for a single folder."""
        if not self.split_layout:
            return None
        test = self.root / "test"
        return test if test.is_dir() else self.root / "val"

    def check(self) -> None:
        """Verify the class folders exist (folder names only; no image is opened)."""
        root = self.root
        if not root.is_dir():
            raise DataError(f"data_dir '{self.data_dir}' does not exist; {_HINT}")
        if not self.split_layout:
            self._classes = require_classes(root, f"data_dir '{self.data_dir}'", _HINT)
            return
        train = require_classes(self.train_dir, f"train folder '{self.train_dir}'", _HINT)
        test_dir = self.test_dir
        assert test_dir is not None
        if not (root / "test").is_dir() and not (root / "val").is_dir():
            raise DataError(
                f"'{self.train_dir}' has no sibling test/ or val/ folder to test on; add one "
                f"with the same class sub-folders, or put the class folders directly in "
                f"'{root}' to have them split automatically"
            )
        test = require_classes(test_dir, f"test folder '{test_dir}'", _HINT)
        extra = sorted(set(test) - set(train))
        if extra:
            raise DataError(
                f"'{test_dir}' has class folders that '{self.train_dir}' lacks "
                f"({', '.join(extra[:5])}); use the same class folder names in both"
            )
        self._classes = train

    @property
    def class_names(self) -> list[str]:
        """Class folder names in label order (scanned on first use; raises DataError)."""
        if self._classes is None:
            self.check()
        assert self._classes is not None
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return 3

    @property
    def input_size(self) -> int:
        return self.image_size

    # ---- loading -----------------------------------------------------------------------

    def _scan(self) -> ClassListImageFolder:
        """Scan the training (or single) folder once and, if single, fix the test split."""
        if self._full is None:
            self._full = load_image_folder(self.train_dir, self.class_names)
            self.source = str(self.root)
            if not self.split_layout:
                total = len(self._full)
                n_test = resolve_count(self.test_size, total, "test_size")
                pool, test = split_indices(total, n_test, TEST_SPLIT_SEED)
                self._pool_indices, self._test_indices = sorted(pool), test
        return self._full

    def train_transform(self) -> v2.Compose:
        """Random resized crop (scale 0.5-1) and, with ``hflip``, a random horizontal flip."""
        return train_image_transform(self.image_size, scale=(0.5, 1.0), hflip=self.hflip)

    def eval_transform(self) -> v2.Compose:
        """Resize the shorter side to ``image_size`` and centre-crop a square."""
        return eval_image_transform(self.image_size)

    def _load_train_pool(self) -> tuple[Dataset, Dataset]:
        full = self._scan()
        train_view = TransformedDataset(full, self.train_transform())
        eval_view = TransformedDataset(full, self.eval_transform())
        if self.split_layout:
            return train_view, eval_view
        return Subset(train_view, self._pool_indices), Subset(eval_view, self._pool_indices)

    def _load_test(self) -> Dataset:
        if not self.split_layout:
            full = self._scan()
            return Subset(TransformedDataset(full, self.eval_transform()), self._test_indices)
        assert self.test_dir is not None
        test = load_image_folder(self.test_dir, self.class_names, allow_empty=True)
        return TransformedDataset(test, self.eval_transform())
