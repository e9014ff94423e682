"""The app as a client of a Triton Inference Server (KServe v2 gRPC protocol, ``tritonclient``).

    python -m app clip.mp4 -o clip_x2.mp4 --backend triton --url 127.0.0.1:8001 [--tile 64 --overlap 16]

Many cameras or processes share one server. Triton's dynamic batcher only batches requests of
equal shape, so every frame is cut into windows of one fixed size (``lcoan.tiling.tile_spans``:
``tile + 2 * overlap`` LR pixels, shifted inwards at the borders), each window goes out as its
own request, up to ``max_in_flight`` at a time, and the cores are stitched back. The windows and
the crop are exactly those of the pipeline's own tiling, so the output equals a local backend run
with the same ``--tile``/``--overlap``. Frames smaller than a window are sent whole.

A model exported with integer I/O (``export.to_onnx --io rgb8|i420``) gets the frames as they are:
uint8 RGB or the decoder's I420 planes, one whole frame per request (every frame of a video has
the same shape, so the batcher still batches), with the conversions inside the graph.

The URL is ``HOST:PORT`` (gRPC) with an optional ``/MODEL`` (default ``lcoan``).
"""
from __future__ import annotations

import queue
from typing import Optional

import numpy as np

from lcoan.errors import one_line

from .base import Backend, BackendUnavailable

DEFAULT_MODEL = "lcoan"
DEFAULT_TILE = 64
SERVE_INSTALL = "the triton backend needs tritonclient: pip install 'lcoan-edge[serve]'"


