"""The LR (and HR, when known) images graphs and engines are checked on: a folder of images or
``.npy`` arrays, or the Set5/Set14 benchmark. Used by ``calib`` (INT8 drift) and ``verify``
(parity reports), so it sits in the lowest stage that needs it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ExportError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_SETS = ("Set5", "Set14")


@dataclass
class Sample:
    name: str
    lr: np.ndarray                 # float32 [N, 3, h, w] in [0, 1]
    hr: np.ndarray | None = None   # float32 [N, 3, H, W] in [0, 1], or None



# --------------------------------------------------------------------------- inputs
def check_input(name: str, array: np.ndarray) -> np.ndarray:
    """A float32 ``[N, 3, H, W]`` array, or a one-line :class:`ExportError`."""
    array = np.asarray(array)
    if array.ndim != 4 or array.shape[1] != 3 or min(array.shape) < 1:
        raise ExportError(f"input {name}: expected a 4-D [N, 3, H, W] array, got shape {tuple(array.shape)}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # truncated, not an image
        raise ExportError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    return arr.transpose(2, 0, 1)[None].copy()


def _hr_for(lr_path: Path, scale: int) -> Path | None:
    """EDSR layout: <set>/LR_bicubic/X<s>/<name>x<s>.png -> <set>/HR/<name>.png."""
    stem = re.sub(rf"x{scale}$", "", lr_path.stem, flags=re.IGNORECASE)
    for base in (lr_path.parent.parent.parent / "HR", lr_path.parent.parent / "HR"):
        for ext in (lr_path.suffix, ".png"):
            if (base / f"{stem}{ext}").is_file():
                return base / f"{stem}{ext}"
    return None


def load_samples(folder: str | Path, scale: int, limit: int | None = None,
                 problems: list | None = None) -> list[Sample]:
    """LR images (or ``.npy`` arrays [N, 3, h, w]) from ``folder``, with HR images when found.

    An unreadable file raises :class:`ExportError` naming it; with a ``problems`` list it is
    skipped instead (its one-line message appended) and the others are loaded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such image folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS + (".npy",))
    if not files:
        raise ExportError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)} or .npy)")
    samples = []
    for path in files[:limit]:
        try:
            samples.append(_load_sample(path, scale))
        except ExportError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
    return samples


def _load_sample(path: Path, scale: int) -> Sample:
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ExportError(f"{path}: cannot read array ({type(exc).__name__}: {exc})") from None
        return Sample(path.stem, check_input(str(path), array))
    lr = _read_rgb(path)
    hr_path = _hr_for(path, scale)
    hr = None
    if hr_path is not None:
        hr = _read_rgb(hr_path)[..., : lr.shape[2] * scale, : lr.shape[3] * scale]
        if hr.shape[2:] != (lr.shape[2] * scale, lr.shape[3] * scale):
            hr = None
    return Sample(re.sub(rf"x{scale}$", "", path.stem, flags=re.IGNORECASE), lr, hr)


def data_root() -> Path:
    from lcoan.data.paths import default_data_root
    return default_data_root()


def benchmark_samples(scale: int, sets: Sequence[str] = DEFAULT_SETS, root: str | Path | None = None,
                      limit: int | None = None) -> list[Sample]:
    """Set5 and Set14 ``LR_bicubic/X{scale}`` with their HR images."""
    root = Path(root) if root else data_root() / "benchmark"
    samples = []
    for name in sets:
        folder = root / name / "LR_bicubic" / f"X{scale}"
        if not folder.is_dir():
            raise ExportError(f"{folder}: benchmark images not found (set LCOAN_DATA or pass --images)")
        samples += [Sample(f"{name}/{s.name}", s.lr, s.hr) for s in load_samples(folder, scale, limit)]
    return samples
