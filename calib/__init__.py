"""INT8 calibration: Q/DQ graphs for TensorRT from an FP32 LCoAN graph and LR images.

    python -m calib --onnx lcoan.onnx --images DIR --out lcoan_int8.onnx [--method minmax]

    from calib import quantize, calibration_tiles, evaluate
"""
from .quantize import (CalibrationError, DriftReport, QuantizeResult, calibration_tiles, evaluate,
                       quantize, sensitivity)

__all__ = ["CalibrationError", "DriftReport", "QuantizeResult", "calibration_tiles", "evaluate",
           "quantize", "sensitivity"]
