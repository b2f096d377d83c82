"""`aivos kb add`: ingest text/Markdown files into the site's knowledge index.

Safe to run while the agent is serving: writers on the same index directory serialise on an
fcntl lock, and the agent's searches pick up the saved index on their next call.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from aivos.edge.knowledge.chunking import chunk_document, decode_document
from aivos.edge.knowledge.index import KnowledgeIndex
from aivos.shared.cli_options import bundle_option, data_dir_option
from aivos.shared.errors import DataError
from aivos.shared.paths import default_bundle_dir
from aivos.shared.progress import progress_display

__all__ = ["kb_add_cmd", "collect_documents", "knowledge_dir", "DOCUMENT_SUFFIXES"]

log = logging.getLogger(__name__)

DOCUMENT_SUFFIXES = (".md", ".markdown", ".txt")


def knowledge_dir(data_dir: Path) -> Path:
    """Where the agent with data directory `data_dir` keeps its knowledge index."""
    return data_dir / "knowledge"


def collect_documents(paths: list[Path]) -> list[tuple[str, Path]]:
    """(source name, file) for each argument; directories contribute their .md/.txt files.

    A file given directly is named by its file name; a file found under a directory argument
    by its path relative to that directory's parent (``kb/cards.md``), so re-running the
    same command replaces documents instead of duplicating them.
    """
    found: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if file.suffix.lower() in DOCUMENT_SUFFIXES:
                    found[file.relative_to(path.parent).as_posix()] = file
        elif path.is_file():
            found[path.name] = path
        else:
            raise DataError(str(path), "no such file or directory")
    if not found:
        raise DataError(", ".join(map(str, paths)), "no .md, .markdown or .txt documents found")
    return sorted(found.items())


@click.command("add")
@data_dir_option(
    "The agent's data directory (the index lives in DATA_DIR/knowledge).", required=True
)
@bundle_option(
    "Intent model bundle whose embeddings the index uses (default: the built-in bundle)."
)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def kb_add_cmd(data_dir: Path, bundle: Path | None, paths: tuple[Path, ...]) -> None:
    """Chunk, embed and index text/Markdown documents (files or directories)."""
    from aivos.edge.intent.runtime import IntentModel

    documents = collect_documents(list(paths))
    texts = [(source, decode_document(str(file), file.read_bytes())) for source, file in documents]
    for source, text in texts:  # refuse the whole batch before writing anything
        chunk_document(source, text)
    model = IntentModel.load(bundle or default_bundle_dir())
    console = Console()
    table = Table(title="Knowledge index")
    for column in ("source", "title", "chunks", "status", "doc_id"):
        table.add_column(column, overflow="fold")
    with KnowledgeIndex.open(knowledge_dir(data_dir), model) as index:
        if index.rebuilt:
            console.print(
                "[yellow]index rebuilt for embedding version[/yellow] " + index.embedding_version
            )
        before = {doc.source: doc for doc in index.list_documents()}
        # a bar on a terminal, plain lines (started, every few seconds, done) otherwise
        with progress_display(Console(stderr=True)) as progress:
            task = progress.add_task(f"indexing {len(texts)} documents", total=len(texts))
            for source, text in texts:
                info = index.add_document(source, text)
                old = before.get(source)
                status = "added" if old is None else ("unchanged" if old == info else "replaced")
                table.add_row(source, info.title or "", str(info.n_chunks), status, info.doc_id)
                progress.advance(task)
        total_docs, total_chunks = len(index.list_documents()), len(index)
    console.print(table)
    console.print(f"{total_docs} documents, {total_chunks} passages in {knowledge_dir(data_dir)}")
