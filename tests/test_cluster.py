"""Asynchronous RL on a local Ray cluster (`cluster.backend: ray`): two rollout workers and a tiny random model.

Synchronous on Ray gives the local trainer's numbers; staleness stays within `rollout.max_staleness`; a worker killed
with SIGKILL is replaced and every prompt is still trained on once; a hung worker ends the run within its deadline
with an error naming it; a driver killed with SIGKILL resumes with the prompts it had in flight.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

ray = pytest.importorskip("ray", reason="cluster.backend: ray needs the ray extra (pip install 'rlvr[ray]')")

from rlvr.cluster import AsyncTrainer, RolloutResult  # noqa: E402
from rlvr.cluster.async_trainer import WORKERS_FILE, prompts_digest  # noqa: E402
from rlvr.cluster.pool import plan_cores  # noqa: E402
from rlvr.cluster.worker import POLICY_VERSION, ContinuingEngine  # noqa: E402
from rlvr.config import load_config  # noqa: E402
from rlvr.errors import ConfigError, WorkerError  # noqa: E402
from rlvr.metrics import MetricsLog  # noqa: E402
from rlvr.rewards import Score  # noqa: E402
from rlvr.rollout import SamplingParams, TransformersEngine  # noqa: E402
from rlvr.trainer import Trainer  # noqa: E402
from rlvr.types import STALENESS  # noqa: E402

STEPS = 4


def _settings(tiny_model_dir, tmp_path, name):
    return [
        f"name={name}",
        f"model.path={tiny_model_dir}",
        "rollout.engine=transformers",
        f"output_dir={tmp_path}",
        f"train.steps={STEPS}",
        "train.prompts_per_step=2",
        "train.group_size=4",
        "train.micro_batch_size=8",
        "train.lr=1e-2",
        "train.threads=1",
        "sampling.max_new_tokens=6",
        "sampling.temperature=1.0",
        "env.eval_size=2",
        "eval.before=false",
        "eval.after=false",
        "scoring.workers=0",
        "algo.overlong_filter=false",
    ]


def _ray(*extra):
    return ["cluster.backend=ray", "rollout.workers=2", "cluster.startup_timeout_seconds=120", *extra]


def _parity(text, problem):
    """A reward that varies with the sample (the tiny model never answers right), so every step moves the weights."""
    reward = float(len(text) % 2)
    return Score(reward, {"correct": reward})


def _fit(trainer, evaluate=None):
    trainer.scorer.rubric.score = _parity
    log = MetricsLog(trainer.config.run_dir / "metrics.jsonl")
    trainer.config.run_dir.mkdir(parents=True, exist_ok=True)
    with trainer.scorer:
        trainer.fit(log, evaluate)
    return log.read()


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module's in-process runs (each run's pool joins it and leaves it running)."""
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _expected_digests(trainer):
    per = trainer.config.train.prompts_per_step
    return [prompts_digest(trainer.env.train_problems(step * per, per)) for step in range(trainer.config.train.steps)]


SYNCS = ["object_store", "collective"]  # cluster.weight_sync: the object store, or a gloo broadcast group here


@pytest.mark.parametrize("sync", SYNCS)
def test_synchronous_on_ray_gives_the_local_trainers_numbers(cluster, tiny_model_dir, tmp_path, sync):
    local = Trainer(load_config(None, _settings(tiny_model_dir, tmp_path, "local")))
    local_rows = _fit(local)
    settings = [*_settings(tiny_model_dir, tmp_path, "ray"), *_ray(f"cluster.weight_sync={sync}")]
    remote = AsyncTrainer(load_config(None, settings))
    remote_rows = _fit(remote)
    assert len(remote_rows) == len(local_rows) == STEPS
    assert any(row["grad_norm"] > 0 for row in local_rows)  # the weights moved: the comparison is not of frozen models
    timing = ("second", "memory", "tokens_per_second", "async/")
    for mine, theirs in zip(remote_rows, local_rows):
        for key, value in theirs.items():
            if isinstance(value, float) and not any(part in key for part in timing):
                assert math.isclose(mine[key], value, rel_tol=1e-5, abs_tol=1e-7), (mine["step"], key)
        assert mine["async/staleness_max"] == 0
    for a, b in zip(remote.policy.parameters(), local.policy.parameters()):
        torch.testing.assert_close(a, b)
    assert [row["data/prompts_digest"] for row in remote_rows] == _expected_digests(remote)
    assert remote.local_version == remote.version == STEPS  # the evaluation after training sees the trained weights


