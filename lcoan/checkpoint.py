"""Weights in and out: this project's checkpoints, release ``.safetensors``, and state dicts
saved by the public LCoAN code (keys as in ``official_lcoan_x2_state_dict_keys.tsv``).

Nothing here unpickles arbitrary objects: ``torch.load(weights_only=True)`` only.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from .model.network import LCoAN, LCoANConfig

FORMAT = "lcoan"


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


# --------------------------------------------------------------------------- atomic files
def atomic_write(path: str | os.PathLike, write) -> None:
    """Write through ``write(tmp_path)`` to a temporary file beside ``path``, then rename.

    A crash mid-write leaves the previous file untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide release weights from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------- public-code keys
_TO_OFFICIAL = [  # (our key pattern, official key template)
    (r"head\.(weight|bias)$", r"head.0.\1"),
    (r"groups\.(\d+)\.blocks\.(\d+)\.conv1\.(weight|bias)$", r"body.\1.local_body.\2.body.0.\3"),
    (r"groups\.(\d+)\.blocks\.(\d+)\.conv2\.(weight|bias)$", r"body.\1.local_body.\2.body.2.\3"),
    (r"groups\.(\d+)\.attention\.match_conv\.(weight|bias)$", r"body.\1.attention.0.conv_match.0.\2"),
    (r"groups\.(\d+)\.attention\.assembly_conv\.(weight|bias)$", r"body.\1.attention.0.conv_assembly.0.\2"),
    (r"groups\.(\d+)\.attention\.kmeans\.centroids$", r"body.\1.attention.0.kmeans.means"),
    (r"groups\.(\d+)\.attention\.kmeans\.initialized$", r"body.\1.attention.0.kmeans.initted"),
    (r"groups\.(\d+)\.conv\.(weight|bias)$", r"body.\1.m_conv.0.\2"),
    (r"body_conv\.(weight|bias)$", r"m_conv.0.\1"),
    (r"upsampler\.(\d+)\.(weight|bias)$", r"tail.0.\1.\2"),
    (r"tail_conv\.(weight|bias)$", r"tail.1.\1"),
]
_FROM_OFFICIAL = [
    (re.compile(r"head\.0\.(weight|bias)$"), r"head.\1"),
    (re.compile(r"body\.(\d+)\.local_body\.(\d+)\.body\.0\.(weight|bias)$"), r"groups.\1.blocks.\2.conv1.\3"),
    (re.compile(r"body\.(\d+)\.local_body\.(\d+)\.body\.2\.(weight|bias)$"), r"groups.\1.blocks.\2.conv2.\3"),
    (re.compile(r"body\.(\d+)\.attention\.0\.conv_match\.0\.(weight|bias)$"), r"groups.\1.attention.match_conv.\2"),
    (re.compile(r"body\.(\d+)\.attention\.0\.conv_assembly\.0\.(weight|bias)$"), r"groups.\1.attention.assembly_conv.\2"),
    (re.compile(r"body\.(\d+)\.attention\.0\.kmeans\.means$"), r"groups.\1.attention.kmeans.centroids"),
    (re.compile(r"body\.(\d+)\.attention\.0\.kmeans\.initted$"), r"groups.\1.attention.kmeans.initialized"),
    (re.compile(r"body\.(\d+)\.m_conv\.0\.(weight|bias)$"), r"groups.\1.conv.\2"),
    (re.compile(r"m_conv\.0\.(weight|bias)$"), r"body_conv.\1"),
    (re.compile(r"tail\.0\.(\d+)\.(weight|bias)$"), r"upsampler.\1.\2"),
    (re.compile(r"tail\.1\.(weight|bias)$"), r"tail_conv.\1"),
]


def is_official_state_dict(state: dict) -> bool:
    return "head.0.weight" in state and any(k.startswith("body.0.local_body.") for k in state)


def to_official_state_dict(model: LCoAN) -> dict[str, Tensor]:
    """Our weights under the public code's key names and shapes (unused public tensors omitted)."""
    out = {}
    for key, value in model.state_dict().items():
        for pattern, template in _TO_OFFICIAL:
            if re.match(pattern, key):
                new_key = re.sub(pattern, template, key)
                out[new_key] = value.unsqueeze(0) if new_key.endswith("kmeans.means") else value
                break
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
        for pattern, template in _FROM_OFFICIAL:
            if pattern.match(key):
                new_key = pattern.sub(template, key)
                out[new_key] = value.squeeze(0) if new_key.endswith("kmeans.centroids") else value
                break
    return out


# --------------------------------------------------------------------------- reading
def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with forbidden globals, not a torch file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(path, f"not a readable weights file ({first_line[:160]})") from None


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
            raise CheckpointError(path, f"not a readable safetensors file ({exc})") from None
        if meta.get("format") != FORMAT or "config" not in meta:
            raise CheckpointError(path, "safetensors file has no LCoAN config in its metadata")
        return json.loads(meta["config"]), state, {}
    raw = _torch_load(path)
    if not isinstance(raw, dict):
        raise CheckpointError(path, f"expected a dict of tensors, found {type(raw).__name__}")
    if raw.get("format") == FORMAT:
        return dict(raw["config"]), raw["model"], raw
    if is_official_state_dict(raw):
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
    return model, raw


# --------------------------------------------------------------------------- writing
def save_safetensors(model: LCoAN, path: str | os.PathLike, extra_metadata: dict | None = None) -> None:
    """Release weights: tensors plus the config in the metadata, written atomically."""
    from safetensors.torch import save_file
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def save_checkpoint(path: str | os.PathLike, model: LCoAN, **extras) -> None:
    """Training checkpoint: model, config and any extras (optimizer, step, RNG), atomically."""
    payload = {"format": FORMAT, "config": model.config.to_dict(), "model": model.state_dict(), **extras}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
