"""Engine cache: an engine is reused only when everything it was built from matches.

Every engine ``lcoan.engine`` has a JSON sidecar ``lcoan.engine.json``. Its ``key`` holds:

* ``onnx_sha256``  - the exact graph bytes (weights, sort form and precision are in the graph);
* ``trt``          - TensorRT flavour and version (``tensorrt 10.3.0``, ``tensorrt_rtx 1.7.1.116``);
* ``device``       - GPU name and compute capability, or ``cpu-build`` (TensorRT-RTX without GPU);
* ``precision``    - ``fp32``, ``fp16`` or ``int8``;
* ``profile``      - min / opt / max input shapes;
* ``plugins_sha256`` - the plugin library's bytes (or null), ``builder`` - builder options.

A key match reuses the engine; any difference rebuilds it, naming what changed. Before an
engine is deserialised (:func:`check_loadable`) its sidecar must exist and be valid JSON, the
file's sha256 must match and its TensorRT must be the running one, so an engine from another
TensorRT version (or a hand-copied or truncated file) is never loaded blindly. The file checks
need no GPU and no TensorRT, and run first.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import EngineError

SIDECAR_SUFFIX = ".json"
SCHEMA = 1


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Profile:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    def label(self) -> str:
        return " / ".join("x".join(map(str, s)) for s in (self.min, self.opt, self.max))


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    trt: str                      # "<flavour> <version>"
    device: str                   # "<GPU name> (sm X.Y)" or "cpu-build"
    precision: str
    profile: dict
    plugins_sha256: str | None = None
    builder: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        return sha256_bytes(json.dumps(self.to_dict(), sort_keys=True).encode())[:16]

    @classmethod
    def from_dict(cls, data: dict) -> "EngineKey":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


def sidecar_problem(engine: str | Path) -> str | None:
    """Why the sidecar of ``engine`` cannot be used ("missing", or what is broken), or None."""
    path = sidecar_path(engine)
    if not path.is_file():
        return "missing"
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    except ValueError as exc:
        return f"broken: not valid JSON ({exc})"
    if not isinstance(data, dict) or not isinstance(data.get("key"), dict):
        return "broken: no 'key' object"
    return None


def read_sidecar(engine: str | Path) -> dict | None:
    """The sidecar as a dict, or None when it is missing or broken (see :func:`sidecar_problem`)."""
    if sidecar_problem(engine) is not None:
        return None
    return json.loads(sidecar_path(engine).read_text())


def write_sidecar(engine: str | Path, key: EngineKey, **info) -> Path:
    path = sidecar_path(engine)
    data = {"schema": SCHEMA, "engine": Path(engine).name, "key": key.to_dict(), "key_digest": key.digest()}
    data.update(info)
    from lcoan.safeio import atomic_write
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def differences(old: dict, new: dict) -> list[str]:
    """Human-readable ``field: old -> new`` for each differing key field."""
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a != b:
            def short(v):
                text = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
                return text[:12] if name.endswith("sha256") and isinstance(v, str) else text
            out.append(f"{name}: {short(a)} -> {short(b)}")
    return out


def lookup(engine: str | Path, key: EngineKey) -> tuple[bool, str]:
    """``(reuse, reason)``: whether ``engine`` was built from exactly ``key``."""
    engine = Path(engine)
    if not engine.is_file():
        return False, f"{engine} does not exist"
    problem = sidecar_problem(engine)
    if problem is not None:
        return False, f"{sidecar_path(engine)} is {problem}"
    side = read_sidecar(engine)
    diff = differences(side["key"], key.to_dict())
    if diff:
        return False, "key changed (" + "; ".join(diff) + ")"
    recorded = side.get("engine_sha256")
    if recorded and recorded != sha256_file(engine):
        return False, f"{engine} does not match the sha256 in its sidecar"
    return True, f"key {key.digest()} matches"


def check_engine_file(engine: str | Path) -> dict:
    """The checks that need neither TensorRT nor a GPU: the engine exists, its sidecar is present
    and valid JSON, and the engine bytes are the ones the sidecar records. Returns the sidecar;
    raises a one-line :class:`EngineError` naming the file otherwise."""
    engine = Path(engine)
    if not engine.is_file():
        raise EngineError(f"{engine}: no such engine file")
    problem = sidecar_problem(engine)
    if problem == "missing":
        raise EngineError(f"{engine}: no sidecar {sidecar_path(engine).name}; rebuild it with "
                          "`python -m export.to_trt` (engines are tied to one TensorRT version and GPU)")
    if problem is not None:
        raise EngineError(f"{engine}: its sidecar {sidecar_path(engine).name} is {problem}; rebuild it with "
                          "`python -m export.to_trt`")
    side = read_sidecar(engine)
    recorded = side.get("engine_sha256")
    if recorded and recorded != sha256_file(engine):
        size = engine.stat().st_size
        raise EngineError(f"{engine} does not match the sha256 in its sidecar (truncated or replaced? "
                          f"{size} bytes); rebuild it")
    return side


def check_built_for(engine: str | Path, side: dict, trt_label: str | None = None, device: str | None = None) -> None:
    """The sidecar's TensorRT (and GPU, when ``device`` is known) must be the running ones."""
    built = side["key"].get("trt")
    if trt_label is not None and built != trt_label:
        raise EngineError(f"{engine} was built with {built}, this is {trt_label}; rebuild it with "
                          "`python -m export.to_trt`")
    built_dev = side["key"].get("device")
    if device is not None and built_dev not in (device, "cpu-build"):
        raise EngineError(f"{engine} was built for {built_dev}, this GPU is {device}; rebuild it")


def check_loadable(engine: str | Path, trt_label: str | None, device: str | None = None) -> dict:
    """The sidecar of ``engine`` if it may be deserialised by ``trt_label`` on ``device``.

    Raises a one-line :class:`EngineError` otherwise (no sidecar or a broken one, engine bytes
    that are not the ones recorded, another TensorRT, another GPU), in that order: the file checks
    come first, so a wrong or truncated engine is diagnosed on any machine.
    """
    side = check_engine_file(engine)
    check_built_for(engine, side, trt_label, device)
    return side
