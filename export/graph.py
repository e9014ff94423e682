"""Graph rewrites with onnx-graphsurgeon: the counting sort <-> one ``LCoAClusterSort`` node.

The exporter runs the sort inside a module registered as ``sort_fn`` on each LSP module, so
every node of a counting sort carries the name scope ``.../sort_fn/``. A sort subgraph is the
set of nodes of one such scope; it is checked structurally (an ``Equal`` against the constant
``arange(K)``, ``CumSum``, one ``ScatterElements``) before it is replaced.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from lcoan import opspec

from .errors import ExportError

SORT_SCOPE = "sort_fn/"
# The op's identity has one home, lcoan.opspec; these names stay for the callers that use them.
PLUGIN_OP, PLUGIN_DOMAIN = opspec.NAME, opspec.DOMAIN
# Ops that make up the counting sort and must not survive the plugin rewrite.
COUNTING_SORT_OPS = ("CumSum", "ScatterElements", "ReduceSum")


@dataclass
class SortSubgraph:
    scope: str
    nodes: list[gs.Node]
    ids: gs.Variable        # [B, N] cluster ids entering the sort
    perm: gs.Variable       # [B, N] sorted slot -> position (ScatterElements output)
    inverse: gs.Variable    # [B, N] position -> sorted slot
    num_clusters: int


def _scope_of(name: str) -> str | None:
    cut = name.find(SORT_SCOPE)
    return name[: cut + len(SORT_SCOPE)] if cut >= 0 else None


def _num_clusters(nodes: list[gs.Node], scope: str) -> int:
    for node in nodes:
        if node.op != "Equal":
            continue
        for inp in node.inputs:
            values = inp.values if isinstance(inp, gs.Constant) else None
            if values is None and inp.inputs and inp.inputs[0].op == "Constant":
                values = inp.inputs[0].attrs["value"].values
            if values is not None and values.ndim == 1 and np.array_equal(values, np.arange(values.size)):
                return int(values.size)
    raise ExportError(f"sort subgraph {scope!r} has no Equal against a constant arange(K)")


def find_sort_subgraphs(graph: gs.Graph) -> list[SortSubgraph]:
    """Every counting-sort subgraph of ``graph``, in graph order."""
    scopes: dict[str, list[gs.Node]] = {}
    for node in graph.nodes:
        scope = _scope_of(node.name or "")
        if scope is not None:
            scopes.setdefault(scope, []).append(node)
    found = []
    output_names = {t.name for t in graph.outputs}
    for scope, nodes in scopes.items():
        ops = Counter(n.op for n in nodes)
        if ops["ScatterElements"] != 1 or ops["CumSum"] < 2 or ops["Equal"] < 1:
            raise ExportError(f"scope {scope!r} does not look like a counting sort: {dict(ops)}")
        members = {id(n) for n in nodes}
        produced = {t.name for n in nodes for t in n.outputs}
        entering = {}
        for n in nodes:
            for t in n.inputs:
                if isinstance(t, gs.Variable) and t.name not in produced and not (
                        t.inputs and t.inputs[0].op == "Constant"):
                    entering[t.name] = t
        if len(entering) != 1:
            raise ExportError(f"sort subgraph {scope!r} has {len(entering)} inputs, expected 1: {sorted(entering)}")
        leaving = [t for n in nodes for t in n.outputs
                   if t.name in output_names or any(id(c) not in members for c in t.outputs)]
        scatter = next(n for n in nodes if n.op == "ScatterElements")
        perm = [t for t in leaving if t is scatter.outputs[0]]
        other = [t for t in leaving if t is not scatter.outputs[0]]
        if len(perm) != 1 or len(other) != 1:
            raise ExportError(f"sort subgraph {scope!r} has outputs {[t.name for t in leaving]}, "
                              "expected the permutation and its inverse")
        found.append(SortSubgraph(scope, nodes, next(iter(entering.values())), perm[0], other[0],
                                  _num_clusters(nodes, scope)))
    return found


def replace_counting_sort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace each counting-sort subgraph by one ``LCoAClusterSort`` node (int32 in and out)."""
    graph = gs.import_onnx(model)
    subgraphs = find_sort_subgraphs(graph)
    if not subgraphs:
        raise ExportError("no counting-sort subgraph found; export with sort='onnx' first")
    for sub in subgraphs:
        prefix = sub.scope.rstrip("/")
        try:
            attrs = opspec.onnx_attributes(sub.num_clusters)
        except ValueError as exc:  # the plugin's kernel limit: refuse here, not in TensorRT's parser
            raise ExportError(f"sort subgraph {sub.scope!r}: {exc}") from None
        ids32 = gs.Variable(f"{prefix}/ids_int32", dtype=np.int32, shape=sub.ids.shape)
        perm32 = gs.Variable(f"{prefix}/perm_int32", dtype=np.int32, shape=sub.ids.shape)
        inv32 = gs.Variable(f"{prefix}/inverse_int32", dtype=np.int32, shape=sub.ids.shape)
        for node in sub.nodes:  # detach the old subgraph; cleanup() removes it
            node.outputs.clear()
        graph.nodes.append(gs.Node("Cast", f"{prefix}/CastIds", attrs={"to": onnx.TensorProto.INT32},
                                   inputs=[sub.ids], outputs=[ids32]))
        graph.nodes.append(gs.Node(
            PLUGIN_OP, f"{prefix}/{PLUGIN_OP}", domain=PLUGIN_DOMAIN,
            attrs=attrs,
            inputs=[ids32], outputs=[perm32, inv32]))
        for src, dst, tag in ((perm32, sub.perm, "Perm"), (inv32, sub.inverse, "Inverse")):
            dst.dtype = np.int64
            graph.nodes.append(gs.Node("Cast", f"{prefix}/Cast{tag}", attrs={"to": onnx.TensorProto.INT64},
                                       inputs=[src], outputs=[dst]))
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph)
    _copy_model_fields(model, out)
    if not any(o.domain == PLUGIN_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, opspec.DOMAIN_OPSET))
    return out


def _copy_model_fields(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    dst.ir_version = src.ir_version
    dst.producer_name, dst.producer_version = src.producer_name, src.producer_version
    del dst.metadata_props[:]
    dst.metadata_props.extend(src.metadata_props)


# --------------------------------------------------------------------------- inspection
def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def orphan_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes none of whose outputs reach a consumer or a graph output."""
    used = {name for n in model.graph.node for name in n.input}
    used |= {o.name for o in model.graph.output}
    return [n.name or n.op_type for n in model.graph.node if not any(o in used for o in n.output if o)]


def cluster_id_tensors(model: onnx.ModelProto) -> list[str]:
    """Names of the cluster-assignment outputs (the ArgMax over centroid similarities)."""
    return [n.output[0] for n in model.graph.node if n.op_type == "ArgMax"]


def add_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the intermediate tensors ``names`` (for debugging)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    for name in names:
        if name not in present:
            out.graph.output.append(onnx.ValueInfoProto(name=name))
    return out
