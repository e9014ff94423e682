"""The LCoAClusterSort spec (lcoan/opspec.py) against the C++ plugin, the exported node and the ORT
op; the graph interface (lcoan/graph_io.py) as the one metadata read/write."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from lcoan import graph_io, opspec

PLUGIN_DIR = REPO / "plugins" / "cluster_sort"


def _read(name: str) -> str:
    return (PLUGIN_DIR / name).read_text()


def _string_constants(text: str) -> dict[str, str]:
    return dict(re.findall(r'constexpr\s+char\s+const\s*\*\s*(\w+)\s*=\s*"([^"]*)"\s*;', text))


def _int_constant(text: str, name: str) -> int:
    found = re.findall(rf"(?:#define\s+{name}\s+|constexpr\s+int32_t\s+{name}\s*=\s*)(\d+)", text)
    assert len(found) == 1, f"{name}: {found}"
    return int(found[0])


_NP_OF_TRT = {"kINT32": np.int32, "kINT64": np.int64, "kFLOAT": np.float32, "kHALF": np.float16}


def test_cpp_constants_match_the_spec() -> None:
    header = _string_constants(_read("cluster_sort_plugin.h"))
    assert header == {"kCLUSTER_SORT_NAME": opspec.NAME, "kCLUSTER_SORT_VERSION": opspec.VERSION,
                      "kCLUSTER_SORT_NAMESPACE": opspec.NAMESPACE, "kNUM_CLUSTERS_FIELD": opspec.FIELD,
                      "kWORKSPACE_BYTES_FIELD": opspec.WORKSPACE_FIELD}
    assert _int_constant(_read("cluster_sort_kernel.cuh"), "LCOAN_CLUSTER_SORT_MAX_CLUSTERS") == opspec.MAX_CLUSTERS
    plugin = _read("cluster_sort_plugin.cpp")
    assert _int_constant(plugin, "kNB_INPUTS") == len(opspec.INPUTS)
    assert _int_constant(plugin, "kNB_OUTPUTS") == len(opspec.OUTPUTS)
    out_types = re.findall(r"outputTypes\[(\d+)\]\s*=\s*DataType::(\w+);", plugin)
    assert sorted(int(i) for i, _ in out_types) == list(range(len(opspec.OUTPUTS)))
    assert {_NP_OF_TRT[t] for _, t in out_types} == {opspec.IO_DTYPE}
    accepted = re.findall(r"inOut\[pos\]\.desc\.type\s*==\s*DataType::(\w+)", plugin)
    assert [_NP_OF_TRT[t] for t in accepted] == [opspec.IO_DTYPE]
    creator = _read("cluster_sort_creator.cpp")
    fields = re.findall(r"mPluginAttributes\.emplace_back\((\w+),\s*nullptr,\s*PluginFieldType::(\w+),\s*(\d+)\)",
                        creator)
    assert fields == [("kNUM_CLUSTERS_FIELD", "kINT32", "1")]
    # the creator's bounds check is the spec's range
    assert re.search(r"numClusters\s*<\s*1\s*\|\|\s*numClusters\s*>\s*LCOAN_CLUSTER_SORT_MAX_CLUSTERS", creator)
    assert opspec.MIN_CLUSTERS == 1


def test_constant_parser_sees_a_change(tmp_path: Path) -> None:
    """The regexes above must fail on a drifted header, not silently match nothing."""
    drifted = _read("cluster_sort_plugin.h").replace('kCLUSTER_SORT_VERSION = "1"', 'kCLUSTER_SORT_VERSION = "2"')
    assert _string_constants(drifted)["kCLUSTER_SORT_VERSION"] != opspec.VERSION
    kernel = _read("cluster_sort_kernel.cuh").replace("MAX_CLUSTERS 1024", "MAX_CLUSTERS 2048")
    assert _int_constant(kernel, "LCOAN_CLUSTER_SORT_MAX_CLUSTERS") != opspec.MAX_CLUSTERS


def test_onnx_attributes_and_limits() -> None:
    assert opspec.registry_key() == "lcoan::LCoAClusterSort/1"
    assert opspec.onnx_attributes(64) == {"plugin_version": "1", "plugin_namespace": "lcoan", "num_clusters": 64}
    for bad in (0, opspec.MAX_CLUSTERS + 1):
        with pytest.raises(ValueError, match=r"num_clusters must be an int in \[1, 1024\]"):
            opspec.onnx_attributes(bad)


def test_no_stage_repeats_the_identity() -> None:
    """The op's identity and the graph's I/O names are assigned in the spec modules only."""
    pattern = re.compile(r'^\s*[A-Z_, ]+=\s*(?:"LCoAClusterSort"|"lr",\s*"sr"|"lr"\s*$|"sr"\s*$)', re.M)
    offenders = []
    for pkg in ("lcoan", "export", "calib", "app", "plugins"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            if path.name in ("opspec.py", "graph_io.py") or "build" in path.relative_to(REPO).parts[1:2]:
                continue
            offenders += [f"{path.relative_to(REPO)}: {m.group(0).strip()}" for m in pattern.finditer(path.read_text())]
    assert not offenders, offenders


def test_spec_modules_import_without_torch() -> None:
    """The bottom of the stack loads on a machine with numpy only (gpu_check, Triton's Python backend)."""
    code = ("import sys; import lcoan.opspec, lcoan.graph_io; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'export', 'app', 'calib', 'onnx')]; "
            "print(bad)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_metadata_round_trip_and_errors() -> None:
    onnx = pytest.importorskip("onnx")
    proto = onnx.ModelProto()
    meta = graph_io.GraphMetadata(scale=2, sort="plugin", dtype="fp16", config={"n_feats": 16})
    graph_io.write_metadata(proto, meta)
    assert {p.key: p.value for p in proto.metadata_props} == {
        "lcoan_scale": "2", "lcoan_sort": "plugin", "lcoan_dtype": "fp16", "lcoan_config": '{"n_feats": 16}'}
    assert graph_io.read_metadata(proto) == meta
    assert graph_io.read_metadata(onnx.ModelProto()) == graph_io.GraphMetadata()  # a graph of another tool
    bad = onnx.ModelProto()
    bad.metadata_props.add(key="lcoan_scale", value="two")
    with pytest.raises(graph_io.MetadataError, match=r"^g.onnx: metadata lcoan_scale='two' is not readable$"):
        graph_io.read_metadata(bad, "g.onnx")
