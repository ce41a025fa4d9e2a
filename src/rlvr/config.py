"""Every knob of a run, as pydantic models. YAML recipes load into `RunConfig`.

Unknown keys are rejected (`extra="forbid"`) and every validation failure is
turned into a one-line `ConfigError` naming the key, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rlvr.algo_config import (
    CORRECTION_CONFIGS,
    LOSS_CONFIGS,
    CorrectionConfig,
    KLConfig,
    LossConfig,
    PluginCorrectionConfig,
    PluginLossConfig,
    PPOClipLoss,
    TISCorrection,
)
from rlvr.curriculum import CurriculumConfig
from rlvr.data import source_kind
from rlvr.data.source import anchor_prompt_file, hard_verifier, judge_prompt_text
from rlvr.env_config import EnvCommon, EnvConfig, GymEnvConfig, env_config_type
from rlvr.errors import ConfigError, lone_surrogate, parser_limit
from rlvr.length_control import LengthControlConfig
from rlvr.plugins import anchor_plugin, load_plugins
from rlvr.reasoning_diagnostics import DiagnosticsConfig
from rlvr.registry import registered, section_name
from rlvr.rollout_config import ClusterConfig, RolloutConfig
from rlvr.stage_config import STAGE_CONFIGS, Stage, check_stages

# The packaged recipes ship inside the package (package data), so a wheel or a plain `pip install .` finds them
# from any working directory; `recipes/` at the top of the source tree links here.
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
DEFAULT_RECIPE = "default"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(_Strict):
    rank: int = Field(0, ge=0, description="0 = full fine-tuning")
    alpha: float = 32.0
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ModelConfig(_Strict):
    path: str = Field("smollm2-135m", description="'smollm2-135m' (packaged) or a local HF folder")
    lora: LoraConfig = LoraConfig()
    autocast_bf16: bool | Literal["auto"] = Field(
        "auto", description="bf16 autocast for the learner's forward/backward; auto: where the hardware has native bf16"
    )
    gradient_checkpointing: bool = False


class ScoringConfig(_Strict):
    workers: int = Field(
        2, ge=0, description="processes that score completions in parallel; 0 = in the trainer process, without timeouts"
    )
    timeout_seconds: float = Field(30.0, gt=0.0, description="per completion: a verifier that hangs longer scores 0")
    # The reward-hacking probes run on every scored completion (README: Reward-hacking probes).
    on_hack: Literal["flag", "zero"] = Field(
        "flag", description="a completion a probe flags: flag = counted in hack/<probe>/rate only; zero = its reward is 0"
    )
    hack_alarm_rate: float = Field(0.05, ge=0.0, le=1.0, description="warn when a probe's flag rate stays above this")
    hack_alarm_steps: int = Field(5, ge=1, description="... for this many steps in a row")


class JudgeConfig(_Strict):
    """`verifier: judge`: a model grades answers against a rubric prompt, a soft verifier (README: Judge rewards)."""

    model: str = Field("policy", description="policy (the model being trained, as it is now), or a model folder, run, checkpoint")
    prompt: Annotated[str, AfterValidator(judge_prompt_text)] | None = Field(
        None, description="the rubric, text or a .txt/.md file, with {answer}, {question}, {reference}; default: the built-in one"
    )
    max_new_tokens: int = Field(256, ge=1, description="per reply, its reasoning and the verdict line")
    batch_size: int = Field(16, ge=1, description="answers graded together")
    timeout_seconds: float | None = Field(None, gt=0.0, description="per batch; a reply cut here scores 0; default: scoring's")
    check_against: Annotated[str, registered("rlvr.rewards", "VERIFIERS"), AfterValidator(hard_verifier)] | None = Field(
        None, description="a hard verifier also run on the judged answers, for judge/agreement, judge/kappa, ..."
    )
    cache: bool | None = Field(None, description="reuse verdicts per (question, answer); default: on, but off for policy")


class SamplingConfig(_Strict):
    temperature: float = Field(0.7, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="0 = off")
    max_new_tokens: int = Field(96, ge=1)
    min_new_tokens: int = Field(0, ge=0, description="no end-of-turn token before this many (benchmarks: equal lengths)")


class SearchToolConfig(_Strict):
    corpus: list[str] = Field(
        ["wiki"],
        description="wiki (10,033 Wikipedia summaries), env (the environment's own documents), a corpus .jsonl, "
        "or a folder made by `rlvr index build`",
    )
    top_k: int = Field(3, ge=1, description="passages per search")


class PythonToolConfig(_Strict):
    timeout_seconds: float = Field(5.0, gt=0.0, description="per call, wall and CPU")
    memory_mb: int = Field(512, ge=32)
    max_output_chars: int = Field(2000, ge=1)


class MCPServerConfig(_Strict):
    """One MCP server, started over stdio: its tools (all, or those in `tools`) become tools of the run."""

    command: str = Field(description="the program that starts the server (npx, uvx, python, ...)")
    args: list[str] = []
    env: dict[str, str] = Field(
        {}, description="its environment, on top of PATH, HOME, USER, SHELL, TERM and LOGNAME; ${VAR} reads rlvr's own"
    )
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$", description="prefix of its tools' names: <name>_<tool>")
    tools: list[str] | None = Field(None, description="the server's tools to offer, by its own names; default: all")
    timeout_seconds: float = Field(30.0, gt=0.0, description="per call: a call that takes longer is an error the model reads")
    startup_timeout_seconds: float = Field(30.0, gt=0.0, description="to start, answer and list its tools")


class ToolsConfig(_Strict):
    enabled: list[str] | None = Field(None, description="tool names; default: the tools the environment needs (none)")
    max_turns: int = Field(4, ge=1, description="model turns per episode")
    max_result_tokens: int = Field(256, ge=1, description="a longer tool result is cut")
    workers: int = Field(4, ge=1, description="tool calls run in parallel threads")
    collapse_threshold: float = Field(0.05, ge=0.0, le=1.0, description="warn when a tool's call rate stays below this")
    collapse_steps: int = Field(5, ge=1, description="... for this many steps in a row")
    search: SearchToolConfig = SearchToolConfig()
    python: PythonToolConfig = PythonToolConfig()
    mcp: list[MCPServerConfig] = Field([], description="MCP servers (stdio) whose tools join the run's, named or not")

    @model_validator(mode="before")
    @classmethod
    def _moved_modules(cls, data: Any) -> Any:
        if isinstance(data, dict) and "modules" in data:
            raise ValueError("tools.modules is now `plugins:` at the top of the recipe (files or modules, imported first)")
        return data


# Keys that moved into a loss's or a correction's own settings, and where they went.
_MOVED = {
    "clip_low": "algo.loss: {name: ppo_clip, clip_low: ...}",
    "clip_high": "algo.loss: {name: ppo_clip, clip_high: ...}",
    "kl_coef": "algo.kl: {coef: ...}",
    "tis_cap": "algo.correction: {name: tis, cap: ...} (or algo.correction: none)",
}


class AlgoConfig(_Strict):
    advantage: Annotated[str, registered("rlvr.algos", "ADVANTAGES")] = "grpo"
    loss: LossConfig = Field(PPOClipLoss(), description="a name (its defaults) or {name: ..., its own keys}")
    correction: CorrectionConfig = Field(TISCorrection(), description="for a sampler that is not the learner")
    kl: KLConfig = KLConfig()
    aggregation: Literal["token", "sequence", "constant"] = Field(
        "token", description="token: mean over tokens; sequence: mean per sequence; constant: Dr. GRPO"
    )
    overlong_filter: bool = Field(True, description="truncated completions get no gradient")
    dynamic_sampling: bool = Field(False, description="drop groups whose rewards are all equal")
    teacher: str | None = Field(
        None, description="on-policy distillation: the KL term's reference is this model instead of the starting one"
    )

    @model_validator(mode="after")
    def _teacher_needs_the_kl(self) -> AlgoConfig:
        if self.teacher is not None and self.kl.coef == 0:
            raise ValueError("a teacher is the KL term's reference: set algo.kl.coef > 0 (rlvr distill sets 1)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        moved = [key for key in _MOVED if isinstance(data, dict) and key in data]
        if moved:
            raise ValueError(f"{moved[0]} is now a setting of its own: write {_MOVED[moved[0]]}")
        return data


class GuardConfig(_Strict):
    """The spike and divergence guard (`train.guard`); its defaults never fire on a healthy run (README: Spike and
    divergence guard)."""

    window: int = Field(20, ge=2, description="recent optimiser steps in the running median and MAD")
    min_history: int = Field(8, ge=2, description="steps in the window before a spike can be called")
    spike_mads: float | None = Field(
        10.0, gt=0.0, description="skip an update whose loss or pre-clip grad norm is this many MADs above the median; null: off"
    )
    max_rollbacks: int = Field(5, ge=0, description="rollbacks to the last good checkpoint before the run stops; 0: stop at once")
    lr_factor: float = Field(0.1, gt=0.0, lt=1.0, description="each rollback multiplies the learning rate by this, for good")
    collapse_steps: int = Field(
        3, ge=0, description="reward at or below collapse_reward this many steps in a row diverges; 0: off"
    )
    collapse_reward: float = Field(
        0.01, ge=0.0, description="a mean reward at or below this counts as collapsed (a healthy run earns the format reward)"
    )
    armed_reward: float = Field(0.05, description="the collapse check waits until the mean reward has been above this once")
    max_entropy: float | None = Field(None, gt=0.0, description="mean token entropy (nats) above this diverges; null: off")
    max_kl: float | None = Field(None, gt=0.0, description="mean per-token KL to the reference above this diverges; null: off")
    max_mismatch: float | None = Field(
        1.0, gt=0.0, description="mean |log-ratio| per token between learner and sampler above this diverges; null: off"
    )


class TrainConfig(_Strict):
    steps: int = Field(40, ge=0)
    prompts_per_step: int = Field(16, ge=1)
    group_size: int = Field(8, ge=1)
    micro_batch_size: int = Field(16, ge=1, description="sequences per forward/backward")
    epochs: int = Field(1, ge=1, description="PPO epochs over each batch")
    lr: float = Field(1e-5, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    save_every: int = Field(10, ge=1, description="checkpoint every N steps (and at the end)")
    threads: int = Field(0, ge=0, description="torch threads; 0 = torch's default")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the learner runs; auto: CUDA when available")
    optimizer: Annotated[str, registered("rlvr.optimizers", "OPTIMIZERS")] = Field(
        "adamw", description="adamw (fp32 moments), adamw_bf16 (bf16 moments, stochastic rounding), adamw_8bit (bitsandbytes)"
    )
    release_memory: bool = Field(
        False, description="return freed memory to the system at once (glibc): a lower peak RSS, slightly slower steps"
    )
    rank_timeout_seconds: float = Field(
        600.0, gt=0.0, description="with several processes: a rank that does not reach the next step in time ends the run"
    )
    keep_checkpoints: int = Field(
        1, ge=1, description="the N newest good checkpoints kept (a rollback needs one before a divergence)"
    )
    guard: GuardConfig = GuardConfig()
    eval_every: int = Field(
        0, ge=0, description="run the regression suite (eval.suite) every N steps against the starting model; 0: off"
    )


class EvalConfig(_Strict):
    before: bool = True
    after: bool = True
    batch_size: int = Field(100, ge=1)
    max_new_tokens: int | None = Field(None, description="defaults to sampling.max_new_tokens")
    suite: str = Field("regression", description="the suite train.eval_every runs: a packaged name or a suite file")


class SFTConfig(_Strict):
    """`rlvr sft`: supervised fine-tuning on chat traces (`train.prompts_per_step` traces per step)."""

    data: str | None = Field(None, description="chat traces (`messages`) or question/completion pairs: JSONL, CSV, Parquet")
    epochs: float = Field(1.0, gt=0.0, description="passes over the data; the run's train.steps follow from it")
    max_tokens: int = Field(1024, ge=1, description="a trace's tokens after its prompt beyond this are cut")
    turns: Literal["last", "all"] = Field(
        "last", description="last: the assistant turns after the last user message; all: every assistant turn"
    )
    keep_held_out: bool = Field(
        False, description="train on traces of questions the recipe's evaluation holds out too (default: they are left out)"
    )


class RunConfig(_Strict):
    name: str = "default"
    plugins: list[str] = Field(
        [], description="Python files (relative to the recipe) or modules imported first: what they register is valid here"
    )
    seed: int = 0
    output_dir: str = "runs"
    model: ModelConfig = ModelConfig()
    env: EnvConfig = GymEnvConfig()
    sampling: SamplingConfig = SamplingConfig()
    cluster: ClusterConfig = ClusterConfig()
    rollout: RolloutConfig = RolloutConfig()
    scoring: ScoringConfig = ScoringConfig()
    judge: JudgeConfig = JudgeConfig()
    tools: ToolsConfig = ToolsConfig()
    algo: AlgoConfig = AlgoConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    sft: SFTConfig = SFTConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    curriculum: CurriculumConfig = CurriculumConfig()
    length_control: LengthControlConfig = LengthControlConfig()
    stages: Annotated[list[Stage], AfterValidator(check_stages)] = Field(
        [], description="a pipeline: sft, rl, rejection_sample and distill stages run in order, each from the model before it"
    )
    report_to: list[Annotated[str, registered("rlvr.trackers", "TRACKERS")]] = Field(
        [], description="experiment trackers that get every metrics.jsonl row and the config: tensorboard, wandb, trackio, mlflow"
    )

    @field_validator("length_control")
    @classmethod
    def _length_control_is_paid(cls, length_control: LengthControlConfig, info: ValidationInfo) -> LengthControlConfig:
        env = info.data.get("env")  # validated first: it comes before `length_control`
        if env is not None:
            length_control.check_paid(env.rewards)
        return length_control

    @field_validator("rollout")
    @classmethod
    def _workers_need_a_cluster(cls, rollout: RolloutConfig, info: ValidationInfo) -> RolloutConfig:
        cluster = info.data.get("cluster")  # validated first: it comes before `rollout`
        if cluster is not None and cluster.backend == "local":  # one process: nothing generates beside the learner
            for key, value, default in (("workers", rollout.workers, 1), ("max_staleness", rollout.max_staleness, 0)):
                if value != default:
                    raise ValueError(f"{key}={value} needs cluster.backend: ray (local generates in the learner)")
        return rollout

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def eval_sampling(self) -> SamplingConfig:
        """Training's sampling settings with the evaluation's generation limit (`eval.max_new_tokens`, if set)."""
        return self.sampling.model_copy(update={"max_new_tokens": self.eval.max_new_tokens or self.sampling.max_new_tokens})


_TAGGED_UNIONS: dict[tuple[str, ...], Callable[[str], type[BaseModel]]] = {
    ("env",): env_config_type,
    ("algo", "loss"): lambda tag: LOSS_CONFIGS.get(tag, PluginLossConfig),
    ("algo", "correction"): lambda tag: CORRECTION_CONFIGS.get(tag, PluginCorrectionConfig),
    ("stages", "*"): lambda tag: STAGE_CONFIGS[tag],
}


def _describe(error: dict, root: type[BaseModel]) -> str:
    """One validation error as `key: what is wrong`. A tagged union (`env`, `algo.loss`, `algo.correction`) puts its
    tag in the error's location; the key a user wrote has none, so the tag picks the model and is left out."""
    parts = list(error["loc"])
    model: type[BaseModel] | None = root
    shown: list[str] = []
    index = 0
    while index < len(parts):
        part = parts[index]
        shown.append(str(part) if str(part).isprintable() else repr(str(part)))  # a key with a line break: one line still
        index += 1
        if index == len(parts):
            continue  # the failing key itself
        pattern = tuple("*" if isinstance(p, int) else str(p) for p in parts[:index])  # a list item's union: `stages.*`
        if pattern in _TAGGED_UNIONS and isinstance(parts[index], str):
            model = _TAGGED_UNIONS[pattern](parts[index])
            index += 1
            continue
        if isinstance(part, int) or model is None:
            continue  # a list index: the list's item model is already in hand
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if get_origin(annotation) is list:
            (annotation,) = get_args(annotation)
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    loc = ".".join(shown)
    if error["type"] == "missing":
        return f"{loc}: required"
    if error["type"] == "extra_forbidden" and model is not None:
        return f"{loc}: unknown key (valid keys: {', '.join(model.model_fields)})"
    message = error["msg"].removeprefix("Value error, ")
    value = error["input"]
    whole = isinstance(value, dict) or (isinstance(value, list) and any(isinstance(item, dict) for item in value))
    got = "" if whole else f" (got {value!r})"  # a whole section (or a list of them) says nothing
    return f"{loc}: {message}{got}"


