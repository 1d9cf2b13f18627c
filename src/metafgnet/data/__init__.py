"""Data: the synthetic benchmark, real-dataset readers, manifests, splits and torch datasets.

Typical flow: :func:`generate_synthetic` (or a real dataset on disk) -> :func:`prepare_manifests`
(reads, checks every image, carves the validation split, writes small CSV manifests) ->
:func:`load_prepared` in every later stage -> :class:`ImageDataset` with
:func:`train_transform` / :func:`eval_transform`.
"""

from metafgnet.data.cub import read_cub
from metafgnet.data.dataset import ImageDataset, PreparedDatasets, loader_kwargs
from metafgnet.data.dogs import read_dogs
from metafgnet.data.errors import DataError
from metafgnet.data.folder import read_folder
from metafgnet.data.manifest import PreparedData, load_prepared
from metafgnet.data.prepare import prepare_manifests
from metafgnet.data.records import Listing, Record
from metafgnet.data.splits import split_validation
from metafgnet.data.synthetic import generate_synthetic
from metafgnet.data.torchvision_sets import read_aircraft, read_cars, read_flowers
from metafgnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataError",
    "ImageDataset",
    "PreparedDatasets",
    "loader_kwargs",
    "Listing",
    "PreparedData",
    "Record",
    "eval_transform",
    "generate_synthetic",
    "load_prepared",
    "prepare_manifests",
    "read_aircraft",
    "read_cars",
    "read_cub",
    "read_dogs",
    "read_flowers",
    "read_folder",
    "split_validation",
    "train_transform",
]
