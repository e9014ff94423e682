"""Verification beside the stages: parity reports (PyTorch vs ONNX Runtime vs TensorRT), Polygraphy
comparisons and their one tolerance table (``verify.parity.THRESHOLDS``). It may import any stage;
no stage imports it.

    python -m export.parity --onnx lcoan_edge_x2_fp32.onnx            # verify.parity
    python -m export.parity --engine E.engine --onnx E.onnx            # verify.parity + verify.engine_vs_ort
"""