@pytest.mark.parametrize("workers, k", [(1, 1), (2, 2)])
def test_staleness_stays_within_max_staleness_and_the_workers_run_ahead(cluster, tiny_model_dir, tmp_path, workers, k):
    extra = [*_ray(f"rollout.max_staleness={k}"), f"rollout.workers={workers}"]
    rows = _fit(AsyncTrainer(load_config(None, [*_settings(tiny_model_dir, tmp_path, "stale"), *extra])))
    lags = [row["async/staleness_max"] for row in rows]
    assert max(lags) <= k
    assert max(lags) >= 1  # the workers did run ahead of the learner
    assert rows[-1]["async/staleness_mean"] > 0 and rows[-2]["async/staleness_mean"] > 0  # and kept doing so
    for row in rows:
        shares = [row[f"async/staleness/{lag}"] for lag in range(k + 1)]
        assert math.isclose(sum(shares), 1.0) and 0.0 <= row["async/learner_idle_fraction"] <= 1.0


def test_a_worker_faster_than_the_learner_runs_k_steps_ahead(cluster, tiny_model_dir, tmp_path):
    """A worker that has finished what it was sent when the learner sends the next step (here the learner waits for
    that after each step, so that no timing decides it) takes it at once (the pool's watcher), on the weights of
    then: steps lag by the whole k = 2."""
    extra = [*_ray("rollout.max_staleness=2"), "rollout.workers=1", "train.steps=5"]
    trainer = AsyncTrainer(load_config(None, [*_settings(tiny_model_dir, tmp_path, "ahead"), *extra]))

    def until_the_worker_is_idle(step):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with trainer.pool._changed:
                if not trainer.pool.running and not trainer.pool.queue:
                    return {}
            time.sleep(0.02)
        raise TimeoutError("the worker did not finish the steps it was sent")

    lags = [row["async/staleness_max"] for row in _fit(trainer, until_the_worker_is_idle)]
    # The first k steps are sent together and wait for the one worker, so when each starts is the learner's pace;
    # from then on each step is sent to an idle worker k updates before it is trained.
    assert lags[0] == 0 and max(lags) <= 2 and lags[3:] == [2, 2]


@pytest.mark.parametrize("sync", SYNCS)
def test_a_worker_killed_mid_run_is_replaced_and_every_prompt_is_trained_once(cluster, tiny_model_dir, tmp_path, sync):
    # A deadline far above a tiny step's seconds, and far below the default 300 s a lost wait would cost the suite
    extra = _ray("rollout.max_staleness=1", "train.steps=6", f"cluster.weight_sync={sync}", "cluster.timeout_seconds=60")
    settings = [*_settings(tiny_model_dir, tmp_path, "killed"), *extra]
    trainer = AsyncTrainer(load_config(None, settings))

    def kill_worker_0(step):
        if step == 1:  # worker 0 is busy with (or done with) a coming step: it is lost with whatever it held
            pids = json.loads((trainer.config.run_dir / WORKERS_FILE).read_text())
            os.kill(pids["rollout worker 0"], signal.SIGKILL)
        return {}

    rows = _fit(trainer, kill_worker_0)
    assert [row["step"] for row in rows] == list(range(1, 7))
    assert rows[-1]["async/worker_restarts"] == 1
    assert any("rollout worker 0" in w and "replaced" in w for row in rows for w in row.get("warnings", []))
    assert [row["data/prompts_digest"] for row in rows] == _expected_digests(trainer)  # each window once, in order


