"""Regenerate docs/crop_x2.png: bicubic | realtime_x2 | edge_x2 | HR on one crop of Urban100.

    python samples/make_crop.py [--data DIR] [--image img_062.png] [--out docs/crop_x2.png]

The HR image is downscaled x2 with the MATLAB-compatible bicubic, a 96x96 LR crop is upscaled
by bicubic and by both bundled weights (each run on the crop alone, on the CPU), and the four
192x192 panels are written side by side with a caption strip. Y-PSNR of each panel against the
HR crop (shave 2) is printed and written into the captions, so the picture says what it shows.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import lcoan
from lcoan.data.imageio import read_image_levels
from lcoan.data.paths import default_data_root
from lcoan.data.resize import imresize
from lcoan.metrics import psnr_y

CROP = 96  # LR pixels: 192x192 panels keep four of them under 800 px wide and the PNG small


def upscale(name: str, lr: np.ndarray) -> np.ndarray:
    model = lcoan.load_model(name)
    x = torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        sr = model(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    return np.round(sr * 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_root())
    parser.add_argument("--image", default="img_062.png", help="an Urban100 HR file name")
    parser.add_argument("--at", type=int, nargs=2, default=None, metavar=("Y", "X"),
                        help="top-left corner of the LR crop (default: the centre)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "crop_x2.png")
    args = parser.parse_args()
    hr_full = read_image_levels(args.data / "benchmark" / "Urban100" / "HR" / args.image).astype(np.uint8)
    hr_full = hr_full[:hr_full.shape[0] // 2 * 2, :hr_full.shape[1] // 2 * 2]
    lr_full = imresize(hr_full, scale=0.5)
    y, x = args.at or ((lr_full.shape[0] - CROP) // 2, (lr_full.shape[1] - CROP) // 2)
    lr = np.ascontiguousarray(lr_full[y:y + CROP, x:x + CROP])
    hr = hr_full[2 * y:2 * (y + CROP), 2 * x:2 * (x + CROP)]
    panels = [("bicubic", np.asarray(imresize(lr, scale=2)).astype(np.uint8)),
              ("realtime_x2", upscale("realtime_x2", lr)),
              ("edge_x2", upscale("edge_x2", lr)),
              ("HR", hr)]
    gap = np.full((2 * CROP, 4, 3), 255, np.uint8)
    row = np.concatenate([p for _, img in panels for p in (img, gap)][:-1], axis=1)
    strip = Image.new("RGB", (row.shape[1], 14), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for i, (name, img) in enumerate(panels):
        caption = name if name == "HR" else f"{name} {psnr_y(img / 255.0, hr / 255.0, shave=2):.2f} dB"
        print(caption)
        draw.text((i * (2 * CROP + 4) + 3, 1), caption, fill=(255, 255, 255))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([np.asarray(strip), row], axis=0)).save(args.out, optimize=True)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB): {args.image}, LR crop at y={y} x={x}")


if __name__ == "__main__":
    main()
