"""``python -m export.to_triton``: the command users know for writing a Triton model repository. The
code lives in ``pipeline.to_triton`` (it builds an engine and uses ``serve``); this module only
keeps the command's name. See ``python -m export.to_triton --help``.
"""
from pipeline.to_triton import main

if __name__ == "__main__":
    from export.errors import run_cli
    run_cli(main)
