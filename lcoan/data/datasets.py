"""Super-resolution datasets and a deterministic DataLoader.

Datasets return ``(lr, hr)`` float32 tensors, CHW, in ``[0, 1]``.

* :class:`PairedDataset`: EDSR/DIV2K layout ``<root>/HR/<name>.png`` and
  ``<root>/LR_bicubic/X{s}/<name>x{s}.png`` (also ``benchmark/Set5``, ``Set14``, ``Set5_matlab`` with
  ``hr_dir="HR_x{s}"``). The HR image is cropped (top-left) to ``s`` times the LR size.
* :class:`HROnlyDataset`: HR images from one or more folders; the HR image is cropped (top-left)
  to a multiple of ``s`` and the LR image is made from the whole cropped image with the
  MATLAB-compatible bicubic downscale (:func:`lcoan.data.resize.imresize`, exact MATLAB for
  8-bit files), exactly as benchmark LR images are made.

Training mode (``train=True``): random LR crops of ``patch_size`` (default 48, HR patch
``48 * scale``), random horizontal flip, vertical flip and transpose (each with probability 1/2),
and ``len(dataset) == repeat * number_of_images``. Evaluation mode returns whole images.

Images that cannot be read are skipped with a ``UserWarning`` naming the file. In training mode
images whose LR size is smaller than the patch are skipped with a warning too (no padding, so that
every patch is real image content). Decoded images (8-bit data as uint8) and the LR images made
from them are kept in memory (``cache=True``, the default); the 291-image training set takes
about 140 MB. With ``cache=True`` all files are decoded when the dataset is built, so unreadable
files are found up front.

Determinism
-----------
A dataset item may be addressed by an ``int`` or by an ``(index, seed)`` pair. For the pair, crop
position and flips are drawn with ``torch.randint`` from a ``torch.Generator`` seeded with ``seed``,
so the sample depends only on ``(index, seed)``: not on the worker that loads it, the number of
workers or what was loaded before. The trainer's batch sampler (``lcoan.train.StepBatches``) yields
such pairs, keyed by ``(seed, step)``, which is what makes resume bit-exact.
For a plain ``int`` index the draws use torch's global RNG (which DataLoader seeds per worker).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import LcoanError
from .imageio import IMAGE_EXTENSIONS, ImageReadError, levels_to_float, read_image_levels
from .resize import imresize_float, imresize_uint8

__all__ = ["PairedDataset", "HROnlyDataset", "DatasetError", "list_images"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Key = Union[int, Tuple[int, int]]


class DatasetError(LcoanError, RuntimeError):
    """A dataset with nothing to train or validate on; ``str()`` is one line naming the folder.
    A RuntimeError still, for callers that caught the error these datasets raised before."""


def _nothing_usable(where: str, found: int, what: str = "images") -> DatasetError:
    why = (f"{found} found, all skipped (see the warnings above)" if found
           else f"none with the extensions {' '.join(IMAGE_EXTENSIONS)}")
    return DatasetError(f"{where}: no usable {what} ({why})")


def list_images(folder: PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name."""
    exts = {e.lower() for e in extensions}
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in exts)


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(levels_to_float(arr).transpose(2, 0, 1)))


def _make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    if hr.dtype == np.uint8:
        return imresize_uint8(hr, 1.0 / scale)
    return imresize_float(levels_to_float(hr), 1.0 / scale)


