"""``python -m export.to_trt``: the command users know for building an engine. The code lives in
``pipeline.to_trt`` (it chains export, calib and engine, so it sits above all three); this module
only keeps the command's name. See ``python -m export.to_trt --help``.
"""
from pipeline.to_trt import main

if __name__ == "__main__":
    from export.errors import run_cli
    run_cli(main)
