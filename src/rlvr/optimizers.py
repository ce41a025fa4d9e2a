"""The optimisers `train.optimizer` names: what each keeps per weight, and so what it costs in memory.

A 135M-parameter model in fp32 is 0.54 GB of weights and 0.54 GB of gradients; AdamW's two moments add 1.08 GB
in fp32. `adamw_bf16` keeps the moments in bf16 (0.54 GB), stochastically rounded so that small updates are not
lost to bf16's 8-bit mantissa on average; `adamw_8bit` keeps them in 8 bits with block-wise scales
(bitsandbytes, 0.27 GB). The weights themselves stay fp32 in every case: the update is computed in fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from torch.distributed.tensor import DTensor

from rlvr.config import TrainConfig
from rlvr.errors import ConfigError
from rlvr.registry import Registry

OptimizerBuilder = Callable[[list[torch.Tensor], TrainConfig], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer")


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded (FSDP) tensor, as a view that in-place updates write through; else itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def stochastic_round_(target: torch.Tensor, value: torch.Tensor) -> None:
    """Write fp32 `value` into bf16 `target`, rounding up or down at random in proportion to the distance, so the
    rounding is unbiased: E[round(x)] = x. bf16 is fp32's upper 16 bits; adding uniform noise to the lower 16 and
    truncating does exactly that."""
    bits = value.contiguous().view(torch.int32)
    noise = torch.randint_like(bits, 0, 1 << 16)
    target.copy_(((bits + noise) & -65536).view(torch.float32))  # -65536 = 0xFFFF0000: keep the upper 16 bits


class AdamWBF16(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias-corrected moments) with both moments stored in bf16 and rounded
    stochastically; the arithmetic runs in fp32."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(param, dtype=torch.bfloat16)
                    state["exp_avg_sq"] = torch.zeros_like(param, dtype=torch.bfloat16)
                state["step"] += 1
                step = float(state["step"])
                weight, grad = _local(param), _local(param.grad).float()
                exp_avg, exp_avg_sq = _local(state["exp_avg"]), _local(state["exp_avg_sq"])
                mean = exp_avg.float().lerp_(grad, 1 - beta1)
                square = exp_avg_sq.float().mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                stochastic_round_(exp_avg, mean)
                stochastic_round_(exp_avg_sq, square)
                # The update uses the unrounded fp32 moments of this step; only what is kept is rounded.
                denominator = (square / (1 - beta2**step)).sqrt_().add_(group["eps"])
                weight.mul_(1 - group["lr"] * group["weight_decay"])
                weight.addcdiv_(mean, denominator, value=-group["lr"] / (1 - beta1**step))
        return loss


@OPTIMIZERS.register("adamw")
def _adamw(params: list[torch.Tensor], train: TrainConfig) -> torch.optim.Optimizer:
    # foreach=False: the multi-tensor step allocates temporaries as large as all the weights together.
    return torch.optim.AdamW(params, lr=train.lr, betas=train.betas, weight_decay=train.weight_decay, foreach=False)


@OPTIMIZERS.register("adamw_bf16")
def _adamw_bf16(params: list[torch.Tensor], train: TrainConfig) -> torch.optim.Optimizer:
    return AdamWBF16(params, lr=train.lr, betas=train.betas, weight_decay=train.weight_decay)


@OPTIMIZERS.register("adamw_8bit")
def _adamw_8bit(params: list[torch.Tensor], train: TrainConfig) -> torch.optim.Optimizer:
    if any(isinstance(p, DTensor) for p in params):
        raise ConfigError("train.optimizer=adamw_8bit: bitsandbytes does not take sharded (FSDP) weights; use adamw_bf16")
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)  # an optional 4-bit kernel: unused
    try:
        import bitsandbytes
    except ImportError:
        raise ConfigError("train.optimizer=adamw_8bit needs bitsandbytes: pip install 'rlvr[lowmem]'") from None
    return bitsandbytes.optim.AdamW8bit(params, lr=train.lr, betas=train.betas, weight_decay=train.weight_decay)


def make_optimizer(params: list[torch.Tensor], train: TrainConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[train.optimizer](params, train)


def step_freeing_gradients(optimizer: torch.optim.Optimizer) -> None:
    """`optimizer.step()` one weight at a time, smallest first, each gradient freed once its weight is updated.

    The optimisers here update each weight on its own, so the result is the same as one `step()`; but the step's
    temporaries (a weight's moments in fp32, its update) then never coexist with every other weight's gradient: by
    the time the largest tensor (the embedding, a fifth of a small model) is updated, the others' gradients are gone.
    """
    groups = optimizer.param_groups
    kept = [group["params"] for group in groups]
    order = sorted(
        ((index, param) for index, params in enumerate(kept) for param in params if param.grad is not None),
        key=lambda item: item[1].numel(),
    )
    try:
        for group in groups:
            group["params"] = []
        for index, param in order:
            groups[index]["params"] = [param]
            optimizer.step()
            groups[index]["params"] = []
            param.grad = None
    finally:
        for group, params in zip(groups, kept):
            group["params"] = params
