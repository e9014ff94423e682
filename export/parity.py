"""``python -m export.parity``: the command users know for parity reports. The code lives in
``verify.parity`` (verification sits beside the stages and may import all of them); this module
only keeps the command's name. See ``python -m export.parity --help``.
"""
from verify.parity import main

if __name__ == "__main__":
    from export.errors import run_cli
    run_cli(main)
