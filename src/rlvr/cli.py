"""The `rlvr` command line."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from rlvr.errors import ConfigError, DivergenceError, EngineError, RankError, WorkerError
from rlvr.progress import sample_bars
from rlvr.sandbox.cli import sandbox_app
from rlvr.seeds import derive_seed
from rlvr.tools.index_cli import index_app

if TYPE_CHECKING:
    from rlvr.config import RunConfig

app = typer.Typer(help="Reinforcement learning from verifiable rewards.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)
app.add_typer(sandbox_app, name="sandbox", help="Run untrusted code in the sandbox the code verifier uses.")
app.add_typer(index_app, name="index", help="Build and query the BM25 indexes the search tool reads.")
template_app = typer.Typer(help="Check a model's chat template.", no_args_is_help=True, add_completion=False)
app.add_typer(template_app, name="template", help="Check a model's chat template.")

Overrides = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key: --set train.lr=1e-5")]
Plugins = Annotated[
    list[str] | None,
    typer.Option("--plugin", "-p", help="A Python file or module to import first (its rewards, envs, tools...)"),
]

# The options every command that trains shares (train, distill, sft).
Resume = Annotated[bool, typer.Option(help="Continue from the run's latest checkpoint")]
Overwrite = Annotated[bool, typer.Option(help="Delete an existing run folder of the same name first")]
Nproc = Annotated[int, typer.Option(help="Learner processes on this machine (data-parallel, under torchrun)", min=1)]


def _fail(error: Exception | str) -> None:
    rank = f" (rank {os.environ['RANK']})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    console.print(f"[red]error{rank}:[/red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _launch_ranks(nproc: int) -> None:
    """`rlvr train ... --nproc N`: the same command under torchrun, N ranks on this machine."""
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            argv.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "rlvr", *argv]
    raise typer.Exit(subprocess.run(command).returncode)


@app.command()
def train(
    recipe: Annotated[str | None, typer.Argument(help="Recipe YAML file or packaged recipe name")] = None,
    overrides: Overrides = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    nproc: Nproc = 1,
    plugins: Plugins = None,
) -> None:
    """Train a policy with RL on a recipe, or run a recipe's stages (a pipeline: sft, rl, rejection sampling,
    distillation); evaluates before and after."""
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        _launch_ranks(nproc)
    from rlvr.api import train as api_train
    from rlvr.config import load_config

    _run_training(lambda: load_config(recipe, overrides or [], plugins or []), api_train, resume, overwrite)


def _run_training(make_config: Callable[[], RunConfig], run: Callable[..., dict], resume: bool, overwrite: bool) -> None:
    """A training command's run: a bad config, a diverged run or a missing rank is one line; an engine failure also
    says that the run folder keeps every step up to its last checkpoint."""
    config = None
    try:
        config = make_config()
        run(config, resume=resume, overwrite=overwrite, console=console)
    except (ConfigError, RankError, DivergenceError, WorkerError) as error:
        _fail(error)
    except EngineError as error:
        kept = f". {config.run_dir} keeps every step up to its last checkpoint: continue with --resume" if config else ""
        _fail(f"{error}{kept}")


@app.command()
def distill(
    recipe: Annotated[
        str | None, typer.Argument(help="Recipe YAML file or packaged recipe name (its model is the student)")
    ] = None,
    teacher: Annotated[str, typer.Option(help="The teacher: a run, a checkpoint or a model folder sharing the tokenizer")] = "",
    with_reward: Annotated[
        bool, typer.Option(help="Add the distillation loss to the recipe's RL reward, not instead of it")
    ] = False,
    overrides: Overrides = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    plugins: Plugins = None,
) -> None:
    """On-policy distillation: the student samples, the teacher scores each of its tokens, and the loss is the
    per-token reverse KL (student || teacher); evaluates before and after."""
    from rlvr.api import distill_config
    from rlvr.api import train as api_train

    def make_config() -> RunConfig:
        if not teacher:
            raise ConfigError("--teacher: give the model to distil from (a run, a checkpoint or a model folder)")
        return distill_config(recipe, teacher, with_reward=with_reward, overrides=overrides or [], plugins=plugins or [])

    _run_training(make_config, api_train, resume, overwrite)


@app.command()
def sft(
    data: Annotated[Path, typer.Argument(help="Chat traces (`messages`) or question/completion pairs: JSONL, CSV, Parquet")],
    recipe: Annotated[str | None, typer.Argument(help="Recipe whose model, prompt, devices and evaluation to use")] = None,
    model: Annotated[str | None, typer.Option(help="The model to fine-tune (default: the recipe's)")] = None,
    overrides: Overrides = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    nproc: Nproc = 1,
    plugins: Plugins = None,
) -> None:
    """Supervised fine-tuning on chat traces, the loss on the assistant's tokens only; evaluates before and after."""
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        _launch_ranks(nproc)
    from rlvr.api import sft as api_sft
    from rlvr.api import sft_config

    _run_training(
        lambda: sft_config(data, recipe, model=model, overrides=overrides or [], plugins=plugins or []),
        api_sft,
        resume,
        overwrite,
    )


