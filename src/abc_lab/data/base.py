"""Shared base of all abc-lab data modules: arguments, deterministic split, loaders.

Subclasses only say where the data lives (``check``), how to read the training pool and
the test set, and what the model input looks like; everything a run depends on (which
samples are held out for validation, batch sizes, loaders) is decided here, once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .shuffle import EpochShuffle


class DataError(ValueError):
    """A data problem the user can fix (missing files, bad argument); the message names the fix."""


def default_cache_dir() -> Path:
    """Folder where downloads go when no ``data_dir`` is given (``~/.cache/abc-lab``)."""
    return Path.home() / ".cache" / "abc-lab"


def resolve_count(size: int | float, total: int, what: str) -> int:
    """Turn a count or a fraction of ``total`` into a count, refusing sizes that leave nothing.

    A fraction gives at least one sample so a tiny dataset still gets a non-empty split.
    """
    if isinstance(size, bool) or not isinstance(size, int | float):
        raise DataError(
            f"{what} {size!r} is neither a count nor a fraction; pass an int or a float"
        )
    if isinstance(size, float):
        if not 0.0 < size < 1.0:
            raise DataError(
                f"{what} {size!r} is not a fraction in (0, 1); pass a float such as 0.1 "
                "or an integer count"
            )
        count = max(1, round(size * total))
    else:
        count = size
    if count < 0 or count >= total:
        raise DataError(
            f"{what} {size!r} leaves no training data out of {total} samples; "
            f"pass a count below {total} or a fraction such as 0.1"
        )
    return count


def split_indices(total: int, held_out: int, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(total)`` into (kept, held_out) indices, deterministically for a seed.

    The kept indices stay in permuted order so that "the first K" is a random sample of
    the pool; held-out indices are sorted (their order never matters, locality helps).
    """
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=generator).tolist()
    return perm[held_out:], sorted(perm[:held_out])


class TransformedDataset(Dataset):
    """Apply ``transform`` to the image of each ``(image, label)`` pair of another dataset.

    Lets one decoded/scanned dataset serve as both an augmented and a plain view.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        return self.transform(image), label


class ClassificationDataModule:
    """Image classification data: train / validation (held out of train) / test loaders.

    A plain class with the data-module protocol (``setup``, ``*_dataloader``); training
    hands it to Lightning through an adapter, so the data layer needs no training framework.

    Args:
        data_dir: where the data lives; ``None`` lets the subclass use its default place.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        val_size: count or fraction of the training set held out for validation; which
            samples is fixed by ``seed``. The test set is never used for validation.
        seed: seed of the validation split.
        augment: apply training augmentation (off: training images look like eval ones).
        download: allow fetching the data when it is not found (where that is possible).
        train_subset: use only the first K training samples after the split (quick runs).
    """

    name: ClassVar[str] = "classification"

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_size: int | float = 5000,
        seed: int = 0,
        augment: bool = True,
        download: bool = False,
        train_subset: int | None = None,
    ) -> None:
        super().__init__()
        for arg, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise DataError(f"{arg} {value!r} is not a positive integer; pass e.g. 128")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise DataError(f"num_workers {num_workers!r} is negative; pass 0 or more")
        if train_subset is not None and (not isinstance(train_subset, int) or train_subset < 1):
            raise DataError(
                f"train_subset {train_subset!r} is not a positive count; pass e.g. 1000 or null"
            )
        if isinstance(val_size, bool) or not isinstance(val_size, int | float):
            raise DataError(f"val_size {val_size!r} is neither a count nor a fraction")
        if (isinstance(val_size, float) and not 0.0 < val_size < 1.0) or val_size < 0:
            raise DataError(
                f"val_size {val_size!r} is neither a fraction in (0, 1) nor a count >= 0; "
                "pass e.g. 5000 or 0.1"
            )
        self.data_dir = None if data_dir is None else str(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.seed = seed
        self.train_sampler: EpochShuffle | None = None
        self._resume: tuple[int, int] | None = None  # (epoch, samples done) for resume_at
        self.augment = augment
        self.download = download
        self.train_subset = train_subset
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.train_indices: list[int] = []
        self.val_indices: list[int] = []
        self.source: str | None = None

    # ---- what subclasses provide -------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Number of classes (known right after construction)."""
        raise NotImplementedError

    @property
    def in_channels(self) -> int:
        """Channels of the model input."""
        raise NotImplementedError

    @property
    def input_size(self) -> int:
        """Side length of the square model input."""
        raise NotImplementedError

    @property
    def class_names(self) -> list[str] | None:
        """Class names in label order, where known."""
        return None

    def check(self) -> None:
        """Cheaply verify the data can be found; raise :class:`DataError` saying how if not."""
        raise NotImplementedError

    def _load_train_pool(self) -> tuple[Dataset, Dataset]:
        """The whole training pool twice, same order: (training view, evaluation view)."""
        raise NotImplementedError

    def _load_test(self) -> Dataset:
        """The test set with evaluation transforms."""
        raise NotImplementedError

    # ---- shared machinery ---------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one model input."""
        return (self.in_channels, self.input_size, self.input_size)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs (all of them for ``None``); idempotent."""
        if stage in (None, "fit", "validate") and self.train_dataset is None:
            self.check()
            train_view, eval_view = self._load_train_pool()
            total = len(train_view)  # type: ignore[arg-type]
            n_val = resolve_count(self.val_size, total, "val_size")
            train_idx, val_idx = split_indices(total, n_val, self.seed)
            if self.train_subset is not None:
                train_idx = train_idx[: self.train_subset]
            self.train_indices, self.val_indices = train_idx, val_idx
            self.train_dataset = Subset(train_view if self.augment else eval_view, train_idx)
            self.val_dataset = Subset(eval_view, val_idx)
        if stage in (None, "test", "predict") and self.test_dataset is None:
            self.check()
            self.test_dataset = self._load_test()

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        sampler = None
        if train:
            sampler = self.train_sampler = EpochShuffle(len(dataset), self.seed)  # type: ignore[arg-type]
            if self._resume is not None:
                sampler.resume_at(*self._resume)
                self._resume = None
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def resume_at(self, epoch: int, batches: int) -> None:
        """Make the next training loader continue ``epoch`` after its first ``batches``
        batches, in that epoch's order (a run resumed from a mid-epoch checkpoint)."""
        self._resume = (epoch, batches * self.batch_size)
        if self.train_sampler is not None:
            self.train_sampler.resume_at(*self._resume)
            self._resume = None

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (augmented when ``augment``)."""
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches from the held-out part of the training set."""
        if self.val_dataset is None:
            self.setup("validate")
        assert self.val_dataset is not None
        return self._loader(self.val_dataset, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches; the test set is never used for validation."""
        if self.test_dataset is None:
            self.setup("test")
        assert self.test_dataset is not None
        return self._loader(self.test_dataset, train=False)

    def describe(self) -> dict[str, Any]:
        """Name, split sizes, input shape and class count (sets the data up if needed)."""
        self.setup(None)
        return {
            "name": self.name,
            "data_dir": self.source,
            "train_size": len(self.train_dataset),  # type: ignore[arg-type]
            "val_size": len(self.val_dataset),  # type: ignore[arg-type]
            "test_size": len(self.test_dataset),  # type: ignore[arg-type]
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
        }
