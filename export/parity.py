"""``python -m export.parity``: the command users know for parity reports. The code lives in
``verify.parity`` (verification sits beside the stages and may import all of them); this file keeps the command's name.

Run as a program it runs ``verify.parity`` as ``__main__`` (runpy), the way ``python -m verify.parity``
would; imported, it imports nothing, so the ``export`` package never depends on a stage above it
(the import contracts in pyproject.toml hold without exceptions; tests/test_layering.py checks both).
See ``python -m export.parity --help``.
"""
if __name__ == "__main__":
    import runpy

    runpy.run_module("verify.parity", run_name="__main__", alter_sys=True)
