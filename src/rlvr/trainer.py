"""The training loop: sample -> score -> advantage -> update -> sync. It only wires parts together."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from rlvr.algos import (
    ADVANTAGES,
    KL_ESTIMATORS,
    Objective,
    Stat,
    StatSums,
    drop_uniform_groups,
    loss_normalizer,
    mask_truncated,
)
from rlvr.checkpoint import (
    checkpoints,
    drop_checkpoints_after,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_model_folder,
)
from rlvr.config import RunConfig
from rlvr.curriculum import Curriculum, Draw
from rlvr.distributed import Ranks, full_tensor, shard_module
from rlvr.envs import Environment, make_env
from rlvr.errors import ConfigError, DivergenceError
from rlvr.guard import Guard, Verdict
from rlvr.hardware import cpu_description, learner_autocast, resolve_device
from rlvr.learner import CompletionLogprobs, TokenBatch, completion_logprobs
from rlvr.memory import PhaseMemory, release_freed_memory
from rlvr.metrics import MetricsLog
from rlvr.models import decoder_layers, inference_weights, load_policy, load_reference, load_tokenizer
from rlvr.optimizers import make_optimizer, step_freeing_gradients
from rlvr.reasoning_diagnostics import reasoning_metrics, split_thinking
from rlvr.rewards.probes import HackMonitor
from rlvr.rollout import RolloutEngine, SamplingParams, make_engine
from rlvr.rollout.judge import JUDGE_CACHE, make_judge
from rlvr.rollout.sampler import make_sampler
from rlvr.scoring import Scorer
from rlvr.seeds import derive_seed, seed_everything
from rlvr.step_metrics import (
    calibration_metrics,
    difficulty_metrics,
    effort_metrics,
    subset_metrics,
    tool_metrics,
    verifier_metrics,
)
from rlvr.tools.monitor import CollapseMonitor
from rlvr.types import Episode, Problem

logger = logging.getLogger(__name__)


class Trainer:
    def __init__(self, config: RunConfig, ranks: Ranks | None = None) -> None:
        self.config = config
        t = config.train
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.release_memory and not release_freed_memory():
            logger.warning("train.release_memory: this C library has no glibc mallopt; memory is released as usual")
        self.ranks = ranks or Ranks.from_environment(t.rank_timeout_seconds)
        self.device = resolve_device(t.device, self.ranks.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if t.prompts_per_step < self.ranks.world_size:
            world = self.ranks.world_size
            raise ConfigError(f"train.prompts_per_step={t.prompts_per_step}: fewer prompts than the {world} ranks")
        self.ranks.join(self.device)
        seed_everything(config.seed)
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(config.model.path)
        self.policy = load_policy(config.model.path, config.model.lora).to(self.device)
        self.policy.train()
        if config.model.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.learner_precision = learner_autocast(config.model.autocast_bf16, self.device.type)
        self.objective = Objective(config.algo)
        reference = load_reference(self._reference_path()) if self.objective.needs_reference else None
        self.reference = reference.to(self.device) if reference is not None else None
        self.env: Environment = make_env(config.env)
        self.hack_monitor = HackMonitor(config.scoring.hack_alarm_rate, config.scoring.hack_alarm_steps)
        self.mixed_subsets = len(self.env.subsets()) > 1  # fixed by the data: asked once, not every step
        cur = config.curriculum
        self.curriculum = Curriculum(cur, config.seed, self.env.train_problems) if cur.enabled else None
        self.step_problems: list[Problem] = []  # the step's prompts, every rank's (episode.group indexes them)
        self.draw: Draw | None = None  # what the curriculum skipped to find them
        self.engine: RolloutEngine = make_engine(config.rollout, self.policy, self.tokenizer)
        if self.ranks.distributed and self.engine.shares_weights:
            # A sharded policy gathers its weights in each forward, in step with the other ranks, but each rank's
            # generation runs its own number of forwards: the engine decodes with a whole copy of its own (the
            # plain model, into which each sync loads the learner's weights with any LoRA adapters merged).
            replica = load_policy(config.model.path).to(self.device)
            self.engine = make_engine(config.rollout, replica, self.tokenizer)
            self.engine.shares_weights = False
        judge = make_judge(config, self.engine, self.tokenizer, config.run_dir / JUDGE_CACHE)  # `verifier: judge`
        scoring = config.scoring
        self.scorer = Scorer(self.env.rubric, scoring.workers, scoring.timeout_seconds, scoring.on_hack, judge)
        self.sampler, self.chat, self.tool_names = make_sampler(self.engine, self.tokenizer, config, self.env)
        self.tool_monitor = CollapseMonitor(self.tool_names, config.tools.collapse_threshold, config.tools.collapse_steps)
        self.learner = CompletionLogprobs(self.policy)
        if self.ranks.distributed:
            shard_module(self.learner, decoder_layers(self.policy))
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, t)
        self.memory = PhaseMemory(self.device)
        self.guard = Guard(t.guard)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.spikes: list[str] = []  # the last update's skipped spikes, for the step's warnings
        self.advantage_fn = ADVANTAGES[config.algo.advantage]
        # The learner scores tokens under the distribution they were drawn from: the sampler's temperature.
        self.learner_temperature = config.sampling.temperature
        self.step = 0
        self.score_seconds = 0.0

    def _reference_path(self) -> str:
        """The KL term's reference: the starting model, or the teacher of on-policy distillation, which must read the
        student's tokens as the student does (the same vocabulary)."""
        teacher = self.config.algo.teacher
        if teacher is None:
            return self.config.model.path
        if load_tokenizer(teacher).get_vocab() != self.tokenizer.get_vocab():
            raise ConfigError(f"algo.teacher: {teacher}: its tokenizer differs from the student's; a teacher must share it")
        return teacher

    def _lr_factor(self, step: int) -> float:
        """Warmup, times what the guard's rollbacks left of the learning rate (1.0 until one happens: exact)."""
        return min(1.0, (step + 1) / (self.config.train.warmup_steps + 1)) * self.guard.state.lr_scale

    def _apply_lr(self) -> None:
        """Set the optimiser's learning rate from the scheduler's position now, not at its next step (a rollback has
        just changed the scale)."""
        lrs = [base * self._lr_factor(self.scheduler.last_epoch) for base in self.scheduler.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self.scheduler._last_lr = lrs  # what get_last_lr() reports, the metrics' `lr`

    def precision(self) -> dict[str, str]:
        """What runs where and in which dtype on this machine, and why: for the run log, config.yaml and summary.json."""
        device = str(self.device) if self.device.type == "cpu" else f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        ranks = f", {self.ranks.world_size} ranks" if self.ranks.distributed else ""
        return {
            "cpu": cpu_description(),
            "device": f"{device}{ranks}, optimizer {self.config.train.optimizer}",
            "rollout": f"{self.config.rollout.engine} -> {type(self.engine).__name__}, {self.engine.precision}",
            "learner": str(self.learner_precision),
        }

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.learner_precision.dtype == "bfloat16")

    # ---- one step -------------------------------------------------------
    def sampling(self, step: int) -> SamplingParams:
        seed = derive_seed(self.config.seed, step)
        if self.ranks.distributed:  # each rank draws its own noise
            seed = derive_seed(seed, self.ranks.rank)
        return SamplingParams.from_config(self.config.sampling, seed)

    def draw_problems(self, step: int) -> tuple[list[Problem], Draw | None]:
        """The step's prompts (every rank's), and what the curriculum skipped to find them."""
        t = self.config.train
        draw = None
        if self.curriculum is not None:  # its stream position outlives a rollback, like the data skip below
            draw = self.curriculum.draw(t.prompts_per_step)
            problems = draw.problems
        else:  # the data position skips the windows a rollback abandoned: their prompts are never trained on again
            problems = self.env.train_problems((step + self.guard.state.data_skip) * t.prompts_per_step, t.prompts_per_step)
        if self.config.length_control.enabled:  # each prompt states the effort it drew
            problems = [self.config.length_control.draw(p, self.config.seed, step, i) for i, p in enumerate(problems)]
        return problems, draw

    def prompt_ids(self, problems: list[Problem]) -> list[list[int]]:
        return [self.chat.prompt_ids(self.env.messages(problem)) for problem in problems]

    def rollout(self, step: int) -> list[Episode]:
        """This rank's share of the step's prompts, sampled and scored; `episode.group` numbers the step's prompts."""
        problems, self.draw = self.draw_problems(step)
        self.step_problems = problems
        mine = self.ranks.share(len(problems))
        prompts = self.prompt_ids(problems[mine.start : mine.stop])
        size = self.config.train.group_size
        episodes = self.sampler.generate([p for p in prompts for _ in range(size)], self.sampling(step))
        for index, episode in enumerate(episodes):
            episode.group = mine.start + index // size
        self.score(episodes, problems)
        return episodes

    def score(self, episodes: list[Episode], problems: list[Problem]) -> None:
        """Rewards for sampled episodes (`episode.group` indexes `problems`)."""
        started = time.perf_counter()
        thinking = None
        if self.config.length_control.enabled:  # the length reward and the effort metrics measure the thinking
            thinking = [self._count_tokens(split_thinking(e.text)[0]) for e in episodes]
            for episode, tokens in zip(episodes, thinking):
                episode.meta["thinking_tokens"] = tokens
        max_tokens = self.config.sampling.max_new_tokens
        self.scorer.score_episodes(episodes, [problems[e.group] for e in episodes], max_tokens, thinking)
        self.score_seconds = time.perf_counter() - started

    def assign_advantages(self, episodes: list[Episode]) -> list[Episode]:
        """Group-relative advantages, then the filters that decide what carries gradient."""
        size = self.config.train.group_size
        kl = self.config.algo.kl
        shaped = [e.reward - kl.coef * e.meta["kl"] if kl.in_reward and kl.coef > 0 else e.reward for e in episodes]
        rewards = torch.tensor(shaped, dtype=torch.float).view(-1, size)
        for episode, advantage in zip(episodes, self.advantage_fn(rewards).flatten().tolist()):
            episode.advantage = advantage
        groups = [episodes[i : i + size] for i in range(0, len(episodes), size)]
        if self.config.algo.dynamic_sampling:
            groups = drop_uniform_groups(groups)
        kept = [e for group in groups for e in group]
        if self.config.algo.overlong_filter:
            mask_truncated(kept)
        return [e for e in kept if any(e.loss_mask)]

    def micro_batches(self, episodes: list[Episode]) -> list[TokenBatch]:
        """A group stays together (packed into one row, its prompt computed once)."""
        size = self.config.train.micro_batch_size
        ordered = sorted(episodes, key=lambda e: (len(e.prompt_ids), e.group, e.num_tokens))
        pad = self.tokenizer.pad_token_id
        return [TokenBatch.from_episodes(ordered[i : i + size], pad) for i in range(0, len(ordered), size)]

    def own_batches(self, episodes: list[Episode]) -> list[tuple[TokenBatch, float]]:
        """This rank's micro-batches of the step's trained episodes (the groups it sampled), each with its weight in
        the loss. Sharded weights are gathered in every forward, so all ranks run as many micro-batches: a rank
        with fewer pads with copies weighted 0, which compute and add nothing."""
        prompts = self.config.train.prompts_per_step
        shares = [[e for e in episodes if self.ranks.owner(e.group, prompts) == r] for r in range(self.ranks.world_size)]
        size = self.config.train.micro_batch_size
        count = max(-(-len(share) // size) for share in shares)
        batches = [(batch, 1.0) for batch in self.micro_batches(shares[self.ranks.rank])]
        filler = batches[0][0] if batches else self.micro_batches(episodes[:1])[0]
        return batches + [(filler, 0.0)] * (count - len(batches))

    def update(self, episodes: list[Episode]) -> dict[str, float]:
        """Epochs over the step's batch (every rank's episodes; each rank trains on its own): one optimiser step per
        epoch, micro-batches accumulate. What is optimised is the objective's business (`rlvr.algos.objective`); this
        loop only feeds it log-probs."""
        cfg, t = self.config, self.config.train
        self.spikes = []
        if not episodes:  # every episode was filtered out: nothing to learn from this batch
            return {"loss": 0.0, "grad_norm": 0.0, "entropy": 0.0, "skipped_update": 1.0}
        # The normaliser counts the whole batch, on every rank: the ranks' losses add up to the batch's loss.
        num_tokens = float(sum(sum(e.loss_mask) for e in episodes))
        normalizer = loss_normalizer(num_tokens, len(episodes), cfg.algo.aggregation, cfg.sampling.max_new_tokens)
        batches = [(batch.to(self.device), weight) for batch, weight in self.own_batches(episodes)]
        stats, loss_sum, grad_norms, skipped = StatSums(), 0.0, [], 0
        proximal: list[torch.Tensor] = []  # the learner's log-probs before this update, per micro-batch
        for epoch in range(t.epochs):
            self.optimizer.zero_grad(set_to_none=True)
            epoch_loss = 0.0
            for index, (batch, weight) in enumerate(batches):
                with self.autocast():
                    logprobs, entropy = self.learner(batch, self.learner_temperature, epoch == 0)
                    ref = self._reference_logprobs(batch) if self.objective.kl is not None else None
                if epoch == 0:  # the weights are still those that sampled: their log-probs are the proximal policy's
                    proximal.append(logprobs.detach())
                    if weight:
                        stats.add({"entropy": Stat(entropy)}, batch.loss_mask)
                out = self.objective(
                    logprobs, batch.old_logprobs, proximal[index], batch.advantages, batch.loss_mask, ref, batch.version_gap
                )
                loss = self.objective.reduce(out.per_token, batch.loss_mask, normalizer) * weight
                # FSDP averages the ranks' gradients; the batch's gradient is their sum (one rank: x 1, exact).
                (loss * self.ranks.world_size).backward()
                if weight:
                    epoch_loss += loss.item()
                    stats.add(out.stats, batch.loss_mask)
            loss_sum += epoch_loss
            grad_norm = float(full_tensor(torch.nn.utils.clip_grad_norm_(self.params, t.max_grad_norm)))  # pre-clip
            grad_norms.append(grad_norm)
            # The norm of the whole gradient and the loss summed over ranks: every rank decides alike.
            spike = self.guard.spike({"grad_norm": grad_norm, "loss": sum(self.ranks.gather(epoch_loss))})
            if spike is not None:  # dropped: the zero_grad below or at the next epoch
                self.spikes.append(spike)
            elif np.isfinite(grad_norm):
                step_freeing_gradients(self.optimizer)
            else:  # a non-finite gradient would poison the weights: skip this batch
                skipped += 1
        # Gradients are not needed until the next update: free them before the next rollout.
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        parts = self.ranks.gather((loss_sum, stats))
        loss_sum = sum(part[0] for part in parts)
        stats = StatSums.merged([part[1] for part in parts])
        return {**stats.result(), "loss": loss_sum / t.epochs, "grad_norm": float(np.mean(grad_norms)), "skipped_update": skipped}

    @torch.no_grad()
    def _reference_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        # A whole copy on every rank, never sharded: it only runs forwards, and the ranks' counts of them may differ.
        return completion_logprobs(self.reference, batch, self.learner_temperature)[0]

    def _sequence_kl(self, episodes: list[Episode]) -> None:
        """For a KL folded into the reward: each episode's summed KL to the reference (`meta["kl"]`), measured on the
        sampler's own log-probs. The advantages see reward - coef x KL; the reward itself (what the metrics, the
        curves and dynamic sampling read) stays the verifiers' score."""
        kl = KL_ESTIMATORS[self.config.algo.kl.estimator]
        for start in range(0, len(episodes), self.config.train.micro_batch_size):
            chunk = episodes[start : start + self.config.train.micro_batch_size]
            batch = TokenBatch.from_episodes(chunk, self.tokenizer.pad_token_id).to(self.device)
            with self.autocast():
                per_sequence = (kl(batch.old_logprobs, self._reference_logprobs(batch)) * batch.loss_mask).sum(-1)
            for episode, value in zip(chunk, per_sequence.tolist()):
                episode.meta["kl"] = value

    def sync_weights(self) -> None:
        """Hand the learner's weights to an engine that keeps its own copy (sharded weights gathered whole)."""
        if not self.engine.shares_weights:
            self.engine.update_weights((name, full_tensor(tensor)) for name, tensor in inference_weights(self.policy))

    def train_step(self, step: int) -> dict[str, float]:
        started = time.perf_counter()
        self.step_problems, self.draw = [], None  # what this step's rollout draws, never a step before's
        with self.memory.phase("rollout"):
            local = self.rollout(step)
            if self.config.algo.kl.in_reward and self.reference is not None:
                self._sequence_kl(local)
        generated = time.perf_counter()
        self.ranks.barrier(f"step {step + 1}: rollouts")
        episodes = [episode for part in self.ranks.gather(local) for episode in part]  # the whole batch, on every rank
        trained_on = self.assign_advantages(episodes)
        notices = []
        if self.curriculum is not None and self.draw is not None:  # every rank observes the same, gathered episodes
            promotion = self.curriculum.observe(self.step_problems, episodes)
            notices = [promotion] if promotion else []
        self.engine.sleep()  # colocated on a GPU: the update gets the memory generation held
        with self.memory.phase("train"):
            stats = self.update(trained_on)
        with self.memory.phase("sync"):
            self.sync_weights()
        finished = time.perf_counter()
        tokens = sum(e.num_tokens for e in episodes)
        metrics = {
            "step": step + 1,
            "reward": float(np.mean([e.reward for e in episodes])),
            **{f"reward/{name}": float(np.mean([e.rewards[name] for e in episodes])) for name in episodes[0].rewards},
            "accuracy": float(np.mean([e.rewards["correct"] == 1.0 for e in episodes])),
            **verifier_metrics(episodes),
            "response_length": tokens / len(episodes),
            "truncated_rate": float(np.mean([e.truncated for e in episodes])),
            "episodes_trained": len(trained_on),
            "generated_tokens": tokens,  # the step's compute, as a pipeline's report adds it up
            "trained_tokens": sum(sum(e.loss_mask) for e in trained_on),
            **stats,
            "lr": self.scheduler.get_last_lr()[0],
            "guard/nonfinite_weights": self._nonfinite_weights(),
            **self.guard.metrics(),
            "tokens_per_second": tokens / (finished - started),
            "generate_tokens_per_second": tokens / (generated - started),
            "generate_seconds": generated - started,  # sampling and scoring (rank 0's)
            "score_seconds": self.score_seconds,
            "train_seconds": finished - generated,
            "step_seconds": finished - started,
            **self.memory.metrics(),
            **subset_metrics(episodes, mixed=self.mixed_subsets),
            **difficulty_metrics(episodes, self.step_problems),
            **effort_metrics(episodes, self.step_problems),
            **(calibration_metrics(episodes) if self.config.env.confidence else {}),
            **(self.curriculum.metrics(self.draw) if self.curriculum is not None and self.draw is not None else {}),
            **tool_metrics(episodes, self.tool_names, per_subset=self.mixed_subsets),
            **reasoning_metrics([e.text for e in episodes], self._count_tokens, self.config.diagnostics),
            **({"kl_in_reward": float(np.mean([e.meta["kl"] for e in episodes]))} if "kl" in episodes[0].meta else {}),
        }
        warnings = [f"step {step + 1}: update skipped: {spike}" for spike in self.spikes] + self.tool_monitor.update(metrics)
        warnings += self.hack_monitor.update(metrics)
        if warnings:
            metrics["warnings"] = warnings
        if notices:
            metrics["notices"] = notices
        return metrics

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids) if text else 0

    def _nonfinite_weights(self) -> int:
        """Non-finite trained weights, over every rank's shard."""
        local = sum(int((~torch.isfinite(getattr(p, "_local_tensor", p).detach())).sum()) for p in self.params)
        return sum(self.ranks.gather(local))

    # ---- the loop -------------------------------------------------------
    def checkpoint_dir(self) -> Path:
        return self.config.run_dir / "checkpoints"

    def resume(self) -> bool:
        path = latest_checkpoint(self.checkpoint_dir())
        if path is None:
            return False
        self._load(path)
        return True

    def _load(self, path: Path, rollback: bool = False) -> None:
        """Weights, optimiser, scheduler, RNG and the guard as `path` saved them; a rollback keeps what outlives it."""
        state = load_checkpoint(path, self.policy, self.optimizer, self.ranks)
        self.scheduler.load_state_dict(state["scheduler"])
        self.guard.load_state_dict(state.get("guard"), keep_persistent=rollback)
        monitors = state.get("monitors", {})
        self.hack_monitor.load_state_dict(monitors.get("hacks"))
        self.tool_monitor.load_state_dict(monitors.get("tools"))
        if self.curriculum is not None and not rollback:  # a rollback keeps the stream position and pass rates
            self.curriculum.load_state_dict(state.get("curriculum"))
        self.load_extra_state(state, rollback)
        self._apply_lr()
        self.step = state["step"]
        self.sync_weights()

    def extra_state(self) -> dict[str, Any]:
        """What a subclass adds to the checkpoint (the asynchronous trainer: the prompts in flight)."""
        return {}

    def load_extra_state(self, state: dict[str, Any], rollback: bool) -> None:
        """Restore `extra_state` from a checkpoint's state (a rollback's, when `rollback`)."""

    def save(self) -> None:
        t = self.config.train
        monitors = {"hacks": self.hack_monitor.state_dict(), "tools": self.tool_monitor.state_dict()}
        state = {"scheduler": self.scheduler.state_dict(), "guard": self.guard.state_dict(), "monitors": monitors}
        if self.curriculum is not None:
            state["curriculum"] = self.curriculum.state_dict()
        state.update(self.extra_state())
        keep, suspect = t.keep_checkpoints, self.guard.suspect_from()
        save_checkpoint(
            self.checkpoint_dir(), self.step, self.policy, self.optimizer, state, self.tokenizer, self.ranks, keep, suspect
        )

    def roll_back(self, verdict: Verdict, log: MetricsLog | None) -> None:
        """Back to the newest checkpoint written before the weights that diverged: a lower learning rate from now on,
        and the data window since that checkpoint skipped. Beyond `max_rollbacks`, or with no such checkpoint, the
        run stops with one line naming the check."""
        cfg = self.config.train.guard
        failed = f"step {self.step}: {verdict.check}: {verdict.detail}"
        if self.guard.state.rollbacks >= cfg.max_rollbacks:
            raise DivergenceError(f"{failed}; train.guard.max_rollbacks={cfg.max_rollbacks} rollbacks spent")
        good = [step for step, _ in checkpoints(self.checkpoint_dir()) if step < verdict.bad_weights]
        target = self.ranks.gather(good[-1] if good else None)[0]  # rank 0's folder decides for every rank
        if target is None:
            raise DivergenceError(f"{failed}; no checkpoint before step {verdict.bad_weights} to roll back to")
        diverged_at, position = self.step, self.guard.state.data_skip
        self.guard.rolled_back()
        self.guard.state.data_skip += diverged_at - target  # target's step now draws what the step after diverged_at would
        self._load(self.checkpoint_dir() / f"step-{target:06d}", rollback=True)
        if self.ranks.main:  # before saving: keep_checkpoints must count only checkpoints that stay
            drop_checkpoints_after(self.checkpoint_dir(), target)
        self.save()  # the same weights with the new lr scale and data position: a resume from here is exact
        per_step = self.config.train.prompts_per_step
        skipped = [(target + position) * per_step, (diverged_at + position) * per_step]  # [first, end) of the stream
        event = {"step": target, "event": "rollback", "check": verdict.check, "detail": verdict.detail}
        event |= {"diverged_at_step": diverged_at, "skipped_prompts": skipped, **self.guard.metrics()}
        if log is not None:
            log.truncate_after(target)  # the abandoned steps are redone, as after a resume
            scale = self.guard.state.lr_scale
            log.event(
                event, f"rollback: {failed}; back to step {target}, lr x{scale:g}, prompts {skipped[0]}-{skipped[1] - 1} skipped"
            )

    def save_final(self, folder: Path) -> None:
        """The trained model as a model folder, written by rank 0 (every rank takes part in gathering it)."""
        save_model_folder(folder, self.policy, self.tokenizer, self.ranks)
        self.ranks.barrier("final model written")

    def fit(self, log: MetricsLog | None, evaluate: Callable[[int], dict[str, Any]] | None = None) -> None:
        """Train to `train.steps`. Rank 0 passes the log (metrics and progress bar); the other ranks pass None.
        `evaluate(step)`, called on every rank after each step that stays, returns metrics for the step's row."""
        steps = self.config.train.steps
        if log is not None:
            log.truncate_after(self.step)  # steps after the checkpoint are redone
        if self.guard.rollbacks_enabled and latest_checkpoint(self.checkpoint_dir()) is None:
            self.save()  # step 0: a good checkpoint to roll back to before the first `save_every`
        with log.progress(total=steps, completed=self.step) if log is not None else nullcontext() as progress:
            while self.step < steps:
                metrics = self.train_step(self.step)
                self.step += 1
                verdict = self.guard.check(metrics)
                if verdict is not None:
                    if progress is not None:
                        progress.advance(metrics)
                    self.roll_back(verdict, log)
                    if progress is not None:
                        progress.rewind(self.step)
                    continue
                if evaluate is not None:
                    extra = evaluate(self.step)
                    metrics["warnings"] = metrics.get("warnings", []) + extra.pop("warnings", [])
                    metrics.update(extra)
                    if not metrics["warnings"]:
                        del metrics["warnings"]
                if log is not None:
                    log.write(metrics)  # before the checkpoint, so a resume never lacks a saved step's line
                if self.step % self.config.train.save_every == 0 or self.step == steps:
                    self.save()
                collapsed = self.tool_monitor.collapsed()
                if progress is not None:
                    progress.advance(metrics, notice=f"tool-use collapse: {', '.join(collapsed)}" if collapsed else "")
