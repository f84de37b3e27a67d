"""ImageNet (ILSVRC-2012) from a class-per-folder tree through torchvision's ImageFolder.

``<data_dir>/train/<class>/*.JPEG`` is the training pool (the validation split is held
out of it) and ``<data_dir>/val/<class>/*.JPEG`` (the official validation set, sorted into
class folders) is the test set, as in the ABC-Net paper's ImageNet results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from torch.utils.data import Dataset
from torchvision.transforms import v2

from abc_lab.data.base import ClassificationDataModule, DataError, TransformedDataset
from abc_lab.data.folders import (
    class_folders,
    eval_image_transform,
    load_image_folder,
    require_classes,
    train_image_transform,
)

DEFAULT_NUM_CLASSES = 1000
_HINT = (
    "pass data.data_dir=<folder with train/ and val/, one sub-folder per class "
    "(ImageNet cannot be downloaded automatically)>"
)


class ImageNetDataModule(ClassificationDataModule):
    """ImageNet at 224x224: RandomResizedCrop + flip for training, Resize 256 + CenterCrop 224
    for evaluation; ``num_classes`` is the number of class folders in ``train/`` (1000 while
    ``train/`` is absent). ``download`` is ignored: ImageNet must be obtained by hand.
    """

    name: ClassVar[str] = "imagenet"

    def __init__(self, **kwargs: Any) -> None:
        """Takes the arguments of :class:`ClassificationDataModule`."""
        super().__init__(**kwargs)
        self._classes: list[str] | None = None

    @property
    def root(self) -> Path | None:
        return None if self.data_dir is None else Path(self.data_dir).expanduser()

    @property
    def class_names(self) -> list[str] | None:
        """Folder names of ``train/`` (the WordNet ids), or ``None`` while it is absent."""
        if self._classes is None and self.root is not None and (self.root / "train").is_dir():
            self._classes = class_folders(self.root / "train") or None
        return self._classes

    @property
    def num_classes(self) -> int:
        names = self.class_names
        return len(names) if names else DEFAULT_NUM_CLASSES

    @property
    def in_channels(self) -> int:
        return 3

    @property
    def input_size(self) -> int:
        return 224

    def check(self) -> None:
        """Verify ``train/`` and ``val/`` hold class folders, val's a subset of train's."""
        root = self.root
        if root is None:
            raise DataError(f"ImageNet has no default location; {_HINT}")
        if not root.is_dir():
            raise DataError(f"data_dir '{self.data_dir}' does not exist; {_HINT}")
        train = require_classes(root / "train", f"ImageNet folder '{root / 'train'}'", _HINT)
        val = require_classes(
            root / "val",
            f"ImageNet folder '{root / 'val'}'",
            "put the validation images in val/, one sub-folder per class as in train/",
        )
        extra = sorted(set(val) - set(train))
        if extra:
            raise DataError(
                f"'{root / 'val'}' has class folders that '{root / 'train'}' lacks "
                f"({', '.join(extra[:5])}); use the same class folder names in both"
            )
        self._classes = train

    def _load_train_pool(self) -> tuple[Dataset, Dataset]:
        assert self.root is not None and self.class_names is not None
        pool = load_image_folder(self.root / "train", self.class_names)
        self.source = str(self.root)
        return (
            TransformedDataset(pool, train_image_transform(224)),
            TransformedDataset(pool, self.eval_transform()),
        )

    def _load_test(self) -> Dataset:
        assert self.root is not None and self.class_names is not None
        test = load_image_folder(self.root / "val", self.class_names, allow_empty=True)
        return TransformedDataset(test, self.eval_transform())

    @staticmethod
    def eval_transform() -> v2.Compose:
        """Resize 256, centre crop 224, normalise with the ImageNet statistics."""
        return eval_image_transform(224, resize=256)
