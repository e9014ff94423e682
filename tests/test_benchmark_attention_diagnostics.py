"""benchmarks/attention_diagnostics.py: pattern statistics and inference-time ablations of trained weights."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import attention_diagnostics as diag
from conftest import shared_path


def test_one_image_of_the_bundled_realtime_weights(tmp_path) -> None:
    shared_path("data/benchmark/Set5/HR")
    out = tmp_path / "diag.json"
    assert diag.main(["--weights", "realtime_x2", "--sets", "Set5", "--limit", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["images"] == 1 and row["window"] == 32 and row["clusters"] == 64
    assert 1 <= row["clusters_used"] <= 64 and 0 < row["balance"] <= 1
    assert 0 <= row["same_cluster"] <= 1 and 0 <= row["local_mass"] <= 1 and 0 < row["weight_entropy"] <= 1
    assert row["key_distance"] >= 1
    assert row["d_knockout"] != 0 and row["d_shuffled"] != 0  # both change what the network computes
    assert row["psnr"] > 30


def test_shuffled_sort_keeps_the_clusters_and_breaks_raster_order() -> None:
    ids = torch.randint(0, 4, (1, 500), generator=torch.Generator().manual_seed(0))
    perm, inverse = diag.shuffled_sort()(ids, 4)
    assert torch.equal(ids[0, perm[0]], ids[0].sort().values)                      # grouped by cluster
    assert torch.equal(perm.gather(1, inverse), torch.arange(500)[None])
    stable = torch.sort(ids, dim=-1, stable=True).indices
    assert not torch.equal(perm, stable)


def test_a_model_without_lsp_is_refused_in_one_line() -> None:
    from lcoan import build_model
    with pytest.raises(SystemExit, match="no LSP producer"):
        diag.diagnose_set(build_model("tiny", attention="none").eval(), shared_path("data/benchmark/Set5"), 2, 1)
