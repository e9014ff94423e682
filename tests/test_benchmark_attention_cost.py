"""benchmarks/attention_cost.py: the three runtimes side by side, each row a real measurement."""
from __future__ import annotations

import json
import math

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
