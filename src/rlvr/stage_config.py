"""`stages:` in a recipe: a pipeline of training and data stages, one config type per kind (a discriminated union).

A recipe with stages runs them in order, as DeepSeek R1 was made (cold-start SFT -> RL -> rejection sampling -> SFT
-> RL): each stage starts from the model the stage before it trained, and an `sft` stage reads the traces a
`rejection_sample` stage wrote. Every stage is the recipe itself (its model, environment, sampling, algorithm,
training and evaluation settings) with the stage's own `set:` overrides, written as `--set` keys are; what the
pipeline decides for each stage (its model, its run folder, its data) cannot be overridden there.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, field_validator

# Decided by the pipeline for each stage: the model it starts from, its run folder, and the pipeline itself.
PIPELINE_KEYS = ("name", "output_dir", "model.path", "stages", "sft.data", "algo.teacher")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageCommon(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="the stage's name: its run folder, and how later stages name it")
    set: dict[str, Any] = Field(
        {}, description="config overrides for this stage only, as --set writes them: {train.steps: 10, train.lr: 1e-5}"
    )

    @field_validator("set")
    @classmethod
    def _not_the_pipelines(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        for key in overrides:
            if any(key == fixed or key.startswith(fixed + ".") for fixed in PIPELINE_KEYS):
                raise ValueError(f"{key}: the pipeline sets it for each stage ({', '.join(PIPELINE_KEYS)} cannot be overridden)")
        return overrides


class RLStage(StageCommon):
    """RL on the recipe's environment and reward, from the model so far."""

    kind: Literal["rl"]


class SFTStage(StageCommon):
    """Supervised fine-tuning on chat traces (`rlvr sft`), from the model so far."""

    kind: Literal["sft"]
    data: str | None = Field(
        None,
        description="a traces file (relative to the recipe), or the name of an earlier rejection_sample stage; "
        "default: the latest rejection_sample stage's traces",
    )


class DistillStage(StageCommon):
    """On-policy distillation (`rlvr distill`) of a teacher into the model so far."""

    kind: Literal["distill"]
    teacher: str = Field(min_length=1, description="a model, run or checkpoint folder, or the name of an earlier training stage")
    with_reward: bool = Field(False, description="add the distillation loss to the RL reward, not instead of it")


class RejectionOptions(_Strict):
    """How rejection sampling samples and what it keeps: the options of `rlvr rejection-sample` (and of
    `rlvr.rejection_sample`), which a pipeline's rejection_sample stage takes too."""

    n: int = Field(8, ge=1, description="samples per question")
    keep: str = Field("all", description="which correct answers to keep: all, shortest, distinct")
    max_per_question: int | None = Field(None, ge=1)
    limit: int | None = Field(None, ge=1, description="training questions sampled; default: all of a file's")
    temperature: float | None = Field(None, ge=0.0, description="default: the recipe's sampling temperature; 0: greedy")
    max_new_tokens: int | None = Field(None, ge=1, description="default: the recipe's")
    seed: int = 0


class RejectionStage(RejectionOptions):
    """Rejection sampling (`rlvr rejection-sample`) from the model so far, on the environment's training split: the
    verified answers become the traces a later `sft` stage reads."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    kind: Literal["rejection_sample"]
    temperature: float | None = Field(None, gt=0.0, description="default: the recipe's sampling temperature")

    def options(self) -> RejectionOptions:
        return RejectionOptions(**self.model_dump(include=set(RejectionOptions.model_fields)))


STAGE_CONFIGS: dict[str, type[BaseModel]] = {
    "rl": RLStage,
    "sft": SFTStage,
    "distill": DistillStage,
    "rejection_sample": RejectionStage,
}
Stage = Annotated[RLStage | SFTStage | DistillStage | RejectionStage, Discriminator("kind")]
TRAINING_KINDS = ("rl", "sft", "distill")


def check_stages(stages: list[Any]) -> list[Any]:
    """Names unique, and every stage a stage names (its data, its teacher) an earlier one of the right kind."""
    seen: dict[str, str] = {}
    for index, stage in enumerate(stages):
        where = f"stages.{index} ({stage.name})"
        if stage.name in seen:
            raise ValueError(f"{where}: another stage is named {stage.name!r}: stage names must be unique")
        if isinstance(stage, SFTStage):
            if stage.data is None and "rejection_sample" not in seen.values():
                raise ValueError(f"{where}: data: no earlier rejection_sample stage to read traces from; name a file")
            if stage.data in seen and seen[stage.data] != "rejection_sample":
                raise ValueError(f"{where}: data: stage {stage.data!r} is a {seen[stage.data]} stage, which writes no traces")
        if isinstance(stage, DistillStage) and stage.teacher in seen and seen[stage.teacher] not in TRAINING_KINDS:
            raise ValueError(f"{where}: teacher: stage {stage.teacher!r} trains no model")
        seen[stage.name] = stage.kind
    return stages
