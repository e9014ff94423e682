"""ONNX export of LCoAN, FP16 conversion, the ONNX Runtime form of the sort plugin, and parity
reports (PyTorch vs ONNX Runtime).

    from export import export_onnx
    export_onnx(model, "lcoan.onnx", sort="onnx", dtype="fp32")
"""
from .errors import ExportError

__all__ = ["ExportError", "export_onnx", "build_onnx"]


def __getattr__(name):  # lazy: importing ``export`` must not import torch.onnx
    if name in ("export_onnx", "build_onnx"):
        from . import to_onnx
        return getattr(to_onnx, name)
    raise AttributeError(name)
