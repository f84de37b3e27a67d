"""In-memory uint8 image datasets with batched tensor transforms.

Small datasets (Fashion-MNIST, CIFAR-10) fit in memory as one uint8 tensor; decoding
them once and cropping/flipping/normalising whole batches with tensor ops is far faster
than PIL per sample, and keeps per-sample randomness (each sample draws its own crop
offset and flip).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset


class BatchImageTransform:
    """uint8 ``[B, C, H, W]`` -> normalised float, with optional random crop and flip.

    Args:
        mean: per-channel mean of the [0, 1] pixels.
        std: per-channel standard deviation of the [0, 1] pixels.
        crop_padding: zero-pad by this many pixels and crop back to the original size at a
            random offset per sample (0: no crop).
        hflip: flip each sample horizontally with probability 1/2.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 0,
        hflip: bool = False,
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.crop_padding = crop_padding
        self.hflip = hflip

    @property
    def random(self) -> bool:
        """Whether the transform draws random numbers (i.e. augments)."""
        return self.crop_padding > 0 or self.hflip

    def _crop(self, images: torch.Tensor) -> torch.Tensor:
        b, c, h, w = images.shape
        p = self.crop_padding
        padded = torch.nn.functional.pad(images, (p, p, p, p))  # zeros: black border
        dy = torch.randint(0, 2 * p + 1, (b,))
        dx = torch.randint(0, 2 * p + 1, (b,))
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # [B, 1, H, 1]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # [B, 1, 1, W]
        batch = torch.arange(b)[:, None, None, None]
        chans = torch.arange(c)[None, :, None, None]
        return padded[batch, chans, rows, cols]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.crop_padding > 0:
            images = self._crop(images)
        if self.hflip:
            flip = torch.rand(images.shape[0]) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        x = images.to(torch.float32).div_(255.0)
        return x.sub_(self.mean).div_(self.std)


class TensorImageDataset(Dataset):
    """Images held as one uint8 ``[N, C, H, W]`` tensor plus int64 labels.

    ``__getitems__`` lets the DataLoader fetch (and transform) a whole batch at once.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, transform: BatchImageTransform
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {images.dtype} {images.shape}"
            )
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.transform(self.images[index : index + 1])[0]
        return image, int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        images = self.transform(self.images[idx])
        return list(zip(images.unbind(0), self.labels[idx].tolist(), strict=True))