@pytest.mark.parametrize("sync", SYNCS)
def test_a_hung_worker_ends_the_run_within_its_deadline_naming_it(cluster, tiny_model_dir, tmp_path, sync):
    deadline = 4
    extra = _ray(f"cluster.timeout_seconds={deadline}", "cluster.max_restarts=0", "train.steps=6", f"cluster.weight_sync={sync}")
    trainer = AsyncTrainer(load_config(None, [*_settings(tiny_model_dir, tmp_path, "hung"), *extra]))
    stopped: list[int] = []
    started = []

    def stop_workers(step):
        if step == 1:  # SIGSTOP: alive, holding its calls, answering nothing (as a worker stuck in a collective)
            pids = json.loads((trainer.config.run_dir / WORKERS_FILE).read_text())
            for name in ("rollout worker 0", "rollout worker 1"):
                os.kill(pids[name], signal.SIGSTOP)
                stopped.append(pids[name])
            started.append(time.monotonic())
        return {}

    try:
        with pytest.raises(
            WorkerError,
            # hung while generating, or (collective) while it should take its part in a broadcast
            match=rf"rollout worker \d \(pid \d+\): (generate \(step \d\)|receive weights \(version \d\)): no answer within "
            rf"cluster.timeout_seconds={deadline} s; cluster.max_restarts=0 restarts spent",
        ):
            _fit(trainer, stop_workers)
        # The deadline, plus one poll and the steps already generated: never an open-ended wait.
        assert time.monotonic() - started[0] < deadline + 6
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class _Pool:
    """A stand-in for the worker pool that answers each step first with samples of weights too old."""

    def __init__(self, episodes):
        self.episodes, self.sent = episodes, []

    def submit(self, request):
        self.sent.append(request)

    def outstanding(self):
        return {r.step for r in self.sent}

    def take(self, step):
        attempt = max(r.attempt for r in self.sent if r.step == step)
        version = -5 if attempt == 0 else 0  # the first answer lags five versions; the one sent again none
        episodes = [e for e in self.episodes]
        for e in episodes:
            e.meta[POLICY_VERSION] = version
        return RolloutResult(step, episodes, 0, version, 0.1, 0.0)

    def read_metrics(self):
        return {}

    def take_events(self):
        return []

    def publish(self, version, weights):
        self.published = version


def test_samples_older_than_max_staleness_are_dropped_counted_and_generated_again(tiny_model_dir, tmp_path):
    settings = [*_settings(tiny_model_dir, tmp_path, "drop"), "cluster.backend=ray", "rollout.max_staleness=1"]
    trainer = AsyncTrainer(load_config(None, settings))
    local = Trainer(load_config(None, _settings(tiny_model_dir, tmp_path, "drop-local")))
    trainer.scorer.rubric.score = _parity
    trainer.pool = _Pool(local.rollout(0))
    trainer.fitting = True  # as inside `fit`, which would start a real pool
    metrics = trainer.train_step(0)
    assert metrics["async/dropped_stale"] == 8  # the whole lagging answer: 2 prompts x 4
    assert [(r.step, r.attempt) for r in trainer.pool.sent] == [(0, 0), (1, 0), (0, 1)]  # step 0 asked again
    assert metrics["async/staleness_max"] == 0 and all(e.meta[STALENESS] == 0 for e in trainer.last_result.episodes)
    assert trainer.pool.published == 1  # the update's weights, as version 1


def test_a_rollback_withdraws_the_steps_in_flight(tiny_model_dir, tmp_path):
    """Sent for weights the rollback abandons: withdrawn from the pool, never trained, their windows skipped."""
    settings = [*_settings(tiny_model_dir, tmp_path, "rollback"), "cluster.backend=ray", "rollout.max_staleness=1"]
    trainer = AsyncTrainer(load_config(None, settings))
    withdrawn = []
    trainer.pool = SimpleNamespace(withdraw=withdrawn.append, publish=lambda version, weights: None)
    trainer.in_flight = {3: None, 4: None}
    trainer.load_extra_state({"in_flight": {}}, rollback=True)
    assert withdrawn == [{3, 4}] and trainer.in_flight == {}
    saved = {5: ([], None)}
    trainer.load_extra_state({"in_flight": saved}, rollback=False)  # a resume: sent again as they were
    assert list(trainer.in_flight) == [5] and trainer.in_flight[5].problems == []


def test_new_weights_mid_generation_continue_unfinished_completions(tiny_model_dir, tokenizer):
    """in_flight: continue: chunks of 3 tokens, a version looked up before each; continuing a completion from its
    tokens so far is the same decoding as one call (greedy: the same tokens)."""
    from rlvr.models import load_policy

    engine = TransformersEngine(load_policy(str(tiny_model_dir)), tokenizer, shares_weights=False)
    versions = iter([0, 1, 1])
    continuing = ContinuingEngine(engine, lambda: next(versions), 3, lambda ids: tokenizer.decode(ids))
    greedy = SamplingParams(max_new_tokens=8, min_new_tokens=8, greedy=True)
    (episode,) = continuing.generate([[1, 2, 3]], greedy)
    assert episode.num_tokens == 8 and episode.truncated
    assert episode.meta["token_versions"] == [0, 0, 0, 1, 1, 1, 1, 1]  # 3 + 3 + 2 tokens
    (whole,) = engine.generate([[1, 2, 3]], greedy)
    assert episode.completion_ids == whole.completion_ids
    torch.testing.assert_close(torch.tensor(episode.logprobs), torch.tensor(whole.logprobs), rtol=1e-4, atol=1e-5)


