"""Class-per-folder image trees: cheap class scans, ImageFolder with a fixed class list,
and the PIL-image transforms such trees need.

Class names come from folder names only (no image is opened), so ``num_classes`` is known
before any data is loaded. A test tree is read with the training tree's class list, so a
label means the same class in both even when the test tree lacks some classes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from abc_lab.data.base import DataError


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders of ``folder`` (its classes)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def has_images(folder: Path) -> bool:
    """Whether ``folder`` directly holds at least one image file."""
    with os.scandir(folder) as entries:
        return any(e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS) for e in entries)


def require_classes(folder: Path, flag: str, hint: str) -> list[str]:
    """Class names of ``folder``; :class:`DataError` naming ``flag`` if there are none.

    Args:
        folder: the tree to scan.
        flag: how the user names this folder, e.g. ``data_dir '/x'``.
        hint: what to pass instead, appended to the message.
    """
    if not folder.is_dir():
        raise DataError(f"{flag} does not exist; {hint}")
    classes = class_folders(folder)
    if not classes:
        extra = " (it holds images directly)" if has_images(folder) else ""
        raise DataError(f"{flag} has no class sub-folders{extra}; {hint}")
    return classes


class ClassListImageFolder(ImageFolder):
    """torchvision ``ImageFolder`` whose classes (and label order) are given, not scanned.

    ``allow_empty`` lets a test tree lack some of the training classes.
    """

    def __init__(self, root: str | Path, classes: Sequence[str], allow_empty: bool = False):
        self._given_classes = list(classes)
        super().__init__(str(root), allow_empty=allow_empty)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        return list(self._given_classes), {c: i for i, c in enumerate(self._given_classes)}


def load_image_folder(
    root: Path, classes: Sequence[str], allow_empty: bool = False
) -> ClassListImageFolder:
    """Scan ``root`` into an ImageFolder; :class:`DataError` if a class has no image.

    With ``allow_empty`` a class may lack images (a test tree need not hold every class).
    """
    dataset = ClassListImageFolder(root, classes, allow_empty=True)
    empty = [classes[i] for i in sorted(set(range(len(classes))) - set(dataset.targets))]
    if empty and not allow_empty:
        raise DataError(
            f"'{root}' has class folders without images ({', '.join(empty[:5])}); put "
            f"{'/'.join(IMG_EXTENSIONS[:3])} images in each class folder or remove the empty ones"
        )
    if not dataset.samples:
        raise DataError(f"'{root}' holds no images; put images in its class folders")
    return dataset


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_normalised_tensor(mean: Sequence[float], std: Sequence[float]) -> list:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
        v2.ToPureTensor(),
    ]


def train_image_transform(
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """PIL image -> random resized crop (+ flip) -> normalised float tensor ``[3, size, size]``."""
    steps: list = [v2.RandomResizedCrop(size, scale=scale, antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + _to_normalised_tensor(mean, std))


def eval_image_transform(
    size: int,
    resize: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """PIL image -> resize shorter side to ``resize`` -> centre crop ``size`` -> normalised."""
    steps = [v2.Resize(resize or size, antialias=True), v2.CenterCrop(size)]
    return v2.Compose(steps + _to_normalised_tensor(mean, std))