def parse_url(url: Optional[str]) -> tuple[str, str]:
    if not url:
        raise BackendUnavailable("the triton backend needs --url HOST:PORT (the server's gRPC port, e.g. 127.0.0.1:8001)")
    text = url.split("://", 1)[1] if "://" in url else url
    address, _, model = text.partition("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise BackendUnavailable(f"--url {url!r}: expected HOST:PORT[/MODEL], e.g. 127.0.0.1:8001")
    return address, model.strip("/") or DEFAULT_MODEL


class TritonBackend(Backend):
    name = "triton"
    tiles_itself = True   # the pipeline must not tile again: windows are cut here, sent concurrently

    def __init__(self, url: str, tile: Optional[int] = None, overlap: int = 16, max_in_flight: int = 8,
                 timeout_s: float = 120.0):
        try:
            import tritonclient.grpc as grpcclient
            from tritonclient.utils import InferenceServerException
        except ImportError:
            raise BackendUnavailable(SERVE_INSTALL) from None
        self.grpc, self.error_type = grpcclient, InferenceServerException
        self.url, self.model = parse_url(url)
        self.tile = int(tile or DEFAULT_TILE)
        self.overlap = int(overlap)
        self.max_in_flight = max(1, int(max_in_flight))
        self.timeout_s = float(timeout_s)
        if self.tile < 1 or self.overlap < 0:
            raise BackendUnavailable("--tile must be positive and --overlap >= 0")
        where = f"Triton server at {self.url}"
        try:
            self.client = grpcclient.InferenceServerClient(self.url)
            if not self.client.is_server_live(client_timeout=10):
                raise BackendUnavailable(f"{where} is not live")
            if not self.client.is_model_ready(self.model, client_timeout=10):
                raise BackendUnavailable(f"{where} has no ready model {self.model!r}")
            meta = self.client.get_model_metadata(self.model, client_timeout=10)
            config = self.client.get_model_config(self.model, client_timeout=10).config
        except InferenceServerException as exc:
            raise BackendUnavailable(f"{where}: {one_line(exc)}") from None
        names = tuple(i.name for i in meta.inputs)
        self.mode = "i420" if names == ("y", "u", "v") else ("rgb8" if meta.inputs[0].datatype == "UINT8" else "float")
        if self.mode != "i420" and (len(meta.inputs) != 1 or len(meta.outputs) != 1):
            raise BackendUnavailable(f"model {self.model!r} at {self.url} has {len(meta.inputs)} inputs and "
                                     f"{len(meta.outputs)} outputs; LCoAN has one of each, or y, u, v -> y_sr, u_sr, v_sr")
        self.input_name, self.input_type = meta.inputs[0].name, meta.inputs[0].datatype
        self.output_name = meta.outputs[0].name
        self.output_names = tuple(o.name for o in meta.outputs)
        if self.mode != "float":
            # integer graphs take whole frames, one request each (equal shapes: the batcher batches them)
            self.tiles_itself = False
            self.formats = ("rgb24",) if self.mode == "rgb8" else ("yuv420p",)
            params = {k: v.string_value for k, v in config.parameters.items()}
            if self.mode == "i420":
                self.graph_colour = (params.get("lcoan_colorspace", "bt709"), params.get("lcoan_range", "limited"))
        self.precision = config.platform or config.backend or "unknown"
        self.device = f"triton {self.url}"
        self.scale = self._probe_scale()

    def describe(self) -> dict:
        return super().describe() | {"url": self.url, "model": self.model, "tile": self.tile, "overlap": self.overlap}

    def _request(self, window: np.ndarray):
        dtype = np.float16 if self.input_type == "FP16" else np.float32
        x = self.grpc.InferInput(self.input_name, list(window.shape), self.input_type)
        x.set_data_from_numpy(np.ascontiguousarray(window, dtype=dtype))
        return [x], [self.grpc.InferRequestedOutput(self.output_name)]

    def _int_request(self, frame: np.ndarray):
        """Inputs and outputs of one whole uint8 frame (rgb8: (1, H, W, 3); i420: stacked planes)."""
        if self.mode == "rgb8":
            arrays = {self.input_name: frame[None]}
        else:
            from lcoan.color import split_yuv420p
            arrays = dict(zip(("y", "u", "v"), (np.ascontiguousarray(p[None]) for p in split_yuv420p(frame))))
        inputs = []
        for name, a in arrays.items():
            x = self.grpc.InferInput(name, list(a.shape), "UINT8")
            x.set_data_from_numpy(np.ascontiguousarray(a))
            inputs.append(x)
        return inputs, [self.grpc.InferRequestedOutput(n) for n in self.output_names]

    def _int_result(self, result) -> np.ndarray:
        if self.mode == "rgb8":
            return result.as_numpy(self.output_name)[0]
        y, u, v = (result.as_numpy(n)[0] for n in ("y_sr", "u_sr", "v_sr"))
        h, w = y.shape
        return np.concatenate([y, u.reshape(h // 4, w), v.reshape(h // 4, w)])  # the yuv420p layout (app.frames)

    def run_u8(self, batch: np.ndarray, fmt: str, colour=None, infer=None):
        """Integer graphs: every frame of the batch whole, as uint8, all requests in flight at once
        (a frame in the other layout is converted once on the host); the float graph: windows."""
        if self.mode == "float" or infer is not None:
            return super().run_u8(batch, fmt, colour, infer)
        from ..frames import Colour, rgb_u8, yuv_u8
        want = self.formats[0]
        graph = Colour(*self.graph_colour, tagged=True) if self.mode == "i420" else None
        x = batch if fmt == want else (yuv_u8(batch, graph) if want == "yuv420p" else rgb_u8(batch, colour))
        done: "queue.Queue[tuple[int, object, object]]" = queue.Queue()
        outs: list = [None] * len(x)
        for k, frame in enumerate(x):
            inputs, outputs = self._int_request(frame)
            self.client.async_infer(self.model, inputs, callback=lambda result, error, k=k: done.put((k, result, error)),
                                    outputs=outputs, client_timeout=self.timeout_s)
        for _ in range(len(x)):
            try:
                k, result, error = done.get(timeout=self.timeout_s + 5)
            except queue.Empty:
                raise RuntimeError(f"Triton server at {self.url}: no answer within {self.timeout_s:.0f} s") from None
            if error is not None:
                raise RuntimeError(f"Triton server at {self.url}: {one_line(error)}")
            outs[k] = self._int_result(result)
        out = np.stack(outs)
        if fmt != want:
            out = rgb_u8(out, graph) if want == "yuv420p" else yuv_u8(out, colour)
        return out, []

    def _probe_scale(self) -> int:
        """Upscaling factor from one small request (the model's config does not carry it)."""
        if self.mode != "float":
            probe = np.zeros((16, 16, 3) if self.mode == "rgb8" else (24, 16), np.uint8)
            inputs, outputs = self._int_request(probe)
            try:
                y = self.client.infer(self.model, inputs, outputs=outputs, client_timeout=self.timeout_s)
            except self.error_type as exc:
                raise BackendUnavailable(f"Triton server at {self.url}: probe request failed: {one_line(exc)}") from None
            shape = y.as_numpy(self.output_name).shape  # (1, 16s, 16s[, 3])
            if shape[1] % 16 or shape[1] // 16 not in (2, 3, 4):
                raise BackendUnavailable(f"model {self.model!r} at {self.url} maps a 16x16 frame to {shape}, "
                                         "not an x2/x3/x4 upscale")
            return shape[1] // 16
        inputs, outputs = self._request(np.zeros((1, 3, 16, 16), np.float32))
        try:
            y = self.client.infer(self.model, inputs, outputs=outputs, client_timeout=self.timeout_s)
        except self.error_type as exc:
            raise BackendUnavailable(f"Triton server at {self.url}: probe request failed: {one_line(exc)}") from None
        shape = y.as_numpy(self.output_name).shape
        if len(shape) != 4 or shape[2] % 16 or shape[2] // 16 not in (2, 3, 4):
            raise BackendUnavailable(f"model {self.model!r} at {self.url} maps 1x3x16x16 to {shape}, not an x2/x3/x4 upscale")
        return shape[2] // 16

    def _windows(self, n: int, h: int, w: int):
        from lcoan.tiling import tile_spans
        if self.tile >= h and self.tile >= w:  # as the pipeline's tiling: small frames go whole
            ys, xs = [(0, h, 0, h)], [(0, w, 0, w)]
        else:
            ys, xs = tile_spans(h, self.tile, self.overlap), tile_spans(w, self.tile, self.overlap)
        return [(i, y, x) for i in range(n) for y in ys for x in xs]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        n, c, h, w = batch.shape
        s = self.scale
        out = np.empty((n, c, h * s, w * s), np.float32)
        jobs = self._windows(n, h, w)
        done: "queue.Queue[tuple[int, object, object]]" = queue.Queue()
        next_job = in_flight = 0
        errors: list[str] = []

        def submit(k: int) -> None:
            i, (_, _, wy0, wy1), (_, _, wx0, wx1) = jobs[k]
            inputs, outputs = self._request(batch[i:i + 1, :, wy0:wy1, wx0:wx1])
            self.client.async_infer(self.model, inputs, callback=lambda result, error, k=k: done.put((k, result, error)),
                                    outputs=outputs, client_timeout=self.timeout_s)

        while next_job < len(jobs) or in_flight:
            while next_job < len(jobs) and in_flight < self.max_in_flight and not errors:
                submit(next_job)
                next_job, in_flight = next_job + 1, in_flight + 1
            if not in_flight:
                break
            try:
                k, result, error = done.get(timeout=self.timeout_s + 5)
            except queue.Empty:
                raise RuntimeError(f"Triton server at {self.url}: no answer within {self.timeout_s:.0f} s") from None
            in_flight -= 1
            if error is not None:
                errors.append(one_line(error))
                continue
            i, (ys, ye, wy0, wy1), (xs, xe, wx0, wx1) = jobs[k]
            y = result.as_numpy(self.output_name)
            if y.shape != (1, c, (wy1 - wy0) * s, (wx1 - wx0) * s):
                errors.append(f"output {y.shape} for a {wy1 - wy0}x{wx1 - wx0} window is not x{s}")
                continue
            out[i, :, ys * s:ye * s, xs * s:xe * s] = y[0, :, (ys - wy0) * s:(ye - wy0) * s,
                                                       (xs - wx0) * s:(xe - wx0) * s]
        if errors:
            raise RuntimeError(f"Triton server at {self.url}: {errors[0]}")
        return out

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a dead channel must not mask the run's result
            pass
