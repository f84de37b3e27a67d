"""Data modules (setup + train/val/test loaders) for the datasets abc-lab trains on."""

from abc_lab.data.base import ClassificationDataModule, DataError
from abc_lab.data.cifar10 import CIFAR10DataModule
from abc_lab.data.fashion_mnist import FashionMNISTDataModule
from abc_lab.data.image_folder import ImageFolderDataModule
from abc_lab.data.imagenet import ImageNetDataModule

__all__ = [
    "CIFAR10DataModule",
    "ClassificationDataModule",
    "DataError",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
]
