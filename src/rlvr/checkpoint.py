"""Atomic checkpoints: a run killed at any instant resumes from the last complete one, on any device and with any
number of ranks.

Layout under `<run>/checkpoints/`:
    step-000010/model/...        the policy as a model folder (full weights or the LoRA adapter): what `rlvr eval`
                                 and `rlvr chat` load; not read on resume
    step-000010/state/...        the weights and the optimiser's state, sharded by rank (torch.distributed.checkpoint:
                                 each rank writes its shard; a load with another number of ranks re-shards them)
    step-000010/trainer.pt       scheduler, step, data position, the guard's state, and each rank's RNG states
    latest                       the name of the newest complete checkpoint

A checkpoint is written into a temporary folder and renamed into place, then `latest` is replaced atomically, so a
crash leaves either the old or the new one. Tensors load onto whatever device the resuming run trains on.
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict, set_state_dict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlvr.distributed import Ranks

_MODEL = "model"
_SHARDED = "state"
_STATE = "trainer.pt"
_LATEST = "latest"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    with open(tmp) as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])  # a run saved on a GPU and resumed on a CPU keeps the rest


@contextmanager
def _single_process_quiet() -> Iterator[None]:
    """One process saves and loads without a process group; torch warns that it assumes so, which is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def save_model_folder(
    folder: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, ranks: Ranks | None = None
) -> None:
    """The model as a Hugging Face folder (full weights or the LoRA adapter), written by rank 0. Called by every
    rank: sharded weights are gathered whole, on rank 0 only, in a collective."""
    ranks = ranks or Ranks()
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if ranks.main:
        # Written beside it and renamed into place: a kill mid-write leaves the folder as it was (or absent), never
        # half a model or the writer's temporary files in it.
        partial = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial, state_dict=full)
        if tokenizer is not None:
            tokenizer.save_pretrained(partial)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(partial, folder)


def save_checkpoint(
    root: Path,
    step: int,
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase | None = None,
    ranks: Ranks | None = None,
    keep: int = 1,
    suspect_from: int | None = None,
) -> Path:
    """Called by every rank: each writes its shard of the weights and optimiser state, rank 0 the rest. Keeps the
    `keep` newest checkpoints before step `suspect_from` and every one from it on (not yet known good: see
    `prune_checkpoints`)."""
    ranks = ranks or Ranks()
    # An optimiser that has not stepped yet (a step-0 checkpoint) gets its state made by torch's state_dict with a
    # zero-lr step: AdamW would then count one step more in its bias correction, and a stochastically rounding one
    # would draw random numbers. Both are undone after saving, so writing a checkpoint never changes the run.
    fresh = not optimizer.state
    own_rng = rng_state()
    name = f"step-{step:06d}"
    tmp, final = root / f".{name}.partial", root / name
    if ranks.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    ranks.barrier(f"checkpoint {name}")
    try:
        model_state, optimizer_state = get_state_dict(model, optimizer)
        with _single_process_quiet():
            dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / _SHARDED)
        # A model folder too, so the checkpoint is one `rlvr eval` can load on its own.
        save_model_folder(tmp / _MODEL, model, tokenizer, ranks)
        rngs = ranks.gather(own_rng)
        if ranks.main:
            state = {**trainer_state, "rng": rngs, "world_size": ranks.world_size, "step": step, "optimizer_fresh": fresh}
            torch.save(state, tmp / _STATE)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _atomic_write_text(root / _LATEST, name)
            prune_checkpoints(root, keep, suspect_from)
    finally:
        if ranks.main:
            shutil.rmtree(tmp, ignore_errors=True)
        if fresh:
            optimizer.state.clear()
            set_rng_state(own_rng)
    ranks.barrier(f"checkpoint {name} written")
    return final


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """The complete checkpoints under `root`, oldest first, with their steps."""
    found = [(int(path.name.removeprefix("step-")), path) for path in root.glob("step-*") if (path / _STATE).exists()]
    return sorted(found)


def prune_checkpoints(root: Path, keep: int, suspect_from: int | None = None) -> None:
    """Keep the `keep` newest checkpoints before step `suspect_from` (all of them without it) and every one from it
    on: those were written while a divergence check was already failing, so they cannot count as good yet."""
    known_good = [path for step, path in checkpoints(root) if suspect_from is None or step < suspect_from]
    for old in known_good[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def drop_checkpoints_after(root: Path, step: int) -> None:
    """Delete the checkpoints after `step` (written by weights a rollback abandoned), `latest` first pointed back at
    `step`'s, so a crash meanwhile resumes from a checkpoint that exists. Rank 0 only."""
    _atomic_write_text(root / _LATEST, f"step-{step:06d}")
    for later, path in checkpoints(root):
        if later > step:
            shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint `latest` names; else the newest complete one. A kill can leave `latest` naming a folder that is
    gone (a step saved again, killed between removing its old folder and renaming the new one in) or a complete
    checkpoint that `latest` does not name yet (killed just before the pointer was written): neither loses it."""
    pointer = root / _LATEST
    if pointer.exists():
        path = root / pointer.read_text().strip()
        if (path / _STATE).exists():
            return path
    found = checkpoints(root)
    return found[-1][1] if found else None


def load_checkpoint(
    path: Path, model: PreTrainedModel, optimizer: torch.optim.Optimizer, ranks: Ranks | None = None
) -> dict[str, Any]:
    """Load the weights and the optimiser state in place (re-sharded for this run's ranks, on its device), restore
    this rank's RNG, and return the trainer state. A rank the saving run did not have keeps its seeded RNG."""
    ranks = ranks or Ranks()
    if not (path / _SHARDED).exists():
        raise RuntimeError(f"{path}: no {_SHARDED}/ folder: a checkpoint from an older rlvr, which this one cannot resume")
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=path / _SHARDED)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    trainer_state = torch.load(path / _STATE, weights_only=False, map_location="cpu")
    if trainer_state.get("optimizer_fresh"):  # saved before the first step: as in save_checkpoint, no state at all
        optimizer.state.clear()
    rngs = trainer_state["rng"]
    if ranks.rank < len(rngs):  # after set_state_dict, which may draw while it sets the optimiser up
        set_rng_state(rngs[ranks.rank])
    return trainer_state
