"""The ``onnxruntime`` backend: an exported ONNX graph on the best installed execution provider."""
from __future__ import annotations

from typing import Optional

import numpy as np

from lcoan.graph_io import load_onnx, read_io, read_metadata

from .base import Backend, BackendUnavailable

ORT_INSTALL = ("the onnxruntime backend needs ONNX Runtime: pip install onnxruntime "
               "(onnxruntime-gpu for the CUDA/TensorRT providers) onnx")


class OrtBackend(Backend):
    name = "onnxruntime"
    PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

    def __init__(self, path: str, device: Optional[str] = None, threads: Optional[int] = None):
        try:
            import onnx
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(ORT_INSTALL) from None
        self.pipe = None
        proto = load_onnx(path)  # damage (empty, truncated, not ONNX, missing data) is one line
        try:
            meta = read_metadata(proto, str(path))
        except ValueError as exc:
            raise BackendUnavailable(str(exc)) from None
        self.scale = meta.scale or 2
        self.precision = meta.dtype or "fp32"
        self.path = str(path)
        from export import ort_ops
        if ort_ops.has_plugin(proto):
            try:
                self.session = ort_ops.session(proto, threads=threads)
            except ImportError:
                raise BackendUnavailable("the plugin-form ONNX graph needs onnxruntime-extensions for its CPU "
                                         "LCoAClusterSort: pip install onnxruntime-extensions") from None
        else:
            available = ort.get_available_providers()
            if device == "cpu":
                providers = ["CPUExecutionProvider"]
            else:
                providers = [p for p in self.PROVIDERS if p in available] or ["CPUExecutionProvider"]
                if device and device.startswith("cuda") and not any(p != "CPUExecutionProvider" for p in providers):
                    raise BackendUnavailable("no CUDA execution provider in this ONNX Runtime: pip install onnxruntime-gpu")
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            if read_io(proto).integer:
                self.pipe = _cuda_pipe(providers, device)
            if self.pipe is not None:  # ORT launches on the pipe's compute stream, after its uploads
                providers = [("CUDAExecutionProvider", {"device_id": self.pipe.dev.index or 0,
                                                        "user_compute_stream": str(self.pipe.stream.cuda_stream)})
                             if p == "CUDAExecutionProvider" else p for p in providers]
            self.session = ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
        used = self.session.get_providers()[0]
        self.device = {"TensorrtExecutionProvider": "cuda (ORT TensorRT EP)",
                       "CUDAExecutionProvider": "cuda (ORT CUDA EP)"}.get(used, "cpu")
        self.provider = used
        self.input_name = self.session.get_inputs()[0].name
        self.io = _graph_io(proto, self.session)
        if self.io.mode == "i420":
            self.graph_colour = (self.io.colorspace, self.io.range)
        self.formats = {"rgb8": ("rgb24",), "i420": ("yuv420p",)}.get(self.io.mode, ())
        # On a GPU provider, IOBinding: ORT copies the uint8 inputs up and the outputs down itself,
        # without the float staging copies of run().
        self.binding = self.session.io_binding() if used != "CPUExecutionProvider" else None
        if self.pipe is not None and used != "CUDAExecutionProvider":
            self.pipe = None  # the overlapped path is for integer graphs on the CUDA provider
        if self.pipe is not None:
            from onnxruntime import RunOptions
            self.run_options = RunOptions()
            # return once the kernels are queued: the pipe's events order the download after them
            self.run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def _run(self, feeds: dict) -> list:
        if self.binding is None:
            return self.session.run(list(self.io.outputs), feeds)
        io = self.binding
        io.clear_binding_inputs()
        io.clear_binding_outputs()
        for name, array in feeds.items():
            io.bind_cpu_input(name, array)
        for name in self.io.outputs:
            io.bind_output(name, "cpu")
        self.session.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()

    def _device_step(self, x):
        """Device uint8 frames through the integer graph on the CUDA provider, inputs and outputs
        bound to device memory (IOBinding) on the pipe's compute stream: no host copy inside."""
        torch, s, dev = self.pipe.torch, self.scale, self.pipe.dev
        io = self.binding
        io.clear_binding_inputs()
        io.clear_binding_outputs()
        if self.io.mode == "rgb8":
            feeds = {self.io.inputs[0]: x}
        else:
            from lcoan.color import split_yuv420p
            feeds = dict(zip(self.io.inputs, (p.contiguous() for p in split_yuv420p(x))))
        outs = {}
        for name, t in feeds.items():
            io.bind_input(name, "cuda", dev.index or 0, np.uint8, tuple(t.shape), t.data_ptr())
        for name, t in zip(self.io.outputs, feeds.values()):  # each output is its input at s x H, W
            shape = (t.shape[0], t.shape[1] * s, t.shape[2] * s) + tuple(t.shape[3:])
            outs[name] = torch.empty(shape, dtype=torch.uint8, device=dev)
            io.bind_output(name, "cuda", dev.index or 0, np.uint8, shape, outs[name].data_ptr())
        self.session.run_with_iobinding(io, self.run_options)
        if self.io.mode == "rgb8":
            out = outs[self.io.outputs[0]]
        else:
            from ..frames import stack_i420
            out = stack_i420(*(outs[n] for n in self.io.outputs))
        return out, torch.ones(x.shape[0], dtype=torch.bool, device=dev)

    def submit(self, batch: np.ndarray, fmt: str, colour=None):
        """On the CUDA provider, an integer graph's frames in its own layout go through the
        overlapped pipe (pinned uploads and downloads on their own streams, app.backends.cuda_pipe);
        everything else runs to the end here."""
        if self.pipe is not None and fmt == self.formats[0]:
            return self.pipe.submit(np.ascontiguousarray(batch), self._device_step)
        return super().submit(batch, fmt, colour)

    def describe(self) -> dict:
        copies = ("overlapped: pinned uploads and downloads on their own CUDA streams, IOBinding on the device"
                  if self.pipe is not None else ("ORT's own (IOBinding)" if self.binding is not None else "none (CPU)"))
        return super().describe() | {"graph_io": self.io.mode, "copies": copies}

    def cancel(self) -> None:
        if self.pipe is not None:
            self.pipe.cancelled = True

    def run_u8(self, batch: np.ndarray, fmt: str, colour=None, infer=None):
        """The integer graph takes the frames as they are where its mode matches their layout
        (rgb8: rgb24 frames, i420: yuv420p planes): the conversions run in ORT's threads or on its
        device. Other pairs convert once on the host (lcoan.color) to the graph's layout; the
        float graph takes the host float path. An integer graph rounds and clamps inside, so its
        frames are never reported non-finite."""
        mode = self.io.mode
        if infer is not None or mode == "float":
            return super().run_u8(batch, fmt, colour, infer)
        if self.pipe is not None and fmt == self.formats[0]:
            return self.submit(batch, fmt, colour).result()
        from ..frames import Colour, rgb_u8, yuv_u8
        batch = np.ascontiguousarray(batch)
        if mode == "rgb8":
            x = batch if fmt == "rgb24" else rgb_u8(batch, colour)
            out = self._run({self.io.inputs[0]: x})[0]
            return (out if fmt == "rgb24" else yuv_u8(out, colour)), []
        graph = Colour(self.io.colorspace, self.io.range, tagged=True)
        x = batch if fmt == "yuv420p" else yuv_u8(batch, graph)
        from lcoan.color import split_yuv420p
        y, u, v = (np.ascontiguousarray(p) for p in split_yuv420p(x))
        ys, us, vs = self._run(dict(zip(self.io.inputs, (y, u, v))))
        n, h, w = ys.shape
        out = np.concatenate([ys, us.reshape(n, h // 4, w), vs.reshape(n, h // 4, w)], axis=1)
        return (out if fmt == "yuv420p" else rgb_u8(out, graph)), []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.io.mode == "rgb8":  # the float interface (tiles) on an rgb8 graph
            from ..frames import from_float, to_float
            u8, _ = from_float(batch, "rgb24")
            return to_float(self.run_u8(u8, "rgb24")[0], "rgb24")
        if self.io.mode == "i420":
            raise BackendUnavailable(f"{self.path}: an i420 graph takes whole frames; --tile needs a float or rgb8 graph")
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def _cuda_pipe(providers, device: Optional[str]):
    """The overlapped-copy pipe (app.backends.cuda_pipe) where ORT will run on CUDA and torch can
    drive the copies: torch built with CUDA and a GPU present; else None (ORT's own copies)."""
    if "CUDAExecutionProvider" not in providers:  # (a TensorRT EP that wins is checked after the session starts)
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    from .cuda_pipe import CudaPipe
    dev = torch.device(device if device and device.startswith("cuda:") else "cuda:0")
    return CudaPipe(torch, dev)


def _graph_io(proto, session):
    """The graph's I/O mode, names and colour (``lcoan.graph_io.read_io``); a graph without the
    metadata is read from its input's type (uint8 NHWC: rgb8; three uint8 inputs: i420)."""
    from types import SimpleNamespace
    try:
        from lcoan.graph_io import read_io
        io = read_io(proto)
        return SimpleNamespace(mode=io.mode, inputs=tuple(io.inputs), outputs=tuple(io.outputs),
                               colorspace=getattr(io, "colorspace", None), range=getattr(io, "range", None))
    except ImportError:
        pass
    ins, outs = session.get_inputs(), session.get_outputs()
    mode = "float" if "float" in ins[0].type else ("i420" if len(ins) == 3 else "rgb8")
    return SimpleNamespace(mode=mode, inputs=tuple(i.name for i in ins), outputs=tuple(o.name for o in outs),
                           colorspace="bt709", range="limited")
