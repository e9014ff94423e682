"""ONNX only: export of LCoAN (``to_onnx``), graph surgery (``graph``), FP16 conversion
(``precision``), the ONNX Runtime form of the sort op (``ort_ops``) and the LR/HR images graphs
are checked on (``samples``). TensorRT is ``engine``'s, parity reports ``verify``'s; the modules
``to_trt``, ``to_triton`` and ``parity`` here only keep the commands' names.

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
