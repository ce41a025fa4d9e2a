"""`rlvr index build|query`: make a BM25 index for the `search` tool, and try queries against one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from rlvr.errors import ConfigError
from rlvr.tools.search import SearchIndex, load_search_index, resolve_corpus
from rlvr.types import format_hits

index_app = typer.Typer(help="Build and query BM25 indexes for the search tool.", no_args_is_help=True, add_completion=False)


@index_app.callback()
def _group() -> None:
    """Build and query BM25 indexes for the search tool."""
    # A callback keeps `build` and `query` named subcommands, so that `index_app` alone and
    # `rlvr index` take the same arguments.


def _fail(error: Exception) -> NoReturn:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(2)


@index_app.command()
def build(
    corpus: Annotated[str, typer.Argument(help='\'wiki\', or a .jsonl file of {"title", "text"} lines', metavar="CORPUS")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the index to")],
) -> None:
    """Index CORPUS with BM25 and save the index to a folder that `query` and recipes accept."""
    try:
        documents = resolve_corpus(corpus)
        SearchIndex.build(documents).save(out)
    except (ConfigError, OSError) as error:
        _fail(error)
    typer.echo(f"indexed {len(documents)} documents into {out}")


@index_app.command()
def query(
    source: Annotated[str, typer.Argument(help="An index folder, 'wiki', or a .jsonl corpus", metavar="FOLDER_OR_CORPUS")],
    text: Annotated[str, typer.Argument(help="What to search for")],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="How many passages to show")] = 3,
) -> None:
    """Print the passages the search tool would return for TEXT, as the model sees them."""
    try:
        index = load_search_index([source])
    except (ConfigError, OSError) as error:
        _fail(error)
    typer.echo(format_hits(index.search(text, k)))