def _unwritable(data: Any) -> str | None:
    """`key: what is wrong` for a value no config.yaml can be written of, if any: one that holds itself (YAML's
    `a: &x [*x]`), or text with a lone surrogate (a `"\\ud800"` escape), which `Any` fields validate all the same.
    Iterative, and each shared value walked once, however deep or often it is aliased."""
    ancestors: set[int] = set()  # the values on the path to the one in hand
    walked: set[int] = set()
    stack: list[tuple[Any, str, bool]] = [(data, "", False)]
    while stack:
        node, key, leaving = stack.pop()
        if leaving:
            ancestors.discard(id(node))
            walked.add(id(node))
        elif isinstance(node, str) and lone_surrogate(node) is not None:
            return f"{key}: not Unicode text (a lone surrogate)"
        elif isinstance(node, dict | list) and id(node) not in walked:
            if id(node) in ancestors:
                return f"{key}: holds itself (a YAML alias inside its own anchor)"
            ancestors.add(id(node))
            stack.append((node, key, True))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for name, item in items:
                shown = str(name) if str(name).isprintable() else repr(str(name))  # one line, whatever the key holds
                if isinstance(name, str) and lone_surrogate(name) is not None:
                    return f"{key + '.' if key else ''}{shown}: not Unicode text (a lone surrogate)"
                stack.append((item, f"{key}.{shown}" if key else shown, False))
    return None


