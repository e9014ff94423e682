"""Regenerate samples/sample_clip.mp4: a 2 s, 12 fps pan across a Set14 image at LR size.

    python samples/make_sample_clip.py [--data DIR]

The clip is derived from Set14 `monarch` (HR downscaled x2 with the MATLAB-compatible bicubic),
so the app has a real-image input that ships with the repository.
"""
from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lcoan.data.imageio import read_image_levels
from lcoan.data.paths import default_data_root
from lcoan.data.resize import imresize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_root())
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("sample_clip.mp4"))
    args = parser.parse_args()
    hr = read_image_levels(args.data / "benchmark" / "Set14" / "HR" / "monarch.png").astype(np.uint8)
    lr = imresize(hr, scale=0.5)
    h, w, frames = 96, 128, 24
    if lr.shape[0] < h or lr.shape[1] < w:
        raise SystemExit(f"the LR image {lr.shape[1]}x{lr.shape[0]} is smaller than the {w}x{h} clip")
    with av.open(str(args.out), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(12))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "18"}
        for i in range(frames):
            y = round(i * (lr.shape[0] - h) / (frames - 1))
            x = round(i * (lr.shape[1] - w) / (frames - 1))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(lr[y:y + h, x:x + w]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {frames} frames {w}x{h})")


if __name__ == "__main__":
    main()
