"""The curriculum on hand-made streams (every count checked by hand), problems' difficulties read from their
sources, the per-difficulty step metrics, and a real trainer step and resume on the tiny model."""

import json

import pytest
import torch
from pydantic import ValidationError

from rlvr.config import load_config
from rlvr.curriculum import Curriculum, CurriculumConfig, prompt_key
from rlvr.data import Source
from rlvr.envs import make_env
from rlvr.errors import ConfigError
from rlvr.step_metrics import difficulty_metrics
from rlvr.types import Episode, Problem


def problem(name: str, difficulty: float | None = None) -> Problem:
    return Problem(name, "1", meta={} if difficulty is None else {"difficulty": difficulty})


def stream_of(problems: list[Problem]):
    """An endless stream cycling through `problems`, as a finite pool's epochs do; it records what was read."""
    reads = []

    def stream(start: int, count: int) -> list[Problem]:
        reads.append((start, count))
        return [problems[i % len(problems)] for i in range(start, start + count)]

    stream.reads = reads
    return stream


def answers(group: int, correct: list[bool]) -> list[Episode]:
    return [Episode([0], [1], [0.0], [1], group=group, rewards={"correct": float(c)}) for c in correct]


def test_without_a_schedule_or_filter_the_stream_passes_through_in_order():
    pool = [problem(c) for c in "abcde"]
    curriculum = Curriculum(CurriculumConfig(filter=True), 0, stream_of(pool))
    first, second = curriculum.draw(2), curriculum.draw(2)
    assert [p.question for p in first.problems + second.problems] == ["a", "b", "c", "d"]
    assert (first.filtered, first.passed_over, curriculum.cursor) == (0, 0, 4)


def test_a_level_draws_its_difficulties_and_promotes_after_patience_steps_at_promote_at():
    pool = [problem("a", 1), problem("b", 2), problem("c", 1), problem("d", 3), problem("e", 1), problem("f", 2)]
    config = CurriculumConfig(schedule=(1, 2, 3), promote_at=0.75, patience=2)
    curriculum = Curriculum(config, 0, stream_of(pool))
    draw = curriculum.draw(2)
    assert [p.question for p in draw.problems] == ["a", "c"]  # b (2) passed over, d not reached
    assert (draw.passed_over, curriculum.cursor) == (1, 3)
    # 3 of 4 and 4 of 4 right: 75% reaches promote_at, so two such steps promote.
    assert curriculum.observe(draw.problems, answers(0, [True, True, False, True]) + answers(1, [True] * 4)) is None
    assert curriculum.streak == 1
    draw = curriculum.draw(2)
    assert [p.question for p in draw.problems] == ["e", "a"]  # d, f passed over; the stream cycles
    line = curriculum.observe(draw.problems, answers(0, [True] * 4) + answers(1, [True, True, True, False]))
    assert line is not None and "difficulty 1 -> 2" in line
    assert (curriculum.level, curriculum.streak) == (1, 0)
    assert curriculum.metrics(draw)["curriculum/difficulty"] == 1.0  # the level the step drew at
    draw = curriculum.draw(3)
    assert draw.difficulty == 2.0
    assert [p.question for p in draw.problems] == ["b", "c", "e"]  # 1s and 2s: easier prompts kept; d (3) passed over
    assert draw.passed_over == 1


def test_a_miss_resets_the_streak_and_only_the_levels_own_prompts_count():
    pool = [problem("easy", 1), problem("hard", 2)]
    config = CurriculumConfig(schedule=(1, 2, 3), promote_at=0.5, patience=2)
    curriculum = Curriculum(config, 0, stream_of(pool))
    curriculum.level = 1
    both = curriculum.draw(2).problems
    assert [p.question for p in both] == ["easy", "hard"]
    # The easy prompt is always right, the level's own (hard) never: 0% on the level, no streak.
    assert curriculum.observe(both, answers(0, [True] * 4) + answers(1, [False] * 4)) is None
    assert curriculum.streak == 0
    curriculum.observe(both, answers(0, [False] * 4) + answers(1, [True] * 4))
    assert curriculum.streak == 1
    curriculum.observe(both, answers(0, [True] * 4) + answers(1, [False] * 4))
    assert curriculum.streak == 0
    curriculum.observe([both[0]], answers(0, [True] * 4))  # no prompt of the level: no evidence either way
    assert curriculum.streak == 0


def test_without_keep_easier_a_level_draws_only_above_the_previous_one():
    pool = [problem("a", 1), problem("b", 2), problem("c", 3)]
    curriculum = Curriculum(CurriculumConfig(schedule=(1, 2, 3), keep_easier=False), 0, stream_of(pool))
    curriculum.level = 1
    assert curriculum.bounds == (1, 2)
    assert [p.question for p in curriculum.draw(2).problems] == ["b", "b"]


