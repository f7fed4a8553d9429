"""The harness's datasets: where files live (``locate``), how they are read (``formats``), and
the resident, device-side dataset with its augmentation (``resident``)."""

from .formats import DATASETS, DatasetError
from .locate import (
    DOWNLOADS,
    ENV_DATA_DIR,
    Download,
    default_cache_dir,
    download_dataset,
    resolve_data_dir,
    verify_dataset,
)
from .resident import (
    AUGMENTATIONS,
    ImageData,
    load_dataset,
    random_crop_flip,
    random_flip,
)

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DOWNLOADS",
    "ENV_DATA_DIR",
    "DatasetError",
    "Download",
    "ImageData",
    "default_cache_dir",
    "download_dataset",
    "load_dataset",
    "random_crop_flip",
    "random_flip",
    "resolve_data_dir",
    "verify_dataset",
]
