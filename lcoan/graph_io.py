"""The exported graph's interface: its input/output names and the metadata it carries.

One home for both, at the bottom of the stack: the exporter writes them, calibration copies and
extends them, and the parity report, the engine runtime and the app backends read them. No
import of onnx: the functions take any ``ModelProto`` (they touch only ``metadata_props``).

    meta = read_metadata(onnx.load("lcoan_edge_x2_fp32.onnx"))
    meta.scale, meta.dtype, meta.sort      # 2, "fp32", "onnx"
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from .errors import LcoanError

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "GraphMetadata", "MetadataError", "read_metadata",
           "write_metadata", "SORTS", "DTYPES"]

#: float32 NCHW RGB in [0, 1] -> float32 NCHW SR image; dynamic batch, height and width.
INPUT_NAME, OUTPUT_NAME = "lr", "sr"
SORTS = ("onnx", "plugin")
DTYPES = ("fp32", "fp16", "int8")

# metadata_props key of each GraphMetadata field; JSON-valued fields hold objects.
_KEYS = {"scale": "lcoan_scale", "sort": "lcoan_sort", "dtype": "lcoan_dtype",
         "config": "lcoan_config", "calib": "lcoan_calib"}
_JSON = ("config", "calib")


class MetadataError(LcoanError, ValueError):
    """A metadata value that cannot be read; the message names the key."""


@dataclass(frozen=True)
class GraphMetadata:
    """What this project writes into an exported graph; ``None`` where a graph does not say
    (graphs exported by other tools carry none of it)."""
    scale: int | None = None        # upscaling factor of the network
    sort: str | None = None         # "onnx" (counting sort of standard ops) or "plugin"
    dtype: str | None = None        # "fp32", "fp16" or "int8" (Q/DQ)
    config: dict | None = None      # LCoANConfig.to_dict() of the exported model
    calib: dict | None = None       # how an INT8 graph was calibrated (calib.quantize)

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` key/value strings, for the fields that are set."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[_KEYS[f.name]] = json.dumps(value) if f.name in _JSON else str(value)
        return out


def read_metadata(proto, source: str = "graph") -> GraphMetadata:
    """The :class:`GraphMetadata` of ``proto``; ``source`` names the file in error messages."""
    props = {p.key: p.value for p in proto.metadata_props}
    values = {}
    for name, key in _KEYS.items():
        if key not in props:
            continue
        raw = props[key]
        try:
            if name == "scale":
                values[name] = int(raw)
            elif name in _JSON:
                values[name] = json.loads(raw)
            else:
                values[name] = raw
        except ValueError:
            raise MetadataError(f"{source}: metadata {key}={raw[:60]!r} is not readable") from None
    meta = GraphMetadata(**values)
    if meta.scale is not None and meta.scale < 1:
        raise MetadataError(f"{source}: metadata {_KEYS['scale']}={meta.scale} is not a scale")
    return meta


def write_metadata(proto, meta: GraphMetadata) -> None:
    """Replace ``proto``'s metadata by ``meta`` (keys of other tools are dropped, as on export)."""
    del proto.metadata_props[:]
    for key, value in meta.to_props().items():
        proto.metadata_props.add(key=key, value=value)