def _numbers(text: str | None, option: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers like 1,4,16, got {text!r}") from None
    if any(value < 1 for value in values):
        raise ConfigError(f"{option}: every value must be >= 1, got {text!r}")
    return values


@app.command("eval")
def eval_(
    model_arg: Annotated[str | None, typer.Argument(metavar="[MODEL]", help="Same as --model")] = None,
    model: Annotated[str | None, typer.Option(help="Model folder, a run or checkpoint, or 'smollm2-135m'")] = None,
    data: Annotated[
        Path | None, typer.Option(help="JSONL/CSV/Parquet with question and answer (plain or GSM8K '#### 42')")
    ] = None,
    env: Annotated[
        str | None, typer.Option(help="An environment by name (gym, humaneval, mixture) instead of the recipe's")
    ] = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe whose environment and sampling settings to use")] = None,
    overrides: Overrides = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Samples per question")] = 1,
    k: Annotated[str, typer.Option("--k", help="Comma-separated k for pass@k, maj@k and best-of-k")] = "1",
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first L questions only")] = None,
    budgets: Annotated[str | None, typer.Option(help="Thinking budgets in tokens, e.g. 64,128,256: a curve of accuracy")] = None,
    effort: Annotated[
        str | None,
        typer.Option(help="Named thinking budget: low, medium or high; with a recipe's length_control, its levels (low,high)"),
    ] = None,
    reasoning: Annotated[
        bool, typer.Option(help="--no-reasoning: an empty thinking block (with length_control's no_reasoning: stated off)")
    ] = True,
    min_thinking: Annotated[int, typer.Option(min=0, help="Extend a shorter thinking part with 'Wait,' (with --budgets)")] = 0,
    temperature: Annotated[float | None, typer.Option(min=0.0, help="Sampling temperature (default: the recipe's)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1, help="Generation limit (default: the recipe's)")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed")] = 0,
    out: Annotated[Path | None, typer.Option(help="Folder for summary.json, samples.jsonl, report.md, report.html")] = None,
    compare: Annotated[tuple[Path, Path] | None, typer.Option(help="Two evaluation folders: B - A with a paired 95% CI")] = None,
    suite: Annotated[bool, typer.Option(help="Run the regression suite against --base; significant drops flagged")] = False,
    suite_file: Annotated[
        str | None, typer.Option(help="With --suite: a suite YAML file (default: the packaged 'regression' suite)")
    ] = None,
    base: Annotated[
        str | None, typer.Option(help="With --suite: the model to compare with (default: the model a run started from)")
    ] = None,
    plugins: Plugins = None,
) -> None:
    """avg@n, pass@k, maj@k and best-of-k of MODEL with 95% bootstrap intervals, compute per question, and
    optionally accuracy against a thinking budget. Results go to stdout (JSON) and, with --out, a report."""
    try:
        if compare:
            _compare(*compare)
            return
        model = model or model_arg
        if not model:
            raise ConfigError("give the model to evaluate: rlvr eval --model MODEL (or a --compare A B)")
        if suite or suite_file:
            _suite(model, suite_file, base, recipe, overrides or [], plugins or [], out)
            return
        from rlvr.api import eval_config, eval_settings, run_evaluation

        config = eval_config(model, data=data, env=env, recipe=recipe, overrides=overrides or [], plugins=plugins or [])
        settings = eval_settings(
            config,
            n=n,
            k=_numbers(k, "--k"),
            limit=limit,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
            budgets=_numbers(budgets, "--budgets"),
            effort=effort,
            reasoning=reasoning,
            min_thinking=min_thinking,
        )
        with sample_bars(console) as bar:  # an engine failure is reported once the bar has closed: the last line
            summary = run_evaluation(config, settings, str(data) if data else config.env.label, out, bar("eval"))
    except (ConfigError, ValueError, EngineError) as error:
        _fail(error)
    if out is not None:
        console.print(f"wrote {out}/summary.json, samples.jsonl, report.md and report.html")
    from rlvr.eval.report import markdown

    console.print(markdown(summary), highlight=False, markup=False)
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")


def _suite(
    model: str,
    suite: str | None,
    base: str | None,
    recipe: str | None,
    overrides: list[str],
    plugins: list[str],
    out: Path | None,
) -> None:
    """`rlvr eval MODEL --suite`: the table on stderr, the rows as JSON on stdout (the drops: `suite.json`'s `drops`)."""
    from rlvr.api import run_suite
    from rlvr.eval.suite import markdown_table, starting_model

    with sample_bars(console) as progress:
        rows = run_suite(
            model,
            suite=suite,
            base=base,
            recipe=recipe,
            overrides=overrides,
            plugins=plugins,
            out=out,
            progress=progress,
        )
    if out is not None:
        console.print(f"wrote {out}/suite.md, suite.json and each evaluation's report under {out}/model and {out}/base")
    console.print(markdown_table(rows, model, base or starting_model(model)), highlight=False, markup=False)
    json.dump([row.to_dict() for row in rows], sys.stdout)
    sys.stdout.write("\n")


def _compare(a: Path, b: Path) -> None:
    from rlvr.eval.compare import compare_runs

    result = compare_runs(a, b)
    low, high = result["ci95"]
    console.print(
        f"{result['questions']} shared questions: A {result['a_avg']:.1%}, B {result['b_avg']:.1%}; "
        f"B - A = {result['difference']:+.1%} [95% paired CI {low:+.1%}, {high:+.1%}], p = {result['p_value']:.3f}",
        highlight=False,
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


ToolsOption = Annotated[
    str | None, typer.Option("--tools", help="Comma-separated tools, e.g. python,search (default: the recipe's)")
]


def _assistant(model: str, recipe: str | None, tools: str | None, overrides: list[str], plugins: list[str]):
    from rlvr.assistant import Assistant
    from rlvr.config import load_config

    settings = [*overrides, f"model.path={model}"]
    if tools is not None:
        settings.append(f"tools.enabled=[{tools}]")
    return Assistant(model, load_config(recipe, settings, plugins))


@app.command()
def chat(
    model: Annotated[str, typer.Argument(help="Model folder, a run or checkpoint, or 'smollm2-135m'")],
    tools: ToolsOption = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe whose prompt, tools and corpus to use")] = None,
    overrides: Overrides = None,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy")] = 0.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Model tokens per reply, over all its tool turns")] = 256,
    plugins: Plugins = None,
) -> None:
    """Talk to a model with its tools: each line you type is a question; the reply shows the model's thinking,
    its tool calls and their results. Reads questions from stdin when it is not a terminal (scriptable)."""
    from rlvr.chat_view import show_reply

    try:
        assistant = _assistant(model, recipe, tools, overrides or [], plugins or [])
    except (ConfigError, ValueError) as error:
        _fail(error)
    console.print(f"[bold]{model}[/bold] with tools: {', '.join(assistant.tool_names) or 'none'}. Empty line or Ctrl-D ends.")
    conversation = None
    sampling = assistant.sampling(temperature, max_new_tokens)
    interactive = sys.stdin.isatty()
    for reply in itertools.count():
        try:
            question = console.input("[bold green]you>[/bold green] ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            break
        if not question.strip():
            break
        if not interactive:
            console.print(f"[bold green]you>[/bold green] {question.strip()}", highlight=False)
        start = assistant.start(question.strip()) if conversation is None else assistant.follow_up(conversation, question.strip())
        ((conversation, episode),) = assistant.reply([start], replace(sampling, seed=derive_seed(sampling.seed, reply)))
        show_reply(console, episode)


@app.command()
def sample(
    model: Annotated[str, typer.Argument(help="Model folder, a run or checkpoint, or 'smollm2-135m'")],
    input: Annotated[Path, typer.Option("--input", "-i", help="JSONL: one object per line with `question` or `messages`")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL: the input line plus `completion`, `messages`, `tools`")],
    tools: ToolsOption = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe whose prompt, tools and corpus to use")] = None,
    overrides: Overrides = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Samples per line")] = 1,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy")] = 0.7,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Model tokens per sample, over all its tool turns")] = 256,
    seed: Annotated[int, typer.Option(help="Sampling seed")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Lines generated together")] = 16,
    plugins: Plugins = None,
) -> None:
    """Batch generation with tools: JSONL in, JSONL out, the same prompt and tool loop as training."""
    from rlvr.assistant import read_requests

    try:
        requests = read_requests(input)
        assistant = _assistant(model, recipe, tools, overrides or [], plugins or [])
    except (ConfigError, ValueError) as error:
        _fail(error)
    sampling = assistant.sampling(temperature, max_new_tokens, seed)
    written = 0
    failure: EngineError | None = None
    with output.open("w") as handle, sample_bars(console) as bar:
        progress = bar("sample")
        for start in range(0, len(requests), batch_size):
            batch = requests[start : start + batch_size]
            conversations = [assistant.start(r.get("question"), r.get("messages")) for r in batch for _ in range(n)]
            try:
                replies = assistant.reply(conversations, replace(sampling, seed=derive_seed(sampling.seed, start // batch_size)))
            except EngineError as error:
                failure = error  # reported once the file and the progress bar are closed
                break
            for index, (conversation, episode) in enumerate(replies):
                record = {**batch[index // n], "sample": index % n, "completion": episode.text}
                record.update(messages=conversation.messages, tools=episode.meta.get("tools"))
                handle.write(json.dumps(record) + "\n")
            written += len(replies)
            progress(len(replies), len(requests) * n, sum(e.generated_tokens for _, e in replies))
    if failure is not None:
        _fail(f"{failure}; the {written} samples before it are in {output}")
    console.print(f"wrote {written} samples to {output}")


@app.command("rejection-sample")
def rejection_sample(
    model: Annotated[str, typer.Option(help="Model folder, a run or checkpoint, or 'smollm2-135m'")],
    out: Annotated[Path, typer.Option(help="JSONL of the kept chat traces; the numbers go to <out>.provenance.json")],
    data: Annotated[Path | None, typer.Option(help="JSONL/CSV/Parquet with question and answer: every row is sampled")] = None,
    env: Annotated[str | None, typer.Option(help="An environment by name (gym, mixture, ...) instead of the recipe's")] = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe whose environment, prompt, tools and sampling to use")] = None,
    overrides: Overrides = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Samples per question")] = 8,
    keep: Annotated[str, typer.Option(help="Which correct answers to keep: all, shortest or distinct (per question)")] = "all",
    max_per_question: Annotated[int | None, typer.Option(min=1, help="Keep at most m traces per question")] = None,
    temperature: Annotated[float | None, typer.Option(min=0.0, help="Sampling temperature (default: the recipe's)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1, help="Generation limit (default: the recipe's)")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed")] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Sample the first L questions only")] = None,
    split: Annotated[str | None, typer.Option(help="train (default) or eval: eval puts held-out questions in the traces")] = None,
    plugins: Plugins = None,
) -> None:
    """Expert iteration's data: n answers per training question, the verified-correct ones written as chat traces
    (`messages`, the input of rlvr sft), with their provenance and yield. The summary goes to stdout (JSON)."""
    from rlvr.api import rejection_job, run_rejection
    from rlvr.rejection import provenance_path, summary_table

    try:
        job = rejection_job(
            model,
            data=data,
            env=env,
            recipe=recipe,
            overrides=overrides or [],
            plugins=plugins or [],
            n=n,
            keep=keep,
            max_per_question=max_per_question,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
            limit=limit,
            split=split,
        )
        with sample_bars(console) as bar:  # an engine failure is reported once the bar has closed: the last line
            summary = run_rejection(job, out, bar("rejection-sample"))
    except (ConfigError, ValueError, EngineError) as error:
        _fail(error)
    console.print(summary_table(summary))
    console.print(f"wrote {summary.overall.traces} traces to {out} and their provenance to {provenance_path(out)}")
    json.dump(summary.to_dict(), sys.stdout)
    sys.stdout.write("\n")


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="Model folder, a run or checkpoint, or 'smollm2-135m'")],
    recipe: Annotated[str | None, typer.Option(help="Recipe whose prompt, tools and sampling to use")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on")] = 8000,
    tools: ToolsOption = None,
    overrides: Overrides = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences of concurrent requests generated together")] = 8,
    batch_window_ms: Annotated[float, typer.Option(min=0.0, help="How long to wait for more requests to batch")] = 20.0,
    max_tokens: Annotated[int, typer.Option(min=1, help="Model tokens per reply when a request sets no max_tokens")] = 256,
    effort_budgets: Annotated[
        str | None, typer.Option(help="Thinking budgets of reasoning_effort, e.g. low=64,medium=256,high=1024")
    ] = None,
    plugins: Plugins = None,
) -> None:
    """An OpenAI-compatible HTTP server (/v1/models, /v1/chat/completions, /v1/completions) on the training
    rollout: the same engine, chat format and tool loop, concurrent requests batched."""
    try:
        from rlvr.serve.app import run_server
        from rlvr.serve.backend import ServedModel, serve_settings
    except ImportError as error:
        _fail(f"{error.name or error}: rlvr serve needs its extra: pip install 'rlvr[serve]'")
    try:
        settings = serve_settings(batch_size, batch_window_ms, max_tokens, effort_budgets)
        served = ServedModel(_assistant(model, recipe, tools, overrides or [], plugins or []), model, settings)
    except (ConfigError, ValueError) as error:
        _fail(error)
    url = f"http://{host}:{port}/v1"
    console.print(
        f"[bold green]serving[/bold green] [bold]{model}[/bold] at [link={url}]{url}[/link] "
        f"(tools: {', '.join(served.assistant.tool_names) or 'none'}; {type(served.engine).__name__})",
        highlight=False,
        soft_wrap=True,
    )
    run_server(served, host, port)


@app.command()
def controls(
    recipe: Annotated[str | None, typer.Argument(help="Recipe YAML file or packaged recipe name")] = None,
    overrides: Overrides = None,
    plugins: Plugins = None,
    overwrite: Annotated[bool, typer.Option(help="Train runs that are already finished again")] = False,
) -> None:
    """Is the gain real? Trains the recipe with its own reward, a random reward and the format reward alone
    (runs <name>-real, -random, -format_only), then compares their held-out accuracy, paired on the same questions."""
    from rlvr.controls import run_controls

    try:
        run_controls(recipe, overrides or [], plugins or [], overwrite=overwrite, console=console)
    except (ConfigError, RankError, EngineError) as error:
        _fail(error)


@template_app.command("check")
def template_check(
    model: Annotated[str, typer.Argument(help="Model folder, a run or checkpoint, or 'smollm2-135m'")] = "smollm2-135m",
) -> None:
    """Is the chat template append-only (rendering one more message never changes what came before)? The tool
    loop relies on it for training and serving to see the same tokens. Exit code 1 when it is not."""
    from rlvr.models import load_tokenizer
    from rlvr.tools.template_check import check_append_only

    try:
        problems = check_append_only(load_tokenizer(model))
    except ConfigError as error:
        _fail(error)
    if not problems:
        console.print(f"{model}: the chat template is append-only (text and token ids), tool turns included")
        return
    for problem in problems:
        console.print(f"[red]not append-only:[/red] {problem}", highlight=False)
    raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
