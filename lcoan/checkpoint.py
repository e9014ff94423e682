"""Weights in and out: this project's checkpoints, release ``.safetensors``, and state dicts
saved by the public LCoAN code (keys as in ``official_lcoan_x2_state_dict_keys.tsv``).

Nothing here unpickles arbitrary objects: ``torch.load(weights_only=True)`` only.
"""
from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from .model.network import LCoAN, LCoANConfig
from .safeio import atomic_write  # noqa: F401  (re-exported: the project's one atomic writer)
from .errors import LcoanError

FORMAT = "lcoan"


class CheckpointError(LcoanError, ValueError):
    """A weights file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


# --------------------------------------------------------------------------- finiteness
def first_non_finite(state: dict, prefix: str = "") -> tuple[str, int, int] | None:
    """``(key, bad values, total values)`` of the first floating tensor with NaN/Inf, else None.

    Nested dicts (an EMA model's state, optimizer groups) are searched with dotted keys.
    """
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, Tensor):
            if value.is_floating_point() or value.is_complex():
                bad = int((~torch.isfinite(value)).sum())
                if bad:
                    return name, bad, value.numel()
        elif isinstance(value, dict):
            found = first_non_finite(value, name + ".")
            if found:
                return found
    return None


def check_finite(state: dict, path: str | os.PathLike) -> None:
    """Refuse weights with NaN or Inf in one line naming the file and the first bad tensor."""
    found = first_non_finite(state)
    if found:
        key, bad, total = found
        raise CheckpointError(path, f"tensor {key!r} has {bad} non-finite value(s) (NaN/Inf) of {total}; "
                                    "these weights are broken (a diverged run?)")


# --------------------------------------------------------------------------- public-code keys
# (our key, the public code's key); {g} group, {b} block, {i} layer index, {p} weight or bias.
_KEY_PAIRS = [
    ("head.{p}", "head.0.{p}"),
    ("groups.{g}.blocks.{b}.conv1.{p}", "body.{g}.local_body.{b}.body.0.{p}"),
    ("groups.{g}.blocks.{b}.conv2.{p}", "body.{g}.local_body.{b}.body.2.{p}"),
    ("groups.{g}.attention.match_conv.{p}", "body.{g}.attention.0.conv_match.0.{p}"),
    ("groups.{g}.attention.assembly_conv.{p}", "body.{g}.attention.0.conv_assembly.0.{p}"),
    ("groups.{g}.attention.kmeans.centroids", "body.{g}.attention.0.kmeans.means"),
    ("groups.{g}.attention.kmeans.initialized", "body.{g}.attention.0.kmeans.initted"),
    ("groups.{g}.conv.{p}", "body.{g}.m_conv.0.{p}"),
    ("body_conv.{p}", "m_conv.0.{p}"),
    ("upsampler.{i}.{p}", "tail.0.{i}.{p}"),
    ("tail_conv.{p}", "tail.1.{p}"),
]
_FIELDS = {"g": r"\d+", "b": r"\d+", "i": r"\d+", "p": "weight|bias"}


def _pattern(template: str) -> re.Pattern:
    regex = re.escape(template)
    for name, body in _FIELDS.items():
        regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>{body})")
    return re.compile(regex)


_OURS_TO_OFFICIAL = [(_pattern(ours), official) for ours, official in _KEY_PAIRS]
_OFFICIAL_TO_OURS = [(_pattern(official), ours) for ours, official in _KEY_PAIRS]


def _rename(key: str, table) -> str | None:
    for pattern, template in table:
        match = pattern.fullmatch(key)
        if match:
            return template.format(**match.groupdict())
    return None


def is_official_state_dict(state: dict) -> bool:
    return "head.0.weight" in state and any(k.startswith("body.0.local_body.") for k in state)


def to_official_state_dict(model: LCoAN) -> dict[str, Tensor]:
    """Our weights under the public code's key names and shapes (unused public tensors omitted)."""
    out = {}
    for key, value in model.state_dict().items():
        new_key = _rename(key, _OURS_TO_OFFICIAL)
        if new_key is not None:
            out[new_key] = value.unsqueeze(0) if new_key.endswith("kmeans.means") else value
    return out


def infer_official_config(state: dict, path: str | os.PathLike = "<state dict>") -> dict:
    """Hyper-parameters from tensor shapes. The window size is not stored and stays a default."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(path, f"public-code state dict lacks {key!r}")
        return tuple(state[key].shape)

    n_feats = shape("head.0.weight")[0]
    group_ids = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.m_conv\.0\.weight$", k))}
    block_ids = {int(m.group(1)) for k in state if (m := re.match(r"body\.0\.local_body\.(\d+)\.body\.0\.weight$", k))}
    up_convs = sorted(int(m.group(1)) for k in state if (m := re.match(r"tail\.0\.(\d+)\.weight$", k)))
    if not group_ids or not block_ids or not up_convs:
        raise CheckpointError(path, "cannot infer groups/blocks/upsampler from the keys")
    first_up = shape(f"tail.0.{up_convs[0]}.weight")[0]
    if first_up == 9 * n_feats:
        scale = 3
    elif first_up == 4 * n_feats and len(up_convs) in (1, 2):
        scale = 2 ** len(up_convs)
    else:
        raise CheckpointError(path, f"upsampler shape {first_up}x{n_feats} matches no scale of 2, 3, 4")
    return dict(
        scale=scale, n_feats=n_feats, n_groups=max(group_ids) + 1, n_blocks=max(block_ids) + 1,
        n_clusters=shape("body.0.attention.0.kmeans.means")[1],
        match_dim=shape("body.0.attention.0.conv_match.0.weight")[0],
        attention="lcoa", window_size=384,
    )


def from_official_state_dict(state: dict) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        new_key = _rename(key, _OFFICIAL_TO_OURS)
        if new_key is not None:  # unused public tensors (mean shift, `a`) have no counterpart
            out[new_key] = value.squeeze(0) if new_key.endswith("kmeans.centroids") else value
    return out


# --------------------------------------------------------------------------- reading
def _load_error_reason(exc: BaseException) -> str:
    """The informative part of a ``torch.load`` failure.

    A refused pickle's message starts with a paragraph of advice about ``weights_only=False``;
    the actual reason (the forbidden global) comes later, and that is what the user needs.
    """
    text = str(exc)
    found = re.search(r"GLOBAL\s+([\w.]+)", text)
    if found:
        return f"refused to unpickle: it loads the forbidden global {found.group(1)}; only tensors are accepted"
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n|$)", text)
    if match:
        return f"refused to unpickle: {match.group(1).strip()[:200]}"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0].split(". ")[0].rstrip(".")  # later sentences are generic advice
    if "zip archive" in first or "central directory" in first:
        first += "; the file is truncated or damaged"
    return first[:200]


def _check_zip(path: Path) -> None:
    """A damaged torch zip is refused here, in Python, before torch's C++ reader sees it: that
    reader reports it by throwing a C++ exception, and once some native libraries are loaded in
    the process (the app's video and GStreamer stack) such an exception can abort the process
    instead of arriving as a RuntimeError."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"PK":
            return  # a legacy pickle: read by Python's unpickler, not the zip reader
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(path, f"not a readable weights file ({' '.join(str(exc).split())}; "
                                    "the file is truncated or damaged)") from None
    if bad is not None:
        raise CheckpointError(path, f"not a readable weights file (member {bad} fails its CRC check; "
                                    "the file is damaged)")


def _torch_load(path: Path) -> dict:
    _check_zip(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with forbidden globals, not a torch file
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head[:2] != b"PK" and head[:1] != b"\x80":  # neither torch's zip format nor a pickle
            raise CheckpointError(path, "not a PyTorch weights file (neither a zip archive nor a pickle)") from None
        raise CheckpointError(path, f"not a readable weights file ({_load_error_reason(exc)})") from None


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, Tensor], dict]:
    """-> (config dict, our-format state dict, the raw container for training extras)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                state = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(path, f"not a readable safetensors file ({' '.join(str(exc).split())})") from None
        if meta.get("format") != FORMAT or "config" not in meta:
            raise CheckpointError(path, "safetensors file has no LCoAN config in its metadata")
        check_finite(state, path)
        try:
            config = json.loads(meta["config"])
        except ValueError as exc:
            raise CheckpointError(path, f"broken config JSON in the metadata ({exc})") from None
        return config, state, {}
    raw = _torch_load(path)
    if not isinstance(raw, dict):
        raise CheckpointError(path, f"expected a dict of tensors, found {type(raw).__name__}")
    if raw.get("format") == FORMAT:
        if not isinstance(raw.get("model"), dict) or not isinstance(raw.get("config"), dict):
            raise CheckpointError(path, "LCoAN checkpoint without 'model' and 'config' entries")
        check_finite(raw["model"], path)
        if isinstance(raw.get("ema_model"), dict):
            check_finite(raw["ema_model"], f"{path} (ema_model)")
        return dict(raw["config"]), raw["model"], raw
    if is_official_state_dict(raw):
        check_finite(raw, path)
        return infer_official_config(raw, path), from_official_state_dict(raw), {}
    raise CheckpointError(path, "neither an LCoAN checkpoint nor a public-code LCoAN state dict")


def load_into(model: LCoAN, state: dict[str, Tensor], path: str | os.PathLike) -> None:
    """Strict, shape-checked load whose errors name the key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise CheckpointError(path, f"missing key {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for key, target in own.items():
        if tuple(state[key].shape) != tuple(target.shape):
            raise CheckpointError(path, f"key {key!r} has shape {tuple(state[key].shape)}, "
                                        f"the model expects {tuple(target.shape)}")
    model.load_state_dict({k: state[k] for k in own}, strict=True)


def build_from_checkpoint(path: str | os.PathLike, **overrides) -> tuple[LCoAN, dict]:
    config, state, raw = read_checkpoint(path)
    fields = set(LCoANConfig.__dataclass_fields__)
    config = {k: v for k, v in config.items() if k in fields}
    if "scale" in overrides and overrides["scale"] is not None and overrides["scale"] != config.get("scale"):
        raise CheckpointError(path, f"weights are for x{config.get('scale')}, not x{overrides['scale']}")
    config.update({k: v for k, v in overrides.items() if v is not None})
    model = LCoAN(LCoANConfig(**config))
    load_into(model, state, path)
    # weights saved in the training form of reparameterised convs load as the one conv each
    # (model/reparam.py): everything downstream sees the preset's plain network
    return model.collapse_reparam(), raw


# --------------------------------------------------------------------------- writing
def save_safetensors(model: LCoAN, path: str | os.PathLike, extra_metadata: dict | None = None) -> None:
    """Release weights: tensors plus the config in the metadata, written atomically."""
    from safetensors.torch import save
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    check_finite(state, path)  # never publish broken weights
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    atomic_write(path, save(state, metadata=meta))


def save_checkpoint(path: str | os.PathLike, model: LCoAN, **extras) -> None:
    """Training checkpoint: model, config and any extras (optimizer, step, RNG), atomically."""
    payload = {"format": FORMAT, "config": model.config.to_dict(), "model": model.state_dict(), **extras}
    check_finite(payload["model"], path)  # a good last.pt is never replaced by a diverged model
    buffer = io.BytesIO()  # serialised in memory: a full disk then fails in a plain write, as ENOSPC
    torch.save(payload, buffer)
    atomic_write(path, buffer.getbuffer())