def test_the_last_level_never_promotes():
    curriculum = Curriculum(CurriculumConfig(schedule=(1, 2), patience=1), 0, stream_of([problem("a", 2)]))
    curriculum.level = 1
    draw = curriculum.draw(1)
    assert curriculum.observe(draw.problems, answers(0, [True] * 4)) is None
    assert curriculum.level == 1


def test_the_filter_skips_prompts_always_or_never_solved_at_their_last_visit():
    pool = [problem(c) for c in "abc"]
    curriculum = Curriculum(CurriculumConfig(filter=True, revisit=0.0, min_attempts=4), 0, stream_of(pool))
    draw = curriculum.draw(3)
    # a: always right, b: never, c: half. A visit of 3 answers is below min_attempts and is not recorded.
    curriculum.observe(draw.problems, answers(0, [True] * 4) + answers(1, [False] * 4) + answers(2, [True, False] * 2))
    assert curriculum.pass_rates == {prompt_key(pool[0]): 1.0, prompt_key(pool[1]): 0.0, prompt_key(pool[2]): 0.5}
    draw = curriculum.draw(2)
    assert [p.question for p in draw.problems] == ["c", "c"]  # a, b skipped in the second and third epochs
    assert draw.filtered == 4
    assert curriculum.metrics(draw) == {"curriculum/filtered": 4, "curriculum/passed_over": 0, "curriculum/tracked_prompts": 3}
    # A later visit replaces the rate: c became always right, b half right (b was revisited, say).
    curriculum.observe([pool[2], pool[1]], answers(0, [True] * 4) + answers(1, [True, False] * 2))
    assert curriculum.pass_rates[prompt_key(pool[2])] == 1.0 and curriculum.pass_rates[prompt_key(pool[1])] == 0.5
    curriculum.observe([pool[0]], answers(0, [True] * 3))  # too few answers: a's rate stays
    assert curriculum.pass_rates[prompt_key(pool[0])] == 1.0


def test_revisit_lets_filtered_prompts_back_with_its_probability_seeded():
    pool = [problem(f"q{i}") for i in range(200)]
    config = CurriculumConfig(filter=True, revisit=0.25, min_attempts=1)
    curriculum = Curriculum(config, 7, stream_of(pool))
    curriculum.observe(pool, [e for i in range(200) for e in answers(i, [True])])
    draw = curriculum.draw(40)
    assert 40 + draw.filtered == curriculum.cursor  # each scanned problem was drawn or filtered
    share = 40 / curriculum.cursor
    assert 0.15 < share < 0.35  # about revisit; seeded, so the same every run
    again = Curriculum(config, 7, stream_of(pool))
    again.observe(pool, [e for i in range(200) for e in answers(i, [True])])
    assert [p.question for p in again.draw(40).problems] == [p.question for p in draw.problems]


def test_a_resumed_curriculum_draws_what_an_uninterrupted_one_would():
    pool = [problem(f"q{i}", 1 + i % 3) for i in range(7)]
    config = CurriculumConfig(schedule=(1, 2, 3), promote_at=0.5, patience=1, filter=True, revisit=0.0, min_attempts=2)

    def step(curriculum, correct):
        draw = curriculum.draw(2)
        curriculum.observe(draw.problems, answers(0, [correct] * 2) + answers(1, [True, False]))
        return [p.question for p in draw.problems]

    whole = Curriculum(config, 0, stream_of(pool))
    first = Curriculum(config, 0, stream_of(pool))
    plan = [True, False, True, True, False, True]
    expected = [step(whole, c) for c in plan]
    got = [step(first, c) for c in plan[:3]]
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint holds survives serialising
    resumed = Curriculum(config, 0, stream_of(pool))
    resumed.load_state_dict(state)
    got += [step(resumed, c) for c in plan[3:]]
    assert got == expected
    assert whole.level == 2


def test_a_stream_without_admissible_prompts_stops_with_the_counts():
    curriculum = Curriculum(CurriculumConfig(schedule=(1,), max_scan=5), 0, stream_of([problem("a", 4)]))
    with pytest.raises(ConfigError, match=r"0 of 2 prompts at difficulty <= 1 in 10 problems .*10 of other levels"):
        curriculum.draw(2)


def test_a_scheduled_problem_without_a_difficulty_is_a_config_error():
    curriculum = Curriculum(CurriculumConfig(schedule=(1,)), 0, stream_of([problem("a")]))
    with pytest.raises(ConfigError, match="curriculum.schedule: a 'default' problem has no difficulty"):
        curriculum.draw(1)


