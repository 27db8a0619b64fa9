"""The one adapter for checkpoints: the reference's weights-only files (keys `_orig_mod.model.inner.*`,
`model.inner.*` or bare) with their `all_config.yaml`, and our own trainer checkpoints.

Every name and shape is checked before anything is copied; the first mismatch is reported by name with
the expected and found shape (`CheckpointMismatch`). A missing, truncated or foreign file gets one line.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrm.model.config import HRMConfig
from hrm.model.factory import config_from_fields

OUR_FORMAT = "hrm-tui-checkpoint"
_PREFIXES = ("_orig_mod.", "module.", "model.", "inner.")  # torch.compile, DDP, loss head, ACT wrapper


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file and the problem."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint whose tensors do not fit the model (names the tensor, expected and found shape)."""


def _inner(target: nn.Module) -> nn.Module:
    """The inner model of a loss head, an ACT model or the inner model itself."""
    for attr in ("model", "inner"):
        if hasattr(target, attr) and isinstance(getattr(target, attr), nn.Module):
            target = getattr(target, attr)
    return target


def strip_prefixes(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Keys relative to the inner model: drop any leading `_orig_mod.`, `module.`, `model.`, `inner.`."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        k = key
        while k.startswith(_PREFIXES):
            k = k.split(".", 1)[1]
        out[k] = value
    return out


def check_state_dict(target: nn.Module, state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Inner-relative copy of `state_dict` after checking every name and shape against `target`."""
    expected = _inner(target).state_dict()
    found = strip_prefixes(state_dict)
    for name, tensor in found.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointMismatch(f"checkpoint entry {name!r} is a {type(tensor).__name__}, not a tensor")
    for name, want in expected.items():
        if name not in found:
            raise CheckpointMismatch(f"checkpoint lacks tensor {name!r} (expected shape {list(want.shape)})")
        if tuple(found[name].shape) != tuple(want.shape):
            hint = ""
            if name.endswith("puzzle_emb.weights"):
                hint = " (the number of puzzle identifiers differs: use the dataset the checkpoint was trained on)"
            raise CheckpointMismatch(
                f"checkpoint tensor {name!r}: expected shape {list(want.shape)}, found {list(found[name].shape)}{hint}"
            )
    extra = [n for n in found if n not in expected]
    if extra:
        raise CheckpointMismatch(
            f"checkpoint has tensor {extra[0]!r} (shape {list(found[extra[0]].shape)}) "
            f"that this model does not have ({len(extra)} unexpected in all); "
            "check pos_encodings / puzzle_emb_ndim / layer counts"
        )
    return found


def load_model_weights(head_or_model: nn.Module, state_dict: dict[str, Any]) -> None:
    """Load weights into a loss head, ACT model or inner model from a state_dict with the reference's
    prefixes or none. Dtypes are cast to the model's (a reference bf16 H_init loads into fp32)."""
    checked = check_state_dict(head_or_model, state_dict)
    _inner(head_or_model).load_state_dict(checked, strict=True)


# --- files -----------------------------------------------------------------------------------------------
def read_torch_file(path: str | Path) -> Any:
    """torch.load(weights_only=True) with one clear error line for a missing, empty, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (its write never finished)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint (no zip archive: truncated, or a different kind of file)"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # torch.load never checks the CRCs: one flipped byte would load as wrong weights
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt ({exc}); use another checkpoint") from None
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {path} is corrupt (record {bad} fails its CRC check); use another checkpoint"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError... for damaged archives
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated or corrupt?): {first}") from None


def read_reference_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"config {path} does not exist (pass --config path/to/all_config.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CheckpointError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("arch"), dict):
        raise CheckpointError(f"config {path} has no 'arch' section: not a reference all_config.yaml")
    return data


def config_from_reference_yaml(path: str | Path, **fields: Any) -> HRMConfig:
    """HRMConfig from the reference's all_config.yaml (`arch` section). batch_size defaults to
    global_batch_size; seq_len, vocab_size, num_puzzle_identifiers come from `fields` or else from
    `<data_path>/train/dataset.json` when that exists."""
    data = read_reference_yaml(path)
    arch = dict(data["arch"])
    merged: dict[str, Any] = {"batch_size": data.get("global_batch_size")}
    meta_path = Path(str(data.get("data_path", ""))) / "train" / "dataset.json"
    if data.get("data_path") and meta_path.is_file():
        import json

        meta = json.loads(meta_path.read_text())
        merged.update({k: meta[k] for k in ("seq_len", "vocab_size", "num_puzzle_identifiers") if k in meta})
    merged.update(arch)
    return config_from_fields(merged, **fields)


@dataclass
class LoadedCheckpoint:
    """A checkpoint read from disk, before a model exists. `state_dict` keys are inner-relative."""

    path: Path
    kind: str  # "reference" or "hrm-tui"
    state_dict: dict[str, torch.Tensor]
    model_fields: dict[str, Any]  # HRM fields known from the config (may lack data-injected ones)
    loss_type: str = "stablemax_cross_entropy"
    step: int | None = None
    batch_size: int | None = None  # the training global batch size, when known
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def build_config(
        self,
        *,
        seq_len: int | None = None,
        batch_size: int | None = None,
        forward_dtype: str | None = None,
        vocab_size: int | None = None,
    ) -> HRMConfig:
        """Complete the config: vocab and puzzle-identifier counts from the tensor shapes (the checkpoint
        is the truth for those), seq_len from the data when not in the config."""
        fields = dict(self.model_fields)
        sd = self.state_dict
        if "embed_tokens.embedding_weight" in sd:
            ckpt_vocab = int(sd["embed_tokens.embedding_weight"].shape[0])
            if vocab_size is not None and vocab_size != ckpt_vocab:
                raise CheckpointMismatch(
                    f"checkpoint {self.path}: tensor 'embed_tokens.embedding_weight' has vocab {ckpt_vocab} but the "
                    f"data has vocab_size {vocab_size}: the checkpoint was trained on a different task"
                )
            fields["vocab_size"] = ckpt_vocab
        if "puzzle_emb.weights" in sd:
            fields["num_puzzle_identifiers"] = int(sd["puzzle_emb.weights"].shape[0])
        if seq_len is not None:
            fields["seq_len"] = seq_len
        fields["batch_size"] = batch_size or fields.get("batch_size") or self.batch_size or 1
        if forward_dtype is not None:
            fields["forward_dtype"] = forward_dtype
        if "seq_len" not in fields:
            raise CheckpointError(f"checkpoint {self.path}: seq_len unknown (give the dataset it was trained on)")
        return config_from_fields(fields)


def _step_from_name(path: Path) -> int | None:
    m = re.search(r"step[_-]0*(\d+)", path.name)
    return int(m.group(1)) if m else None


def _our_model_fields(path: Path, model: dict[str, Any]) -> dict[str, Any]:
    """HRMConfig fields of our config's model section, resolved as the trainer resolved them (a null
    puzzle_emb_ndim means hidden_size)."""
    from pydantic import ValidationError

    from hrm.run.config import ModelConfig

    try:
        return ModelConfig.model_validate(model).hrm_fields()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise CheckpointError(
            f"checkpoint {path}: its model config is not valid (model.{where}: {err['msg']})"
        ) from None


def load_any_checkpoint(path: str | Path, config_path: str | Path | None = None) -> LoadedCheckpoint:
    """Read our trainer checkpoint or a reference weights-only one (+ its all_config.yaml, by default the
    file beside it)."""
    path = Path(path)
    obj = read_torch_file(path)
    if isinstance(obj, dict) and obj.get("format") == OUR_FORMAT:
        cfg = obj.get("config") or {}
        model = dict(cfg.get("model") or {})
        train = cfg.get("train") or {}
        if not isinstance(obj.get("model"), dict):
            raise CheckpointError(f"checkpoint {path} has no 'model' state_dict")
        return LoadedCheckpoint(
            path=path,
            kind="hrm-tui",
            # A run with train.ema evaluates its moving average (as the trainer's eval events do).
            state_dict={**strip_prefixes(obj["model"]), **strip_prefixes(obj.get("ema") or {})},
            model_fields=_our_model_fields(path, model),
            loss_type=model.get("loss_type", "stablemax_cross_entropy"),
            step=obj.get("step"),
            batch_size=train.get("global_batch_size"),
            raw=obj,
        )
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {path} is neither an hrm-tui checkpoint nor a reference state_dict of tensors"
        )
    sd = strip_prefixes(obj)
    if "embed_tokens.embedding_weight" not in sd:
        raise CheckpointError(
            f"checkpoint {path} holds tensors but no 'embed_tokens.embedding_weight': not an HRM checkpoint"
        )
    yaml_path = Path(config_path) if config_path else path.parent / "all_config.yaml"
    if not yaml_path.is_file():
        raise CheckpointError(
            f"reference checkpoint {path} needs its all_config.yaml: none at {yaml_path} (pass --config PATH)"
        )
    data = read_reference_yaml(yaml_path)
    arch = dict(data["arch"])
    loss_cfg = arch.get("loss")
    loss: dict[str, Any] = loss_cfg if isinstance(loss_cfg, dict) else {}
    return LoadedCheckpoint(
        path=path,
        kind="reference",
        state_dict=sd,
        model_fields=arch,
        loss_type=loss.get("loss_type", "stablemax_cross_entropy"),
        step=_step_from_name(path),
        batch_size=data.get("global_batch_size"),
        raw={},
    )
