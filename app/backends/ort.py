"""The ``onnxruntime`` backend: an exported ONNX graph on the best installed execution provider."""
from __future__ import annotations

from typing import Optional

import numpy as np

from lcoan.graph_io import load_onnx, read_metadata

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

    def run_u8(self, batch: np.ndarray, fmt: str, colour=None, infer=None):
        """The integer graph takes the frames as they are where its mode matches their layout
        (rgb8: rgb24 frames, i420: yuv420p planes): the conversions run in ORT's threads or on its
        device. Other pairs convert once on the host (lcoan.color) to the graph's layout; the
        float graph takes the host float path. An integer graph rounds and clamps inside, so its
        frames are never reported non-finite."""
        mode = self.io.mode
        if infer is not None or mode == "float":
            return super().run_u8(batch, fmt, colour, infer)
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
