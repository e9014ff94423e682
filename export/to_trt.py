"""``python -m export.to_trt``: the command users know for building an engine. The code lives in
``pipeline.to_trt`` (it chains export, calib and engine, so it sits above all three); this file keeps the command's name.

Run as a program it runs ``pipeline.to_trt`` as ``__main__`` (runpy), the way ``python -m pipeline.to_trt``
would; imported, it imports nothing, so the ``export`` package never depends on a stage above it
(the import contracts in pyproject.toml hold without exceptions; tests/test_layering.py checks both).
See ``python -m export.to_trt --help``.
"""
if __name__ == "__main__":
    import runpy

    runpy.run_module("pipeline.to_trt", run_name="__main__", alter_sys=True)