def parse_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """The validated config; its `plugins` are imported first, so the names they register are valid choices."""
    plugins = data.get("plugins", [])
    if not isinstance(plugins, list):
        raise ConfigError(f"{source}: plugins: expected a list of files (.py) or module names (got {plugins!r})")
    if (problem := _unwritable(data)) is not None:
        raise ConfigError(f"{source}: {problem}")
    load_plugins(plugins)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(_describe(e, RunConfig) for e in exc.errors())
        raise ConfigError(f"{source}: {details}") from None


def recipe_path(recipe: str | None) -> Path:
    """A recipe file path, or the name of a packaged recipe (`default`, ...)."""
    return packaged_or_file(recipe or DEFAULT_RECIPE, RECIPES_DIR, "recipe")


def packaged_or_file(name: str, folder: Path, kind: str) -> Path:
    """A `kind` file (a path ending in .yaml or .yml), or the name of one packaged in `folder` (a recipe, a suite)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"{name}: {kind} file not found")
        return path
    packaged = folder / f"{name}.yaml"
    if not packaged.exists():
        choices = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise ConfigError(f"{name}: no such {kind} file or packaged {kind} (packaged: {choices})")
    return packaged


def read_yaml_mapping(path: Path, shape: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping; what is wrong with it is one line naming the file (and the line), and
    `shape` says what the mapping should be."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, or read as YAML but not buildable (see set_override)
        raise ConfigError(f"{path}: invalid YAML: {parser_limit(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {shape}")
    return data


# JSON writes a character beyond the 16-bit range as two escapes (`json.dumps("😀")` is "\ud83d\ude00"), which
# YAML reads as two lone surrogates; YAML's own escape for it is \U0001f600.
_SURROGATE_PAIR = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", re.IGNORECASE)


def _astral_escape(match: re.Match[str]) -> str:
    high, low = int(match[1], 16), int(match[2], 16)
    return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}"


def set_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (so `1e-5`, `true`, `[1, 2]` work)."""
    key, sep, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or "" in parts or not key.isprintable():  # `=1`, `train..lr=1`, a line break: a key that names no setting
        raise ConfigError(f"--set {assignment!r}: expected key=value, the key a dotted path such as train.lr")
    *parents, leaf = parts
    node: Any = data
    for depth, part in enumerate(parents):
        if isinstance(node, list):  # an item of a list of sections, by index: `stages.1.set={train.steps: 30}`
            node = _list_item(node, part, ".".join(parts[:depth]))
            continue
        child = node.setdefault(part, {})
        if not isinstance(child, dict | list):
            raise ConfigError(f"--set {key}: {part} is not a section")
        node = child
    if isinstance(node, list):
        raise ConfigError(f"--set {key}: {'.'.join(parents)} is a list: set one of its items' keys, or the whole list")
    # YAML reads `1e-5` as a string; pydantic's lax mode turns it into the float the field wants.
    try:
        node[leaf] = yaml.safe_load(_SURROGATE_PAIR.sub(_astral_escape, raw))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]  # a reader's error has no `problem`
        raise ConfigError(f"--set {key}: invalid YAML value: {problem}") from None
    except (ValueError, RecursionError) as exc:  # read as YAML but not buildable: a date like 2024-13-01, a huge integer
        raise ConfigError(f"--set {key}: invalid YAML value: {parser_limit(exc)}") from None