@pytest.mark.parametrize(
    "options, message",
    [({"schedule": [2, 1]}, "levels must increase"), ({"low": 0.5, "high": 0.5}, "must be below high")],
)
def test_a_bad_curriculum_config_says_what_is_wrong(options, message):
    with pytest.raises(ValidationError, match=message):
        CurriculumConfig(**options)


def test_a_gym_source_reads_each_problems_difficulty_from_its_metadata():
    config = load_config(None, ["env.task=chain_sum", "env.task_config={min_terms: 2, max_terms: 4}", "env.difficulty=num_terms"])
    env = make_env(config.env)
    problems = env.train_problems(0, 30) + env.eval_problems()[:10]
    assert {p.meta["difficulty"] for p in problems} == {2.0, 3.0, 4.0}
    for p in problems:  # the number of terms is the difficulty: count the operators
        assert p.meta["difficulty"] == p.meta["entry"]["metadata"]["num_terms"]


def test_a_file_sources_difficulty_is_a_number_or_a_column(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "q1", "answer": "1", "level": 2}\n{"question": "q2", "answer": "2", "level": 5}\n')
    env_of = lambda difficulty: make_env(  # noqa: E731
        load_config(None, ["env.name=mixture", f"env.sources=[{{path: {path}, use: eval, difficulty: {difficulty}}}]"]).env
    )
    assert [p.meta["difficulty"] for p in env_of("level").eval_problems()] == [2.0, 5.0]
    assert [p.meta["difficulty"] for p in env_of(3).eval_problems()] == [3.0, 3.0]
    path.write_text('{"question": "q1", "answer": "1", "level": "hard"}\n')
    with pytest.raises(ConfigError, match=r"rows.jsonl:1: level: expected a number \(a difficulty\), got 'hard'"):
        env_of("level")
    with pytest.raises(ConfigError, match=r"rows.jsonl:1: rank: missing \(the source's difficulty field\)"):
        env_of("rank")


def test_a_benchmark_source_has_no_difficulty_key():
    with pytest.raises(ValidationError, match="difficulty is for files and reasoning-gym sources"):
        Source(path="humaneval", difficulty=1)


def test_difficulty_metrics_by_hand():
    problems = [problem("a", 1), problem("b", 2), problem("c")]
    episodes = answers(0, [True, False]) + answers(1, [True, True]) + answers(2, [False])
    episodes[1].completion_ids, episodes[1].logprobs, episodes[1].loss_mask = [1, 2, 3], [0.0] * 3, [1] * 3
    episodes[1].truncated = True
    assert difficulty_metrics(episodes, problems) == {
        "difficulty/1/accuracy": 0.5,
        "difficulty/1/response_length": 2.0,  # (1 + 3) / 2 tokens
        "difficulty/1/truncated_rate": 0.5,
        "difficulty/1/episodes": 2,
        "difficulty/2/accuracy": 1.0,
        "difficulty/2/response_length": 1.0,
        "difficulty/2/truncated_rate": 0.0,
        "difficulty/2/episodes": 2,
    }  # c has no difficulty: not counted
    assert difficulty_metrics(episodes[4:], problems) == {}


def test_a_trainer_step_draws_the_first_level_and_a_resume_restores_the_curriculum(tiny_model_dir, tmp_path):
    settings = [
        f"model.path={tiny_model_dir}",
        "rollout.engine=transformers",
        f"output_dir={tmp_path}",
        "train.prompts_per_step=2",
        "train.group_size=2",
        "train.micro_batch_size=4",
        "sampling.max_new_tokens=4",
        "env.eval_size=2",
        "env.task=chain_sum",
        "env.task_config={min_terms: 2, max_terms: 4}",
        "env.difficulty=num_terms",
        "curriculum={schedule: [2, 3, 4], filter: true, min_attempts: 2}",
        "scoring.workers=0",
        "train.guard.max_rollbacks=0",
    ]
    from rlvr.trainer import Trainer

    trainer = Trainer(load_config(None, settings))
    torch.manual_seed(0)
    row = trainer.train_step(0)
    trainer.step = 1
    assert {p.meta["difficulty"] for p in trainer.step_problems} == {2.0}
    assert row["curriculum/difficulty"] == 2.0 and row["difficulty/2/episodes"] == 4
    assert row["curriculum/passed_over"] == trainer.curriculum.cursor - 2  # the 3- and 4-term problems before them
    assert row["curriculum/tracked_prompts"] == 2
    trainer.save()
    resumed = Trainer(load_config(None, settings))
    assert resumed.resume()
    assert resumed.curriculum.state_dict() == trainer.curriculum.state_dict()
