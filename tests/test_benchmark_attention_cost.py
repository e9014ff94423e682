"""benchmarks/attention_cost.py: the three runtimes side by side, each row a real measurement."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import REPO

from benchmarks import attention_cost


def test_rows_for_pytorch_nchw_nhwc_and_ort(tmp_path) -> None:
    out = tmp_path / "cost.json"
    assert attention_cost.main(["--cases", "tiny:32x48", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["runtime"] for r in report["rows"]] == ["PyTorch", "PyTorch NHWC", "ORT"]
    for row in report["rows"]:
        assert row["lcoa_ms"] > 0 and row["none_ms"] > 0 and math.isfinite(row["excess"])
        assert math.isclose(row["excess"], row["lcoa_ms"] / row["none_ms"] - 1)
        assert 0 < row["flop_share"] < 1
    assert {s["runtime"] for s in report["stages"]} == {"PyTorch", "ORT"}


@pytest.mark.parametrize("flag, expected", [([], "glibc, freed memory retained"),
                                            (["--system-allocator"], "system default")])
def test_script_restarts_with_freed_memory_retained_unless_told_not_to(tmp_path, flag, expected) -> None:
    out = tmp_path / "cost.json"
    env = {k: v for k, v in os.environ.items() if k not in attention_cost.RETAIN_FREED_MEMORY}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.attention_cost", "--cases", "tiny:24x32",
                           "--repeats", "1", "--no-ort", "--json", str(out), *flag],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(out.read_text())["allocator"] == expected
    assert f"allocator: {expected}" in proc.stdout


def test_ab_native_rows_time_the_same_model_on_pytorch_ops(tmp_path) -> None:
    out = tmp_path / "cost.json"
    before = os.environ.get("LCOAN_NATIVE")
    assert attention_cost.main(["--cases", "tiny:32x48", "--repeats", "1", "--no-ort", "--ab-native",
                                "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["runtime"] for r in rows] == ["PyTorch", "PyTorch, PyTorch ops only",
                                            "PyTorch NHWC", "PyTorch NHWC, PyTorch ops only"]
    assert rows[0]["none_ms"] == rows[1]["none_ms"] and rows[0]["lcoa_ms"] != rows[1]["lcoa_ms"]
    assert os.environ.get("LCOAN_NATIVE") == before, "the A/B left the switch as it found it"