def _list_item(items: list, index: str, where: str) -> dict:
    if not index.isdigit() or int(index) >= len(items):
        raise ConfigError(f"--set {where}.{index}: {where} has items 0 to {len(items) - 1}")
    item = items[int(index)]
    if not isinstance(item, dict):
        raise ConfigError(f"--set {where}.{index}: not a section")
    return item


def anchor_source_paths(data: dict[str, Any], folder: Path) -> None:
    """A relative data path in a recipe is relative to the recipe's folder, so a recipe and its data move together
    and run from any working directory. (Paths given with --set stay relative to the working directory.)"""
    sft = data.get("sft")
    if isinstance(sft, dict) and isinstance(sft.get("data"), str) and not Path(sft["data"]).is_absolute():
        sft["data"] = str((folder / sft["data"]).resolve())
    evaluation = data.get("eval")
    suite = evaluation.get("suite") if isinstance(evaluation, dict) else None
    if isinstance(suite, str) and Path(suite).suffix in (".yaml", ".yml") and not Path(suite).is_absolute():
        evaluation["suite"] = str((folder / suite).resolve())  # a suite file beside the recipe
    env = data.get("env")
    if isinstance(env, dict) and isinstance(env.get("demos"), str) and not Path(env["demos"]).is_absolute():
        env["demos"] = str((folder / env["demos"]).resolve())
    # The folder a verifiers environment's module is imported from, likewise.
    if isinstance(env, dict) and env.get("name") == "verifiers" and isinstance(env.get("path"), str):
        env["path"] = str((folder / env["path"]).resolve())
    stages = data.get("stages")
    named = {stage.get("name") for stage in stages if isinstance(stage, dict)} if isinstance(stages, list) else set()
    for stage in stages if isinstance(stages, list) else []:
        # A stage's traces file, unless it names an earlier stage (whose traces the pipeline passes on).
        traces = stage.get("data") if isinstance(stage, dict) else None
        if isinstance(traces, str) and traces not in named and not Path(traces).is_absolute():
            stage["data"] = str((folder / traces).resolve())
    sources = env.get("sources") if isinstance(env, dict) else None
    anchor_prompt_file(data.get("judge"), "prompt", folder)  # a rubric prompt file, likewise
    for source in sources if isinstance(sources, list) else []:
        anchor_prompt_file(source, "judge_prompt", folder)
        if not isinstance(source, dict) or not isinstance(source.get("path"), str):
            continue  # validation reports it
        if source_kind(source["path"]) == "file" and not Path(source["path"]).is_absolute():
            source["path"] = str((folder / source["path"]).resolve())