def test_a_worker_loads_each_newer_version_it_is_handed_and_says_which_sampled(tiny_model_dir, tmp_path):
    from rlvr.cluster import Published, RolloutRequest, RolloutWorker

    config = load_config(None, [*_settings(tiny_model_dir, tmp_path, "worker"), "cluster.backend=ray"])
    worker = RolloutWorker(config, 0)
    weights = {name: torch.zeros_like(p) for name, p in worker.engine.model.state_dict().items()}
    request = RolloutRequest(0, [], [[1, 2, 3]], 2, SamplingParams(max_new_tokens=2, seed=1))
    result = worker.generate(request, Published(3, weights))
    assert result.version == 3 and worker.loads == 1 and all(e.meta[POLICY_VERSION] == 3 for e in result.episodes)
    assert all(not p.any() for p in worker.engine.model.parameters())  # the zeros were loaded
    again = worker.generate(request, Published(3, {"ignored": None}))  # the version it holds: nothing fetched
    assert again.version == 3 and worker.loads == 0
    with pytest.raises(KeyError, match="no parameter 'nonsense'"):  # the engine's checked load
        worker.generate(request, Published(4, {"nonsense": torch.zeros(1)}))


def test_pinned_cores_give_the_learner_and_each_worker_their_own():
    assert plan_cores(1, 1.0, [0, 1]) == ([0], [[1]])
    assert plan_cores(2, 1.0, [0, 1, 2, 3]) == ([0, 1], [[2], [3]])
    with pytest.raises(ConfigError, match="2 workers of 1 cores and the learner need 3 cores; this machine gives 2"):
        plan_cores(2, 1.0, [0, 1])


def test_workers_and_staleness_without_ray_are_a_config_error():
    with pytest.raises(ConfigError, match="rollout: max_staleness=1 needs cluster.backend: ray"):
        load_config(None, ["rollout.max_staleness=1"])


RECIPE = """
name: resumed
model: {{path: {model}}}
rollout: {{engine: transformers, workers: 2, max_staleness: 1}}
cluster: {{backend: ray, num_cpus: 2, startup_timeout_seconds: 120}}
env: {{eval_size: 2}}
sampling: {{max_new_tokens: 6, temperature: 1.0}}
eval: {{before: false, after: false}}
scoring: {{workers: 0}}
curriculum: {{filter: true}}
train: {{steps: 8, prompts_per_step: 2, group_size: 2, micro_batch_size: 4, threads: 1, save_every: 2}}
"""


