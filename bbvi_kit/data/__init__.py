"""Dataset plugins (one file per dataset family) and batching."""

from bbvi_kit.data.base import DataInfo, DatasetPlugin, DataSplits, ImageTensorDataset, as_args, batch_loader
from bbvi_kit.data.celeba import CelebA
from bbvi_kit.data.cifar import CIFAR100
from bbvi_kit.data.digits import Digits
from bbvi_kit.data.mnist import MNIST, FashionMNIST
from bbvi_kit.data.root import DATA_ENV, data_root
from bbvi_kit.data.synthetic_ppca import SyntheticPPCA

__all__ = [
    "CIFAR100",
    "DATA_ENV",
    "CelebA",
    "DataInfo",
    "DataSplits",
    "DatasetPlugin",
    "Digits",
    "FashionMNIST",
    "ImageTensorDataset",
    "MNIST",
    "SyntheticPPCA",
    "as_args",
    "batch_loader",
    "data_root",
]
