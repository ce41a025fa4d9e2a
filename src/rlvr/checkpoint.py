"""Atomic checkpoints: a run killed at any instant resumes from the last complete one.

Layout under `<run>/checkpoints/`:
    step-000010/model/...        the policy (save_pretrained: full weights or the LoRA adapter)
    step-000010/trainer.pt       optimiser, scheduler, RNG states, step, data position
    latest                       the name of the newest complete checkpoint

A checkpoint is written into a temporary folder and renamed into place, then
`latest` is replaced atomically, so a crash leaves either the old or the new one.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

_MODEL = "model"
_STATE = "trainer.pt"
_LATEST = "latest"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    with open(tmp) as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(
    root: Path,
    step: int,
    model: PreTrainedModel,
    trainer_state: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase | None = None,
    keep: int = 1,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
    try:
        model.save_pretrained(tmp / _MODEL)
        if tokenizer is not None:  # so the checkpoint is a model folder `rlvr eval` can load on its own
            tokenizer.save_pretrained(tmp / _MODEL)
        torch.save({**trainer_state, "rng": rng_state(), "step": step}, tmp / _STATE)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _atomic_write_text(root / _LATEST, name)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / _LATEST
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / _STATE).exists() else None


def load_checkpoint(path: Path, model: PreTrainedModel) -> dict[str, Any]:
    """Load the policy weights in place and return the trainer state (RNG restored)."""
    folder = path / _MODEL
    adapter = folder / "adapter_model.safetensors"
    if adapter.exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(adapter))
    else:
        state = {}
        for shard in sorted(folder.glob("*.safetensors")):
            state.update(load_file(shard))
        missing, unexpected = model.load_state_dict(state, strict=False)
        # Tied weights (lm_head = embeddings) are saved once; anything else missing is a broken checkpoint.
        tied = set(getattr(model, "_tied_weights_keys", None) or ())
        missing = [key for key in missing if key not in tied]
        if missing or unexpected:
            raise RuntimeError(
                f"{folder}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    state = torch.load(path / _STATE, weights_only=False)
    set_rng_state(state["rng"])
    return state