# Sections chosen by their `name`: the keys every choice shares (kept when the name changes), and the default name.
_NAMED_SECTIONS: dict[tuple[str, ...], tuple[set[str], str]] = {
    ("env",): (set(EnvCommon.model_fields) - {"name"}, "gym"),
    ("algo", "loss"): (set(), "ppo_clip"),
    ("algo", "correction"): (set(), "tis"),
}


def _section(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _switch_named_sections(data: dict[str, Any], recipe: dict[str, Any], overrides: Sequence[str]) -> None:
    """`--set env.name=X` (or `algo.loss.name=X`, ...) replaces what the recipe chose: the keys only the old choice
    reads (the gym task, ppo_clip's clip range) go, the ones every choice shares (an environment's prompt, rewards,
    held-out size and seeds) stay, and the `--set` assignments under the section apply again, to the new choice."""
    keys = [tuple(assignment.partition("=")[0].strip().split(".")) for assignment in overrides]
    for path, (shared, default) in _NAMED_SECTIONS.items():
        before, after = _section(recipe, path), _section(data, path)
        if section_name(after, default) == section_name(before, default) or any(
            path[: len(k)] == k for k in keys if len(k) < len(path)
        ):
            continue  # the same choice, or a section above it written whole (`--set algo={...}`): nothing to switch
        rebuilt: dict[str, Any] = {path[-1]: {k: v for k, v in before.items() if k in shared} if isinstance(before, dict) else {}}
        prefix = ".".join(path)
        for assignment in overrides:
            key = assignment.partition("=")[0].strip()
            if key == prefix or key.startswith(prefix + "."):
                set_override(rebuilt, assignment.removeprefix(".".join(path[:-1]) + "." if len(path) > 1 else ""))
        parent = _section(data, path[:-1]) if len(path) > 1 else data
        parent[path[-1]] = rebuilt[path[-1]]


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> None:
    """`--set` assignments applied to a config's mapping in order, a section chosen by `name` switched as a whole."""
    before = copy.deepcopy(data)
    for assignment in overrides:
        set_override(data, assignment)
    _switch_named_sections(data, before, overrides)


def load_config(recipe: str | None = None, overrides: list[str] | tuple[str, ...] = (), plugins: Sequence[str] = ()) -> RunConfig:
    """A recipe (a file or a packaged name) with `--set` overrides applied; `plugins` (from `--plugin`, relative to the
    working directory) are imported after the recipe's own."""
    path = recipe_path(recipe)
    data = read_yaml_mapping(path, "a recipe must be a mapping of sections")
    anchor_source_paths(data, path.parent)
    if isinstance(data.get("plugins"), list):
        data["plugins"] = [anchor_plugin(spec, path.parent) if isinstance(spec, str) else spec for spec in data["plugins"]]
    apply_overrides(data, overrides)
    if plugins or isinstance(data.get("plugins"), list):
        # The recipe's own are anchored to its folder above; those given with --set or --plugin, to the working
        # directory: every file is absolute in config.yaml, so a resume from another folder finds it.
        listed = data.get("plugins") if isinstance(data.get("plugins"), list) else []
        data["plugins"] = [anchor_plugin(spec, Path.cwd()) if isinstance(spec, str) else spec for spec in [*listed, *plugins]]
    return parse_config(data, source=str(path))