class _SRDataset(Dataset):
    """Shared machinery: entries, cache, cropping, augmentation, keys."""

    def __init__(self, scale: int, patch_size: int, train: bool, augment: bool, repeat: int, cache: bool):
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        self.scale = int(scale)
        self.patch_size = int(patch_size)
        self.train = bool(train)
        self.augment = bool(augment) and self.train
        self.repeat = int(repeat) if self.train else 1
        self.cache = bool(cache)
        self.names: List[str] = []
        self._cache: dict = {}

    # subclasses fill self.names and implement _load_pair(i) -> (lr levels, hr levels), HWC arrays
    def _load_pair(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _pair(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        pair = self._cache.get(i)
        if pair is None:
            pair = self._load_pair(i)
            if self.cache:
                self._cache[i] = pair
        return pair

    def _filter(self, indices: Iterable[int], describe) -> List[int]:
        """Try every entry (decoding it when caching); drop unreadable and too small ones."""
        keep = []
        for i in indices:
            try:
                if self.cache or self.train:
                    lr, _ = self._pair(i)
                    lh, lw = lr.shape[:2]
                    if self.train and (lh < self.patch_size or lw < self.patch_size):
                        warnings.warn(
                            f"skipping {describe(i)}: LR size {lh}x{lw} is smaller than the "
                            f"{self.patch_size}x{self.patch_size} training patch", stacklevel=3)
                        self._cache.pop(i, None)
                        continue
            except ImageReadError as e:
                warnings.warn(f"skipping unreadable image: {e}", stacklevel=3)
                continue
            keep.append(i)
        return keep

    def __len__(self) -> int:
        return len(self.names) * self.repeat

    def __getitem__(self, key: Key) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(key, (tuple, list)):
            index, seed = int(key[0]), int(key[1])
            gen = torch.Generator().manual_seed(seed)
        else:
            index, gen = int(key), None
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for dataset of length {len(self)}")
        lr, hr = self._pair(index % len(self.names))
        if self.train:
            lr, hr = self._random_crop(lr, hr, gen)
        lr_t, hr_t = _to_tensor(lr), _to_tensor(hr)
        if self.augment:
            flips = torch.randint(0, 2, (3,), generator=gen).tolist()
            if flips[0]:
                lr_t, hr_t = lr_t.flip(-1), hr_t.flip(-1)
            if flips[1]:
                lr_t, hr_t = lr_t.flip(-2), hr_t.flip(-2)
            if flips[2]:
                lr_t, hr_t = lr_t.transpose(-1, -2), hr_t.transpose(-1, -2)
            lr_t, hr_t = lr_t.contiguous(), hr_t.contiguous()
        return lr_t, hr_t

    def _random_crop(self, lr, hr, gen):
        p, s = self.patch_size, self.scale
        lh, lw = lr.shape[:2]
        y = int(torch.randint(0, lh - p + 1, (1,), generator=gen))
        x = int(torch.randint(0, lw - p + 1, (1,), generator=gen))
        return lr[y:y + p, x:x + p], hr[y * s:(y + p) * s, x * s:(x + p) * s]


class PairedDataset(_SRDataset):
    """HR/LR pairs in the EDSR layout (see the module docstring).

    ``root``: folder with ``hr_dir`` and ``lr_dir``; ``hr_dir`` defaults to ``HR`` and ``lr_dir`` to
    ``LR_bicubic/X{scale}``; both may contain ``{s}`` which is replaced by the scale.
    LR files are looked up as ``<name>x{s}<ext>`` (then ``<name><ext>``) with any image extension.
    """

    def __init__(self, root: PathLike, scale: int, *, train: bool = False, patch_size: int = 48,
                 augment: bool = True, repeat: int = 1, cache: bool = True,
                 hr_dir: str = "HR", lr_dir: str = "LR_bicubic/X{s}"):
        super().__init__(scale, patch_size, train, augment, repeat, cache)
        self.root = Path(root)
        hr_folder = self.root / hr_dir.format(s=self.scale)
        lr_folder = self.root / lr_dir.format(s=self.scale)
        if not hr_folder.is_dir() or not lr_folder.is_dir():
            raise FileNotFoundError(f"PairedDataset: need folders {hr_folder} and {lr_folder}")
        lr_files = {p.stem: p for p in list_images(lr_folder)}
        self._hr_paths: List[Path] = []
        self._lr_paths: List[Path] = []
        hr_found = list_images(hr_folder)
        for hr_path in hr_found:
            lr_path = lr_files.get(f"{hr_path.stem}x{self.scale}") or lr_files.get(hr_path.stem)
            if lr_path is None:
                warnings.warn(f"skipping {hr_path}: no LR image for x{self.scale} in {lr_folder}", stacklevel=2)
                continue
            self._hr_paths.append(hr_path)
            self._lr_paths.append(lr_path)
        self.names = [p.stem for p in self._hr_paths]
        keep = self._filter(range(len(self.names)), lambda i: str(self._hr_paths[i]))
        self._reindex(keep)
        if not self.names:
            raise _nothing_usable(str(hr_folder), len(hr_found), f"image pairs for x{self.scale} with {lr_folder}")

    def _reindex(self, keep: List[int]) -> None:
        cache = {new: self._cache[old] for new, old in enumerate(keep) if old in self._cache}
        self._hr_paths = [self._hr_paths[i] for i in keep]
        self._lr_paths = [self._lr_paths[i] for i in keep]
        self.names = [self.names[i] for i in keep]
        self._cache = cache

    def _load_pair(self, i: int):
        hr = read_image_levels(self._hr_paths[i])
        lr = read_image_levels(self._lr_paths[i])
        s = self.scale
        lh, lw = lr.shape[:2]
        if hr.shape[0] < lh * s or hr.shape[1] < lw * s:
            raise ImageReadError(self._hr_paths[i],
                                 f"HR size {hr.shape[0]}x{hr.shape[1]} is smaller than x{s} its LR "
                                 f"image {self._lr_paths[i].name} ({lh}x{lw})")
        return lr, np.ascontiguousarray(hr[:lh * s, :lw * s])


class HROnlyDataset(_SRDataset):
    """HR images from ``folders`` (one folder, a file list or several folders); LR made on the fly.

    Entries may be folders (their image files, sorted) or image files.
    """

    def __init__(self, folders: Union[PathLike, Sequence[PathLike]], scale: int, *, train: bool = True,
                 patch_size: int = 48, augment: bool = True, repeat: int = 1, cache: bool = True):
        super().__init__(scale, patch_size, train, augment, repeat, cache)
        if isinstance(folders, (str, os.PathLike)):
            folders = [folders]
        paths: List[Path] = []
        for entry in folders:
            entry = Path(entry)
            if entry.is_dir():
                paths.extend(list_images(entry))
            elif entry.is_file():
                paths.append(entry)
            else:
                raise FileNotFoundError(f"HROnlyDataset: no such folder or file: {entry}")
        self._paths = paths
        self.names = [p.stem for p in paths]
        keep = self._filter(range(len(paths)), lambda i: str(self._paths[i]))
        self._cache = {new: self._cache[old] for new, old in enumerate(keep) if old in self._cache}
        self._paths = [self._paths[i] for i in keep]
        self.names = [self.names[i] for i in keep]
        if not self.names:
            raise _nothing_usable(", ".join(str(f) for f in folders), len(paths))

    def _load_pair(self, i: int):
        hr = read_image_levels(self._paths[i])
        s = self.scale
        h, w = (hr.shape[0] // s) * s, (hr.shape[1] // s) * s
        if h == 0 or w == 0:
            raise ImageReadError(self._paths[i], f"image {hr.shape[0]}x{hr.shape[1]} is smaller than the scale {s}")
        hr = np.ascontiguousarray(hr[:h, :w])
        return _make_lr(hr, s), hr
