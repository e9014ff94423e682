"""Image IO, MATLAB-compatible resize and datasets."""
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from lcoan.data import (
    HROnlyDataset,
    ImageReadError,
    PairedDataset,
    imresize,
    imresize_float,
    imresize_torch,
    read_image,
    read_image_levels,
    read_image_with_alpha,
    write_image,
)
from lcoan.data.imageio import apply_exif_orientation
from lcoan.data.paths import default_data_root
from lcoan.data.resize import output_size

DATA = default_data_root()
BENCH = DATA / "benchmark"
needs_data = pytest.mark.skipif(not (BENCH / "Set5_matlab").is_dir(), reason=f"benchmark data not found under {DATA}")
NAMES = ["baby", "bird", "butterfly", "head", "woman"]


def load_u8(path):
    return np.asarray(Image.open(path).convert("RGB"))


# ----------------------------------------------------------------------------- resize


@needs_data
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imresize_matches_matlab(scale):
    diffs = []
    for name in NAMES:
        hr = load_u8(BENCH / "Set5_matlab" / f"HR_x{scale}" / f"{name}.png")
        lr = load_u8(BENCH / "Set5_matlab" / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")
        out = imresize(hr, 1 / scale)
        assert out.dtype == np.uint8 and out.shape == lr.shape
        diffs.append(np.abs(out.astype(int) - lr.astype(int)).ravel())
        if name == "bird":  # float path: no rounding between passes, so close but not exact
            f = imresize_float(hr.astype(np.float64) / 255, 1 / scale)
            assert np.abs(np.clip(np.floor(f * 255 + 0.5), 0, 255) - lr).max() <= 2
    d = np.concatenate(diffs)
    assert d.max() <= 1, f"x{scale}: max {d.max()} grey levels from MATLAB"
    assert d.mean() < 1e-3


def test_imresize_torch_matches_numpy_float():
    rng = np.random.default_rng(0)
    img = rng.random((23, 31, 3))
    for scale in (1 / 3, 0.5, 2, (0.25, 1.5)):
        ref = imresize_float(img, scale)
        t = imresize_torch(torch.from_numpy(img.transpose(2, 0, 1)).double(), scale)
        assert np.allclose(t.numpy().transpose(1, 2, 0), ref, atol=1e-12)
    assert output_size((23, 31), 1 / 3) == (8, 11)
    assert imresize(np.zeros((10, 10), np.uint8), size=(4, 7)).shape == (4, 7)


def test_imresize_constant_and_upscale():
    img = np.full((9, 13, 3), 77, np.uint8)
    for scale in (0.5, 1 / 3, 2, 3):
        out = imresize(img, scale)
        assert out.shape[:2] == output_size((9, 13), scale)
        assert (out == 77).all()
    ramp = np.tile(np.linspace(0, 1, 16), (4, 1))
    up = imresize_float(ramp, 2)
    assert up.shape == (8, 32) and np.all(np.diff(up[0, 4:-4]) > 0)


# ----------------------------------------------------------------------------- image IO


def test_grey_rgba_and_alpha(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.dtype == np.float32 and img.shape == (6, 8, 3)
    assert np.allclose(img[..., 1], grey / 255.0) and np.array_equal(img[..., 0], img[..., 2])

    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.shape == (5, 7, 3) and np.allclose(img, rgba[..., :3] / 255.0)
    rgb, alpha = read_image_with_alpha(tmp_path / "a.png")
    assert np.allclose(rgb, img) and alpha.shape == (5, 7) and np.allclose(alpha, rgba[..., 3] / 255.0)
    assert read_image_with_alpha(tmp_path / "g.png")[1] is None


def test_16bit_grey_png(tmp_path):
    grey16 = np.array([[0, 1, 257, 65535], [1000, 30000, 40000, 65534]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")  # mode I;16
    img = read_image(tmp_path / "g16.png")
    assert img.shape == (2, 4, 3)
    assert np.allclose(img[..., 0], grey16 / 65535.0, atol=1e-7)
    assert read_image_levels(tmp_path / "g16.png").dtype == np.uint16


def _png16_filtered(arr: np.ndarray) -> bytes:
    """16-bit RGB PNG using all five filter types (test-side encoder)."""
    h, w, c = arr.shape
    bpp = 2 * c
    data = arr.astype(">u2").reshape(h, w * c).view(np.uint8).astype(np.int32)
    out = bytearray()
    prev = np.zeros(w * bpp, np.int32)
    for y in range(h):
        line, ft = data[y], y % 5
        left = np.concatenate([np.zeros(bpp, np.int32), line[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        if ft == 0:
            pred = np.zeros_like(line)
        elif ft == 1:
            pred = left
        elif ft == 2:
            pred = prev
        elif ft == 3:
            pred = (left + prev) >> 1
        else:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        out.append(ft)
        out += ((line - pred) & 0xFF).astype(np.uint8).tobytes()
        prev = line

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b""))


def test_16bit_rgb_png_full_precision(tmp_path):
    arr = np.random.default_rng(1).integers(0, 65536, (11, 9, 3), dtype=np.uint16)
    (tmp_path / "f.png").write_bytes(_png16_filtered(arr))
    assert np.array_equal(read_image_levels(tmp_path / "f.png"), arr)
    img = read_image(tmp_path / "f.png")
    assert np.allclose(img, arr / 65535.0, atol=1e-7)
    # round trip through write_image(bits=16)
    write_image(tmp_path / "w.png", img, bits=16)
    assert np.array_equal(read_image_levels(tmp_path / "w.png"), arr)
    rgba = np.random.default_rng(2).integers(0, 65536, (4, 5, 4), dtype=np.uint16)
    write_image(tmp_path / "a16.png", rgba, bits=16)
    rgb, alpha = read_image_with_alpha(tmp_path / "a16.png")
    assert np.allclose(rgb, rgba[..., :3] / 65535.0, atol=1e-7)
    assert np.allclose(alpha, rgba[..., 3] / 65535.0, atol=1e-7)


def test_exif_orientation(tmp_path):
    arr = np.random.default_rng(3).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    base = Image.fromarray(arr)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.png"
        base.save(path, exif=exif)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        got = read_image(path)
        assert got.shape == expected.shape
        assert np.allclose(got, expected / 255.0)
        assert np.array_equal(apply_exif_orientation(arr, orientation), expected)
    assert read_image(tmp_path / "o6.png").shape == (6, 4, 3)


def test_read_errors_are_one_line(tmp_path):
    bad = tmp_path / "garbage.png"
    bad.write_bytes(b"not an image\nat all")
    good = np.zeros((40, 40, 3), np.uint8)
    Image.fromarray(good).save(tmp_path / "trunc.png")
    data = (tmp_path / "trunc.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    for path in (bad, tmp_path / "trunc.png", tmp_path / "missing.png", tmp_path):
        with pytest.raises(ImageReadError) as info:
            read_image(path)
        msg = str(info.value)
        assert "\n" not in msg and str(path) in msg, msg
        assert info.value.path == str(path)


def test_write_image_atomic_and_rounding(tmp_path):
    img = np.array([[[0.0, 0.5, 1.0], [1.2, -0.3, 0.5 / 255 + 1e-4]]], dtype=np.float32)
    out = write_image(tmp_path / "sub" / "x.png", img)
    assert np.array_equal(np.asarray(Image.open(out)), [[[0, 128, 255], [255, 0, 1]]])
    write_image(out, torch.zeros(3, 1, 2))  # overwrite, CHW tensor
    assert np.asarray(Image.open(out)).max() == 0
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.png"]  # no temp files left
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.jpg", img, bits=16)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.png"]


# ----------------------------------------------------------------------------- datasets


@needs_data
def test_paired_dataset_eval_shapes():
    ds = PairedDataset(BENCH / "Set5", 3)
    assert ds.names == sorted(NAMES) and len(ds) == 5
    for i in range(len(ds)):
        lr, hr = ds[i]
        assert lr.dtype == torch.float32 and lr.shape[0] == 3
        assert hr.shape[1:] == (lr.shape[1] * 3, lr.shape[2] * 3)
        assert 0 <= lr.min() and lr.max() <= 1


@needs_data
def test_paired_dataset_train_alignment():
    ds = PairedDataset(BENCH / "Set5_matlab", 2, train=True, patch_size=24, repeat=3, hr_dir="HR_x{s}")
    assert len(ds) == 15
    for i in range(6):
        lr, hr = ds[(i, 1234 + i)]
        assert lr.shape == (3, 24, 24) and hr.shape == (3, 48, 48)
        # MATLAB LR interior equals the resized HR crop (2 LR px away from the crop border)
        hr8 = np.round(hr.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
        d = np.abs(imresize(hr8, 0.5).astype(int) - np.round(lr.numpy().transpose(1, 2, 0) * 255))
        assert d[2:-2, 2:-2].max() <= 1


@needs_data
def test_hr_only_dataset_alignment_and_crop():
    ds = HROnlyDataset(BENCH / "Set5" / "HR", 3, train=False)
    for i in range(len(ds)):
        lr, hr = ds[i]
        assert hr.shape[1] % 3 == 0 and hr.shape[2] % 3 == 0
        assert hr.shape[1:] == (lr.shape[1] * 3, lr.shape[2] * 3)
    tr = HROnlyDataset([BENCH / "Set5" / "HR"], 3, train=True, patch_size=32, repeat=2)
    assert len(tr) == 10
    for i in range(len(tr)):
        lr, hr = tr[(i, 99 + i)]
        assert lr.shape == (3, 32, 32) and hr.shape == (3, 96, 96)
        hr8 = np.round(hr.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
        d = np.abs(imresize(hr8, 1 / 3).astype(int) - np.round(lr.numpy().transpose(1, 2, 0) * 255))
        assert d[2:-2, 2:-2].max() <= 1  # flips/transpose change the pass order: <= 1 level


@needs_data
def test_seeded_items_depend_only_on_index_and_seed():
    """What the trainer's StepBatches relies on for bit-exact resume: an ``(index, seed)`` item is the
    same in any order and in any worker process, and another seed draws another crop."""
    ds = HROnlyDataset(BENCH / "Set5" / "HR", 2, train=True, patch_size=16, repeat=4)
    keys = [(i, 1000 + i) for i in range(8)]
    first = [ds[k] for k in keys]
    again = [ds[k] for k in reversed(keys)][::-1]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(ds[(0, 1)][1], ds[(0, 2)][1])
    loader = torch.utils.data.DataLoader(ds, batch_sampler=[keys[:4], keys[4:]], num_workers=2)
    lr, hr = list(loader)[1]
    assert torch.equal(lr, torch.stack([x for x, _ in first[4:]])) and torch.equal(hr, torch.stack([y for _, y in first[4:]]))
    assert first[0][0].shape == (3, 16, 16) and first[0][1].shape == (3, 32, 32)


def test_unreadable_and_small_images_skipped(tmp_path):
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    Image.fromarray(rng.integers(0, 256, (20, 60, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnonsense")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = HROnlyDataset(tmp_path, 2, train=True, patch_size=16)
    messages = [str(w.message) for w in caught]
    assert ds.names == ["ok"]
    assert any("broken.png" in m for m in messages)
    assert any("small.png" in m for m in messages)
    lr, hr = ds[0]
    assert lr.shape == (3, 16, 16) and hr.shape == (3, 32, 32)
    with pytest.raises(IndexError):
        ds[1]


def test_no_usable_images_is_one_line_naming_the_folder(tmp_path):
    from lcoan.data.datasets import DatasetError
    from lcoan.errors import LcoanError
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError) as info:
        HROnlyDataset(empty, 2)
    text = str(info.value)
    assert text.startswith(f"{empty}: no usable images (none with the extensions .png") and "\n" not in text
    assert isinstance(info.value, LcoanError) and isinstance(info.value, RuntimeError)  # old except clauses

    (empty / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnonsense")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DatasetError, match=r"1 found, all skipped"):
            HROnlyDataset(empty, 2)

    for sub in ("HR", "LR_bicubic/X2"):
        (tmp_path / "paired" / sub).mkdir(parents=True)
    with pytest.raises(DatasetError) as info:
        PairedDataset(tmp_path / "paired", 2)
    assert str(info.value).startswith(f"{tmp_path / 'paired' / 'HR'}: no usable image pairs for x2")
