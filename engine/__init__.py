"""ONNX -> TensorRT engine: the one TensorRT import point (``engine.trt``), the one plugin loader
and the build (``engine.build``), the engine cache and sidecar (``engine.cache``), and the runtime
(``engine.runtime``); ``engine.errors.EngineError`` is the stage's one-line error. Imports
``export`` and ``lcoan`` only, never ``calib``, ``verify`` or ``pipeline``; ``python -m export.to_trt`` (``pipeline.to_trt``) is the command that builds.

    from engine.build import build_engine, make_profile
    from engine.runtime import Engine
"""
