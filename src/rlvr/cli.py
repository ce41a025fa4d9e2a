"""The `rlvr` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rlvr.config import ConfigError, load_config
from rlvr.tools.sandbox_cli import sandbox_app

app = typer.Typer(help="Reinforcement learning from verifiable rewards.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)
app.add_typer(sandbox_app, name="sandbox", help="Run untrusted code in the sandbox the code verifier uses.")

Overrides = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key: --set train.lr=1e-5")]


def _fail(error: Exception) -> None:
    console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def train(
    recipe: Annotated[str | None, typer.Argument(help="Recipe YAML file or packaged recipe name")] = None,
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's latest checkpoint")] = False,
    overwrite: Annotated[bool, typer.Option(help="Delete an existing run folder of the same name first")] = False,
) -> None:
    """Train a policy with RL on a recipe; evaluates before and after."""
    try:
        config = load_config(recipe, overrides or [])
        from rlvr.run import train as run_train

        run_train(config, resume=resume, overwrite=overwrite, console=console)
    except ConfigError as error:
        _fail(error)


@app.command("eval")
def eval_(
    model: Annotated[str, typer.Argument(help="Model folder (a run's final/ or any HF folder) or 'smollm2-135m'")],
    recipe: Annotated[str | None, typer.Option(help="Recipe whose environment to evaluate on")] = None,
    overrides: Overrides = None,
    out: Annotated[Path | None, typer.Option(help="Write the result JSON here")] = None,
) -> None:
    """Greedy accuracy of MODEL on the recipe's held-out split, with a 95% CI."""
    try:
        config = load_config(recipe, [*(overrides or []), f"model.path={model}"])
        from rlvr.envs import make_env
        from rlvr.eval import evaluate
        from rlvr.models import load_policy, load_tokenizer
        from rlvr.rollout import ENGINES
        from rlvr.scoring import Scorer

        tokenizer = load_tokenizer(config.model.path)
        policy = load_policy(config.model.path)
        engine = ENGINES[config.rollout.engine](policy, tokenizer, config.eval.batch_size)
        env = make_env(config.env)
        with Scorer(env.rubric, config.scoring.workers, config.scoring.timeout_seconds) as scorer:
            result = evaluate(engine, env, tokenizer, config.eval.max_new_tokens or config.sampling.max_new_tokens, scorer)
    except ConfigError as error:
        _fail(error)
    low, high = result["ci95"]
    console.print(f"{config.env.label}: accuracy {result['accuracy']:.1%} [95% CI {low:.1%}, {high:.1%}] n={result['n']}")
    for subset, part in result.get("subsets", {}).items():
        low, high = part["ci95"]
        console.print(f"  {subset}: accuracy {part['accuracy']:.1%} [95% CI {low:.1%}, {high:.1%}] n={part['n']}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump({k: v for k, v in result.items() if k != "samples"}, sys.stdout)
    sys.stdout.write("\n")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
