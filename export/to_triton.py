"""``python -m export.to_triton``: the command users know for writing a Triton model repository. The code lives in
``pipeline.to_triton`` (it builds an engine and uses ``serve``); this file keeps the command's name.

Run as a program it runs ``pipeline.to_triton`` as ``__main__`` (runpy), the way ``python -m pipeline.to_triton``
would; imported, it imports nothing, so the ``export`` package never depends on a stage above it
(the import contracts in pyproject.toml hold without exceptions; tests/test_layering.py checks both).
See ``python -m export.to_triton --help``.
"""
if __name__ == "__main__":
    import runpy

    runpy.run_module("pipeline.to_triton", run_name="__main__", alter_sys=True)
