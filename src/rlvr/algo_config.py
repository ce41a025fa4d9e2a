"""`algo.loss`, `algo.correction` and `algo.kl` in a recipe: each loss and each correction has its own settings.

A loss or a correction is written as a bare name (`loss: gspo`, `--set algo.loss=gspo`: its defaults) or as a
mapping with its own keys (`loss: {name: gspo, clip_high: 5e-4}`); a key it does not take is an unknown key, with
the valid ones listed. A loss or a correction a plugin registers gets `PluginLossConfig` / `PluginCorrectionConfig`:
its name and `options` to read itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, model_validator

from rlvr.registry import name_tag, registered


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


# ---------------------------------------------------------------- losses


class PPOClipLoss(_Strict):
    """PPO's clipped surrogate on token ratios, with DAPO's clip-higher (clip_high > clip_low)."""

    name: Literal["ppo_clip"] = "ppo_clip"
    clip_low: float = Field(0.2, ge=0.0, le=1.0)
    clip_high: float = Field(0.28, ge=0.0, description="clip-higher: > clip_low lets rare tokens grow")


class GSPOLoss(_Strict):
    """GSPO (Zheng et al. 2025): one importance ratio per sequence, the geometric mean of its token ratios,
    clipped in a much narrower range than token ratios are (the paper's 3e-4 / 4e-4)."""

    name: Literal["gspo"] = "gspo"
    clip_low: float = Field(3e-4, ge=0.0, le=1.0)
    clip_high: float = Field(4e-4, ge=0.0)


class CISPOLoss(_Strict):
    """CISPO (MiniMax-M1, 2025): the token's importance weight, clipped and without gradient, times its log-prob,
    so a clipped token still gets its gradient (PPO's clip drops it)."""

    name: Literal["cispo"] = "cispo"
    max_weight: float = Field(5.0, gt=0.0, description="upper bound of the importance weight (TRL's epsilon_high)")
    min_weight: float = Field(0.0, ge=0.0, description="lower bound; 0 = none, as in MiniMax-M1")

    @model_validator(mode="after")
    def _ordered(self) -> CISPOLoss:
        if self.min_weight >= self.max_weight:
            raise ValueError(f"min_weight ({self.min_weight}) must be below max_weight ({self.max_weight})")
        return self


class ReinforceLoss(_Strict):
    """Plain policy gradient, importance-weighted: -ratio * advantage, no clipping."""

    name: Literal["reinforce"] = "reinforce"


class PluginLossConfig(_Strict):
    """A loss a plugin registered: its name, and options it reads itself."""

    name: Annotated[str, registered("rlvr.algos", "POLICY_LOSSES")]
    options: dict[str, Any] = {}


# ---------------------------------------------------------------- corrections for a sampler that is not the learner


class TISCorrection(_Strict):
    """Truncated importance sampling: each token's loss times min(learner / sampler, cap)."""

    name: Literal["tis"] = "tis"
    cap: float = Field(2.0, gt=0.0)


class _RatioBand(_Strict):
    """A correction that keeps learner / sampler ratios inside [low, high]; each declares `low` and `high` with its
    own defaults (after its `name`, so that error messages list the keys in the order a recipe writes them)."""

    @model_validator(mode="after")
    def _ordered(self) -> _RatioBand:
        low, high = getattr(self, "low"), getattr(self, "high")  # noqa: B009
        if low >= high:
            raise ValueError(f"low ({low}) must be below high ({high})")
        return self


class IcePopCorrection(_RatioBand):
    """IcePop: a token whose learner / sampler ratio leaves [low, high] carries no gradient; the others are weighted
    by their ratio."""

    name: Literal["icepop"] = "icepop"
    low: float = Field(0.5, ge=0.0)
    high: float = Field(5.0, gt=0.0)


class SeqMaskCorrection(_RatioBand):
    """A sequence whose geometric-mean learner / sampler ratio leaves [low, high] is dropped whole. The defaults
    are a guard against gross mismatch (a stale or broken sampler), the same factor of 2 as TIS's cap: bf16 noise
    alone (about 0.06 nats per token here) keeps a geometric mean within a few percent of 1."""

    name: Literal["seq_mask"] = "seq_mask"
    low: float = Field(0.5, ge=0.0)
    high: float = Field(2.0, gt=0.0)


class NoCorrection(_Strict):
    """Trust the sampler's log-probs as the old policy's."""

    name: Literal["none"] = "none"


class PluginCorrectionConfig(_Strict):
    """A correction a plugin registered: its name, and options it reads itself."""

    name: Annotated[str, registered("rlvr.algos", "CORRECTIONS")]
    options: dict[str, Any] = {}


class KLConfig(_Strict):
    """A KL penalty towards the starting model (loaded as a reference when coef > 0)."""

    coef: float = Field(0.0, ge=0.0)
    estimator: Annotated[str, registered("rlvr.algos", "KL_ESTIMATORS")] = Field("k3", description="k1, k2 or k3")
    in_reward: bool = Field(False, description="subtract coef x the sequence's KL from its reward, instead of a loss term")

    @model_validator(mode="after")
    def _k1_belongs_in_the_reward(self) -> KLConfig:
        # k1 = log p - log p_ref: as a loss its gradient is grad log p, zero in expectation, so the penalty does nothing.
        if self.coef > 0 and self.estimator == "k1" and not self.in_reward:
            raise ValueError("k1 as a loss term has no expected gradient: use it with in_reward: true, or k2 / k3")
        return self


def _by_name(value: Any) -> Any:
    """A bare name stands for the loss or correction with its defaults."""
    return {"name": value} if isinstance(value, str) else value


LOSS_CONFIGS: dict[str, type[_Strict]] = {
    cls.model_fields["name"].default: cls for cls in (PPOClipLoss, GSPOLoss, CISPOLoss, ReinforceLoss)
}
CORRECTION_CONFIGS: dict[str, type[_Strict]] = {
    cls.model_fields["name"].default: cls for cls in (TISCorrection, IcePopCorrection, SeqMaskCorrection, NoCorrection)
}


LossConfig = Annotated[
    Annotated[PPOClipLoss, Tag("ppo_clip")]
    | Annotated[GSPOLoss, Tag("gspo")]
    | Annotated[CISPOLoss, Tag("cispo")]
    | Annotated[ReinforceLoss, Tag("reinforce")]
    | Annotated[PluginLossConfig, Tag("plugin")],
    Discriminator(
        name_tag(LOSS_CONFIGS),
        custom_error_type="loss_name",
        custom_error_message=f"a loss by name, or {{name: ..., its keys}} (built in: {', '.join(sorted(LOSS_CONFIGS))})",
    ),
    BeforeValidator(_by_name),
]
CorrectionConfig = Annotated[
    Annotated[TISCorrection, Tag("tis")]
    | Annotated[IcePopCorrection, Tag("icepop")]
    | Annotated[SeqMaskCorrection, Tag("seq_mask")]
    | Annotated[NoCorrection, Tag("none")]
    | Annotated[PluginCorrectionConfig, Tag("plugin")],
    Discriminator(
        name_tag(CORRECTION_CONFIGS),
        custom_error_type="correction_name",
        custom_error_message="a correction by name, or {name: ..., its keys} (built in: "
        + ", ".join(sorted(CORRECTION_CONFIGS))
        + ")",
    ),
    BeforeValidator(_by_name),
]
