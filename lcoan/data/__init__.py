"""Data: image IO, MATLAB-compatible bicubic resize, SR datasets and loaders."""
from .datasets import DatasetError, HROnlyDataset, PairedDataset, list_images
from .imageio import (
    ImageReadError,
    read_image,
    read_image_levels,
    read_image_with_alpha,
    write_image,
)
from .paths import default_data_root
from .resize import imresize, imresize_float, imresize_torch, imresize_uint8

__all__ = [
    "DatasetError",
    "HROnlyDataset",
    "PairedDataset",
    "list_images",
    "ImageReadError",
    "read_image",
    "read_image_levels",
    "read_image_with_alpha",
    "write_image",
    "default_data_root",
    "imresize",
    "imresize_float",
    "imresize_torch",
    "imresize_uint8",
]