def _start(recipe, tmp_path, *flags):
    # A session of its own: Ray's helper processes of a killed driver are stopped with its process group.
    command = [sys.executable, "-m", "rlvr", "train", str(recipe), *flags]
    return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _end_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_a_driver_killed_with_sigkill_resumes_with_its_prompts_in_flight(tiny_model_dir, tmp_path):
    """The curriculum's stream position is saved after the prompts already drawn for the coming steps: a resume that
    lost them would skip their windows, and its digests would differ from an uninterrupted run's."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(model=tiny_model_dir))
    metrics = tmp_path / "runs" / "resumed" / "metrics.jsonl"
    first = _start(recipe, tmp_path)
    try:
        deadline = time.monotonic() + 240
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the first run made no progress"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)  # the driver alone, mid-run: its workers are lost with it
        first.wait()
    finally:
        _end_group(first)
    second = _start(recipe, tmp_path, "--resume")
    try:
        _, err = second.communicate(timeout=300)
        assert second.returncode == 0, err.decode()[-3000:]
    finally:
        _end_group(second)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [row["step"] for row in rows if "step_seconds" in row]
    assert steps == list(range(1, 9))
    config = load_config(str(recipe))
    from rlvr.envs import make_env

    env = make_env(config.env)
    expected = [prompts_digest(env.train_problems(step * 2, 2)) for step in range(8)]
    assert [row["data/prompts_digest"] for row in rows if "step_seconds" in row] == expected


# ---- the learner as Ray actors (`cluster.learners`) --------------------------------------------------------------
def _learner_run(tiny_model_dir, tmp_path, name, *extra):
    settings = [*_settings(tiny_model_dir, tmp_path, name), *_ray("rollout.workers=1"), "env.rewards.random=1.0", *extra]
    # fp32: bf16 rounds differently in the ranks' differently packed rows; lr 1e-4: assert_same_weights' scale
    settings += ["model.autocast_bf16=false", "train.lr=1e-4"]
    return load_config(None, settings)


def test_two_learner_actors_make_the_local_trainers_updates(cluster, tiny_model_dir, tmp_path):
    """Two learner ranks (Ray actors, one gloo group, the weights sharded) and one rollout worker, synchronous: the
    local trainer's numbers and weights, and rank 0's console reaches the process that started the run."""
    from io import StringIO

    from rich.console import Console
    from transformers import AutoModelForCausalLM

    from ranks import assert_same_weights
    from rlvr.run import train

    local = Trainer(_learner_run(tiny_model_dir, tmp_path, "local"))
    log = MetricsLog(local.config.run_dir / "metrics.jsonl")
    local.config.run_dir.mkdir(parents=True, exist_ok=True)
    with local.scorer:
        local.fit(log)
    local_rows = log.read()
    config = _learner_run(tiny_model_dir, tmp_path, "learners", "cluster.learners=2")
    screen = StringIO()
    summary = train(config, console=Console(file=screen, width=200))
    rows = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == STEPS and "2 ranks" in summary["precision"]["device"]
    assert any(row["grad_norm"] > 0 for row in local_rows)  # the random reward moves the weights
    for mine, theirs in zip(rows, local_rows, strict=True):
        for key in ("reward", "accuracy", "response_length", "loss", "grad_norm", "entropy"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), (mine["step"], key)
        assert mine["async/staleness_max"] == 0
    trained = AutoModelForCausalLM.from_pretrained(config.run_dir / "final").state_dict()
    assert_same_weights(trained, local.policy.state_dict())
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert max((trained[name] - start[name]).abs().max().item() for name in start) > 1e-4  # and they moved
    processes = set(json.loads((config.run_dir / WORKERS_FILE).read_text()))
    assert processes == {"learner rank 0", "learner rank 1", "rollout worker 0"}
    assert f"step    {STEPS}" in screen.getvalue()  # rank 0's step lines, relayed


def test_a_learner_rank_that_dies_ends_the_run_at_once_naming_it(cluster, tiny_model_dir, tmp_path):
    import threading

    from rich.console import Console

    from rlvr.errors import RankError
    from rlvr.run import train

    config = _learner_run(tiny_model_dir, tmp_path, "rank-dies", "cluster.learners=2", "train.steps=30")
    pids, killed = config.run_dir / WORKERS_FILE, []

    def kill_rank_1():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            metrics = config.run_dir / "metrics.jsonl"
            if pids.exists() and metrics.exists() and metrics.read_text().strip():  # mid-run: a step is done
                os.kill(json.loads(pids.read_text())["learner rank 1"], signal.SIGKILL)
                killed.append(time.monotonic())
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_rank_1, daemon=True)
    killer.start()
    with pytest.raises(RankError, match=r"learner rank 1 \(pid \d+\): died during the run"):
        train(config, console=Console(file=open(os.devnull, "w")))
    assert killed and time.monotonic() - killed[0] < 15  # at once: not after rank 0's meeting-point timeout (600 s)


def test_learner_ranks_the_cluster_cannot_place_are_named_within_the_deadline(cluster, tiny_model_dir, tmp_path):
    from rich.console import Console

    from rlvr.errors import RankError
    from rlvr.run import train

    extra = ("cluster.learners=2", "cluster.learner_cpus=3", "cluster.startup_timeout_seconds=3")
    config = _learner_run(tiny_model_dir, tmp_path, "unplaced", *extra)
    started = time.monotonic()
    unplaced = r"learner rank 1: did not start within cluster.startup_timeout_seconds=3 s \(each asks the cluster for 3 CPUs"
    with pytest.raises(RankError, match=unplaced):
        train(config, console=Console(file=open(os.devnull, "w")))
    assert time.monotonic() - started < 3 + 5


def test_learner_actors_need_ray_and_one_core_plan():
    with pytest.raises(ConfigError, match="cluster: learners=2 needs backend: ray"):
        load_config(None, ["cluster.learners=2"])
    with pytest.raises(ConfigError, match="pin_cpus pins one learner process; it cannot with learners=2"):
        load_config(None, ["cluster.backend=ray", "cluster.learners=2", "cluster.pin_cpus=true"])
