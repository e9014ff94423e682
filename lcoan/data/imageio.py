"""Image reading and writing for the project.

Reading (:func:`read_image`) always returns float32 ``HxWx3`` in ``[0, 1]``:

* EXIF orientation is applied (``PIL.ImageOps.exif_transpose``);
* greyscale (``L``, ``1``, 16-bit ``I;16``/``I``) is repeated to 3 channels;
* alpha (``RGBA``, ``LA``, palette with transparency) is dropped; :func:`read_image_with_alpha`
  returns it separately as float32 ``HxW``;
* 8-bit data is divided by 255, 16-bit data by 65535. Pillow reads 16-bit greyscale PNGs as
  ``I;16`` (or ``I``), which is handled directly; it reduces 16-bit RGB/RGBA PNGs to 8 bits, so those
  are decoded with pypng to keep the full precision. Mode ``I``
  (32-bit integer) is taken as 16-bit data and clipped to ``[0, 65535]``; mode ``F`` is taken as
  already in ``[0, 1]`` and clipped.

Every failure raises :class:`ImageReadError`, whose message is one line naming the file.

:func:`read_image_levels` returns the integer levels (uint8 or uint16, ``HxWx3``) instead, for exact
MATLAB-style processing and compact caching.

:func:`write_image` writes 8-bit (any Pillow format) or 16-bit (PNG) files atomically: it writes a
temporary file in the target directory and renames it with ``os.replace``
(:func:`lcoan.safeio.atomic_output`).
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..safeio import atomic_output
from ..errors import LcoanError

__all__ = [
    "ImageReadError",
    "IMAGE_EXTENSIONS",
    "read_image",
    "read_image_with_alpha",
    "read_image_levels",
    "levels_to_float",
    "to_three_channels",
    "apply_exif_orientation",
    "write_image",
]

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageReadError(LcoanError, OSError):
    """An image file could not be read; ``str()`` is a single line naming the file."""

    def __init__(self, path: PathLike, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split()) or "unknown error"
        super().__init__(f"cannot read image '{self.path}': {self.reason}")

    def __str__(self) -> str:  # OSError's own __str__ would add errno formatting
        return self.args[0]

    def __reduce__(self):  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


# --------------------------------------------------------------------------- helpers


def to_three_channels(arr: np.ndarray) -> np.ndarray:
    """``HxW`` or ``HxWx1`` -> ``HxWx3`` (repeat); ``HxWx4`` -> ``HxWx3`` (drop alpha)."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected HxW or HxWxC array, got shape {arr.shape}")
    c = arr.shape[2]
    if c == 1:
        return np.repeat(arr, 3, axis=2)
    if c == 2:  # grey + alpha
        return np.repeat(arr[:, :, :1], 3, axis=2)
    if c == 3:
        return arr
    if c == 4:
        return arr[:, :, :3]
    raise ValueError(f"unsupported number of channels: {c}")


def levels_to_float(arr: np.ndarray) -> np.ndarray:
    """uint8 -> /255, uint16 -> /65535, float -> unchanged; returns float32."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(65535.0)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    raise TypeError(f"unsupported dtype {arr.dtype}")


def apply_exif_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation tag (1-8) to an ``HxW[xC]`` array, as ``exif_transpose`` does."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = np.rot90(arr, -1)
    elif orientation == 7:
        arr = arr[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        arr = np.rot90(arr, 1)
    return np.ascontiguousarray(arr)


def _png_header(path: Path) -> Optional[Tuple[int, int, int, int, int]]:
    """(width, height, bit depth, colour type, interlace) of a PNG file, or None."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    w, h, depth, ctype, _comp, _filt, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return w, h, depth, ctype, interlace


def _decode_png16(path: Path) -> np.ndarray:
    """A 16-bit PNG (any colour type, interlaced too) as uint16 ``HxWxC``, through pypng."""
    import png

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    planes = info["planes"]
    return np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, planes)


