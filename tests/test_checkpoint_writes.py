"""A checkpoint write that fails or is killed part-way leaves the previous checkpoint usable: the new one is
written into a hidden temporary folder and renamed into place, and `latest` moves only after it is complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import tiny_llama
from rlvr import checkpoint
from rlvr.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def _stepped(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A tiny model and its AdamW after one update, so the optimiser has state worth saving."""
    model = tiny_llama(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.arange(8)[None]).logits.sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    return model, optimizer


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_write_that_fails_part_way_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = _stepped()
    first = save_checkpoint(tmp_path, 1, model, optimizer, {"data": 1})
    saved = _weights(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_model_folder", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path, 2, model, optimizer, {"data": 2})
    assert latest_checkpoint(tmp_path) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000001"]  # the partial write is gone
    fresh, fresh_optimizer = _stepped(seed=1)
    assert load_checkpoint(first, fresh, fresh_optimizer)["data"] == 1
    assert _same(_weights(fresh), saved)
    monkeypatch.undo()  # the disk has room again: the same step is written, and `latest` moves to it
    assert save_checkpoint(tmp_path, 2, model, optimizer, {"data": 2}) == latest_checkpoint(tmp_path) == tmp_path / "step-000002"


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r})
    from rlvr import checkpoint
    from test_checkpoint_writes import _stepped
    root = {out!r}
    model, optimizer = _stepped()
    checkpoint.save_checkpoint(checkpoint.Path(root), 1, model, optimizer, {{"data": 1}})
    torch.save(model.state_dict(), os.path.join(root, "expected.pt"))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    # Killed in the middle of the next write: after the sharded state, before the model folder and trainer.pt.
    checkpoint.save_model_folder = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.save_checkpoint(checkpoint.Path(root), 2, model, optimizer, {{"data": 2}})
    """
)


def test_a_write_killed_part_way_leaves_the_previous_checkpoint(tmp_path):
    tests = Path(__file__).resolve().parent
    code = KILLED_WRITER.format(tests=str(tests), out=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert (tmp_path / ".step-000002.partial").exists()  # what the kill left
    first = latest_checkpoint(tmp_path)
    assert first == tmp_path / "step-000001"
    model, optimizer = _stepped(seed=1)
    assert load_checkpoint(first, model, optimizer)["data"] == 1
    assert _same(_weights(model), torch.load(tmp_path / "expected.pt"))
    # The next write of that step starts clean.
    save_checkpoint(tmp_path, 2, model, optimizer, {"data": 2})
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000002" and not (tmp_path / ".step-000002.partial").exists()


def test_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    model, optimizer = _stepped()
    save_checkpoint(tmp_path, 1, model, optimizer, {"data": 1}, keep=2)
    second = save_checkpoint(tmp_path, 2, model, optimizer, {"data": 2}, keep=2)
    # Killed while step 2 was saved again, between removing its folder and renaming the new one in.
    os.replace(second, tmp_path / "gone")
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000001"
    # Killed after renaming a new checkpoint in, before `latest` named it: the complete one is found.
    os.replace(tmp_path / "gone", second)
    (tmp_path / "latest").unlink()
    assert latest_checkpoint(tmp_path) == second


def test_a_metrics_line_torn_by_a_kill_is_dropped_on_resume(tmp_path):
    """A kill inside the append of a step's line leaves it without its newline; that step's checkpoint was never
    written, so the resumed run redoes the step and the torn line goes."""
    from rlvr.metrics import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "reward": 0.5}\n{"step": 2, "reward": 0.25}\n{"step": 3, "rew')
    log = MetricsLog(path)
    assert [row["step"] for row in log.read()] == [1, 2]
    log.truncate_after(2)
    assert path.read_text() == '{"step": 1, "reward": 0.5}\n{"step": 2, "reward": 0.25}\n'
