"""Where and how rollouts are generated: the engine and vLLM's settings (`rollout:`), the rollout workers beside
the learner and their lag (`rollout.workers`, `rollout.max_staleness`), and the cluster they run on (`cluster:`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlvr.registry import registered


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class VLLMConfig(_Strict):
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 where the hardware computes it natively, else float32 (float16 on old GPUs)"
    )
    kv_cache_gb: float | None = Field(
        0.5, gt=0.0, description="KV cache size (GB) on a CPU; on a GPU only when set, else gpu_memory_utilization sizes it"
    )
    gpu_memory_utilization: float = Field(
        0.3, gt=0.0, le=1.0, description="GPU: the share of the card vLLM takes (weights, activations, KV cache)"
    )
    sleep_mode: bool = Field(
        True, description="GPU: vLLM frees its memory while the learner updates (colocated on one GPU) and wakes after"
    )
    enforce_eager: bool = Field(
        True, description="no CUDA graphs / torch.compile: fast start; false on a GPU captures graphs (in-place loads keep them)"
    )
    max_model_len: int | None = Field(None, ge=1, description="defaults to the model's context length")
    max_num_batched_tokens: int | None = Field(
        None, ge=1, description="tokens per engine step (longer prefills are split); null = vLLM's default (4096 on CPU)"
    )


class RolloutConfig(_Strict):
    engine: Annotated[str, registered("rlvr.rollout", "ENGINES")] = Field(
        "auto", description="transformers, vllm, or auto (vllm when installed, else transformers)"
    )
    batch_size: int = Field(64, ge=1, description="sequences decoded together")
    vllm: VLLMConfig = VLLMConfig()
    # With `cluster.backend: ray`: rollout workers beside the learner, each with its own engine.
    workers: int = Field(1, ge=1, description="rollout workers (cluster.backend: ray); each generates whole steps")
    worker_cpus: float = Field(1.0, gt=0.0, description="CPUs Ray reserves for each worker; its torch threads follow")
    worker_gpus: float = Field(0.0, ge=0.0, description="GPUs Ray reserves for each worker (a share, as 0.5, packs two)")
    max_staleness: int = Field(
        0, ge=0, description="policy versions a trained episode may lag the learner; 0: synchronous (the local numbers)"
    )
    in_flight: Literal["finish", "continue"] = Field(
        "finish", description="new weights mid-generation: finish on the old ones, or load them and continue"
    )
    chunk_tokens: int = Field(16, ge=1, description="in_flight: continue: tokens generated between looks for new weights")


class ClusterConfig(_Strict):
    backend: Literal["local", "ray"] = Field("local", description="local: one process; ray: rollout workers as Ray actors")
    address: str | None = Field(None, description="a Ray cluster to join (ray://host:port or auto); default: start one")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the Ray cluster the run starts; default: this machine's")
    timeout_seconds: float = Field(
        300.0, gt=0.0, description="deadline of every call to a worker (a step's generation, a weight load)"
    )
    startup_timeout_seconds: float = Field(600.0, gt=0.0, description="for a worker to start and load its model")
    max_restarts: int = Field(3, ge=0, description="a dead or hung worker is replaced this many times; then the run stops")
    pin_cpus: bool = Field(
        False, description="the learner and each worker on cores of their own (this machine's), so none competes for one"
    )
    weight_sync: Literal["object_store", "collective"] = Field(
        "object_store",
        description="learner -> workers: Ray's object store, or a broadcast group of their own (NCCL on GPUs, else gloo)",
    )
    learners: int = Field(
        0, ge=0, description="0: the learner trains in the process that starts the run; N: N learner ranks as Ray actors"
    )
    learner_cpus: float = Field(1.0, gt=0.0, description="CPUs Ray reserves for each learner rank; its torch threads follow")
    learner_gpus: float = Field(0.0, ge=0.0, le=1.0, description="GPUs Ray reserves for each learner rank (one device a rank)")

    @model_validator(mode="after")
    def _learner_actors_need_ray(self) -> ClusterConfig:
        if self.learners and self.backend != "ray":
            raise ValueError(f"learners={self.learners} needs backend: ray (local trains in this process)")
        if self.learners > 1 and self.pin_cpus:  # the ranks would share the learner's cores, each with all its threads
            raise ValueError(f"pin_cpus pins one learner process; it cannot with learners={self.learners}")
        return self
