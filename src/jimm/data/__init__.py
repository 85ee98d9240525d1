"""Data for jimm: transformers-equal image preprocessing, image loading, datasets and grain loaders."""

from .datasets import ArraySplit, DatasetError, FileSplit, digits, image_folder, load_dataset
from .loader import Augment, eval_batches, train_dataset
from .preprocess import (
    ImageProcessorConfig,
    ImageReadError,
    load_image,
    preprocess,
    preprocess_files,
    preprocess_images,
)

__all__ = [
    "ArraySplit",
    "Augment",
    "DatasetError",
    "FileSplit",
    "ImageProcessorConfig",
    "ImageReadError",
    "digits",
    "eval_batches",
    "image_folder",
    "load_dataset",
    "load_image",
    "preprocess",
    "preprocess_files",
    "preprocess_images",
    "train_dataset",
]