def _open_levels(path: Path) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Decode to (colour levels HxWx3 uint8/uint16 or float32, alpha HxW same dtype or None)."""
    with Image.open(path) as im:
        im.load()
        header = _png_header(path) if im.format == "PNG" else None
        if header is not None and header[2] == 16 and header[3] in (2, 4, 6):
            orientation = im.getexif().get(0x0112, 1)
            arr = apply_exif_orientation(_decode_png16(path), orientation)
        else:
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode == "1":
                im, mode = im.convert("L"), "L"
            elif mode in ("P", "PA"):
                has_alpha = mode == "PA" or "transparency" in im.info
                mode = "RGBA" if has_alpha else "RGB"
                im = im.convert(mode)
            elif mode not in ("L", "LA", "RGB", "RGBA", "F") and not mode.startswith("I"):
                im, mode = im.convert("RGB"), "RGB"  # CMYK, YCbCr, LAB, HSV, ...
            arr = np.asarray(im)
            if mode.startswith("I;16"):
                arr = arr.astype(np.uint16)
            elif mode == "I":
                arr = np.clip(arr, 0, 65535).astype(np.uint16)
            elif mode == "F":
                arr = np.clip(arr, 0.0, 1.0).astype(np.float32)
            else:
                arr = arr.astype(np.uint8, copy=False)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    alpha = None
    if arr.shape[2] in (2, 4):
        alpha = np.ascontiguousarray(arr[:, :, -1])
    return np.ascontiguousarray(to_three_channels(arr)), alpha


def _png_error():
    import png
    return png.Error


def _guarded(path: PathLike, fn):
    p = Path(path)
    try:
        return fn(p)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(p, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(p, "is a directory") from None
    except PermissionError:
        raise ImageReadError(p, "permission denied") from None
    except UnidentifiedImageError:
        raise ImageReadError(p, "not a recognised image format") from None
    except (OSError, ValueError, SyntaxError, zlib.error, struct.error, Image.DecompressionBombError, _png_error()) as e:
        raise ImageReadError(p, f"corrupt or unsupported image data ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------- public API


def read_image_levels(path: PathLike) -> np.ndarray:
    """Integer levels ``HxWx3`` (uint8, or uint16 for 16-bit files; float32 for mode ``F``)."""
    return _guarded(path, lambda p: _open_levels(p)[0])


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as float32 ``HxWx3`` in ``[0, 1]`` (see the module docstring)."""
    return levels_to_float(read_image_levels(path))


def read_image_with_alpha(path: PathLike) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(rgb float32 HxWx3, alpha float32 HxW or None)``, both in ``[0, 1]``."""
    rgb, alpha = _guarded(path, _open_levels)
    return levels_to_float(rgb), (None if alpha is None else levels_to_float(alpha))


def _write_png16(fh, arr: np.ndarray) -> None:
    import png

    h, w, c = arr.shape
    writer = png.Writer(w, h, bitdepth=16, greyscale=c in (1, 2), alpha=c in (2, 4), compression=6)
    writer.write(fh, arr.astype(np.uint16).reshape(h, w * c))


def _as_hwc(array) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor, CHW or HW
        t = array.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 3:
            t = t.permute(1, 2, 0)
        array = t.numpy()
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"write_image: expected HxW or HxWxC (C in 1..4) array, got shape {arr.shape}")
    return arr


def write_image(path: PathLike, array, bits: int = 8) -> Path:
    """Write ``array`` (HxW or HxWxC numpy array, or a CHW torch tensor) atomically.

    Float input is taken as ``[0, 1]``: clipped, scaled by 255 or 65535 and rounded. Integer input
    must already be uint8 (``bits=8``) or uint16 (``bits=16``). ``bits=16`` writes a PNG. The file is
    written to a temporary name in the same directory and moved into place with ``os.replace``.
    """
    if bits not in (8, 16):
        raise ValueError(f"write_image: bits must be 8 or 16, got {bits}")
    path = Path(path)
    arr = _as_hwc(array)
    maxval, dtype = (255, np.uint8) if bits == 8 else (65535, np.uint16)
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:  # clipping would turn NaN into black and Inf into white without a word
            raise ValueError(f"write_image: {path}: {bad} non-finite value(s) (NaN/Inf) in the image; not written")
        arr = np.floor(np.clip(arr.astype(np.float64), 0.0, 1.0) * maxval + 0.5).astype(dtype)
    elif arr.dtype != dtype:
        raise TypeError(f"write_image: {arr.dtype} data cannot be written with bits={bits}")
    suffix = path.suffix.lower()
    if bits == 16 and suffix != ".png":
        raise ValueError("write_image: 16-bit output is only supported for .png files")
    if bits == 8:
        fmt = Image.registered_extensions().get(suffix)
        if fmt is None:
            raise ValueError(f"write_image: unknown image extension '{suffix}'")
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            if bits == 16:
                _write_png16(f, arr)
            else:
                c = arr.shape[2]
                img = Image.fromarray(arr[:, :, 0] if c == 1 else arr, {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c])
                img.save(f, format=fmt)
    return path
