"""`KnowledgeIndex`: documents → chunks → vectors in a usearch HNSW index, on disk.

Layout of `directory`:

- ``meta.sqlite``   documents, chunks and their vectors (the durable truth, see `meta.py`)
- ``index.usearch`` the HNSW graph (cosine, f16), a cache rebuilt from meta.sqlite at need
- ``manifest.json`` embedding version and dim of the index file, and the meta generation
  it was saved at
- ``lock``          an fcntl lock serialising writers across processes (agent + `aivos kb add`)

A mutation writes the changed index to a temp file inside its meta.sqlite transaction
(before COMMIT), then renames it over ``index.usearch`` and finally rewrites the manifest
the same way. A full disk while writing the temp file or committing rolls back both and
is raised as `DiskFull`: nothing half-written (meta, index file and view stay at the old
generation). A crash after the commit leaves the manifest's generation behind
meta.sqlite's, and the next `open` rebuilds the file from the stored vectors. Searches run
on a read-only memory-mapped view and never see a half-applied change; mutations work on a
private writable copy and then swap the view.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np

# Importing usearch (2.26) before onnxruntime (1.32) in one process makes the later
# onnxruntime import segfault; loading onnxruntime first is safe. The edge agent and
# `aivos kb add` need both, so fix the order here, where usearch enters the process.
with contextlib.suppress(ImportError):
    import onnxruntime  # noqa: F401

from usearch.index import Index  # noqa: E402

from aivos.edge.knowledge.chunking import chunk_document, document_title
from aivos.edge.knowledge.meta import ChunkRow, MetaStore
from aivos.edge.knowledge.types import DocumentInfo, Embedder, Passage
from aivos.shared.atomicfile import write_atomic
from aivos.shared.errors import DataError, NotFound
from aivos.shared.filelock import exclusive
from aivos.shared.ids import new_id
from aivos.shared.progress import ProgressLog
from aivos.shared.sqlite import as_disk_full

__all__ = ["KnowledgeIndex", "INDEX_DTYPE"]

log = logging.getLogger(__name__)

INDEX_DTYPE = "f16"  # recall@10 equal to f32 on MiniLM vectors, half the memory (benchmarks/)
_FORMAT = 1
_EMBED_BATCH = 64
# Chunk rows a search keeps in memory (their text and document), so a query's passages cost
# dict lookups instead of a SQLite query (0.15-0.19 ms of a batch worker's CPU per query,
# benchmarks/edge_stage_cpu.py). Chunk keys are never reused (AUTOINCREMENT) and a key's row
# never changes, so a remembered row is that key's row for as long as the key exists; the
# rows are dropped whenever the searched view changes, and all at once when this many are held.
_ROW_CACHE = 8192


class _Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: int
    embedding_version: str
    embedding_dim: int
    metric: str
    dtype: str
    generation: int
    n_chunks: int


class KnowledgeIndex:
    """The site's passages. Thread-safe: searches run concurrently, mutations are serialised
    (within the process by a lock, across processes by an fcntl lock on `directory/lock`)."""

    def __init__(self, directory: Path, embedder: Embedder, meta: MetaStore) -> None:
        self.directory = directory
        self.embedder = embedder
        self.rebuilt = False
        self._meta = meta
        self._dim = int(embedder.embedding_dim)
        self._version = str(embedder.embedding_version)
        self._write_lock = threading.Lock()
        self._view: Index | None = None
        self._writable: Index | None = None
        self._generation = -1
        self._manifest_stamp: tuple[int, int] | None = None
        self._manifest_file = str(self.manifest_path)  # stat-ed by every search
        self._rows: dict[int, ChunkRow] = {}  # chunk rows of the current view (`_ROW_CACHE`)

    # -- paths ------------------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        return self.directory / "index.usearch"

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    @property
    def embedding_version(self) -> str:
        return self._version

    # -- lifecycle --------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path, embedder: Embedder) -> KnowledgeIndex:
        """Open (creating if needed) the index in `directory` for `embedder`'s vectors.

        Re-embeds every stored chunk when the index was built by another embedding version,
        and rebuilds the index file from meta.sqlite when it is missing, stale or unreadable.
        """
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        index = cls(root, embedder, MetaStore(root / "meta.sqlite"))
        try:
            with index._locked():
                index._load()
        except BaseException:
            index.close()
            raise
        return index

    def close(self) -> None:
        self._view = None
        self._rows.clear()
        self._writable = None
        self._meta.close()

    def __enter__(self) -> KnowledgeIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._meta.count_chunks()

    # -- documents --------------------------------------------------------------------------
    def add_document(self, source: str, text: str, title: str | None = None) -> DocumentInfo:
        """Chunk, embed and store a document; a document with the same `source` is replaced.

        Re-adding identical text (and title) is a no-op that returns the stored document.
        """
        if not source.strip():
            raise DataError("source", "source is empty")
        chunks = chunk_document(source, text)
        title = title if title is not None else document_title(text)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        existing = self._meta.document_by_source(source)
        if existing and existing.sha256 == digest and existing.title == title:
            return existing
        vectors = self._embed([c.embed_text for c in chunks], source)
        info = DocumentInfo(
            doc_id=new_id(),
            source=source,
            title=title,
            sha256=digest,
            added_at=time.time(),
            n_chunks=len(chunks),
        )
        rows = [(c.ordinal, c.text, c.heading) for c in chunks]
        staged: list[tuple[Path, Index]] = []

        def stage(removed: list[int], added: list[int], gen: int) -> None:
            staged.append(self._stage(removed, np.asarray(added, dtype=np.uint64), vectors))

        with self._locked(), self._mutation(staged):
            self._sync()
            _, _, gen = self._meta.replace_document(info, rows, vectors, self._version, stage)
            self._publish(*staged[0], gen)
        log.info("knowledge document %s added: %d chunks", info.doc_id, info.n_chunks)
        return info

    def delete_document(self, doc_id: str) -> bool:
        """Remove a document and its passages; False when there was no such document."""
        staged: list[tuple[Path, Index]] = []

        def stage(removed: list[int], added: list[int], gen: int) -> None:
            staged.append(self._stage(removed, None, None))

        with self._locked(), self._mutation(staged):
            self._sync()
            result = self._meta.delete_document(doc_id, stage)
            if result is None:
                return False
            keys, gen = result
            self._publish(*staged[0], gen)
        log.info("knowledge document %s deleted (%d chunks)", doc_id, len(keys))
        return True

    def list_documents(self) -> list[DocumentInfo]:
        return self._meta.documents()

    def get_document(self, doc_id: str) -> DocumentInfo:
        for doc in self._meta.documents():
            if doc.doc_id == doc_id:
                return doc
        raise NotFound(f"no knowledge document {doc_id}")

    def passage_texts(self) -> Iterator[str]:
        """The text of every passage a search can return (`Passage.text`), in chunk order:
        the exact strings the escalator sends, for warming the masker's span cache."""
        return self._meta.passage_texts()

    # -- search -----------------------------------------------------------------------------
    def search(self, query: str, k: int = 3) -> list[Passage]:
        if not query.strip():
            raise DataError("query", "query is empty")
        return self.search_vector(self._embed([query], "query")[0], k)

    def search_vector(self, vec: np.ndarray, k: int = 3) -> list[Passage]:
        """The `k` passages nearest to an L2-normalised query embedding, best first."""
        return [
            Passage(row.text, row.source, row.doc_id, key, score, row.heading)
            for key, score, row in self.nearest(vec, k)
        ]

    def nearest(self, vec: np.ndarray, k: int = 3) -> list[tuple[int, float, ChunkRow]]:
        """(chunk key, cosine score rounded to 6 places, stored row) of the `k` chunks nearest
        to an L2-normalised query embedding, best first: `search_vector` without building its
        passages, for a caller that builds its own (the batch worker, edge/serving.py)."""
        query = np.asarray(vec, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self._dim:
            raise DataError("vector", f"expected {self._dim} dimensions, got {query.shape[1]}")
        if k <= 0:
            return []
        self._refresh_if_changed()
        view = self._view
        if view is None:
            return []
        size = len(view)
        if size == 0:
            return []
        keys, dists = _search(view, query, min(k, size))
        out = []
        for key, dist, row in zip(keys, dists, self._rows_of(keys), strict=True):
            if row is None:  # deleted between the view swap and now
                continue
            out.append((key, round(min(1.0, max(-1.0, 1.0 - dist)), 6), row))
        return out

    def _rows_of(self, keys: list[int]) -> list[ChunkRow | None]:
        """The stored row of each key (None: deleted): remembered since the view last
        changed, or read from meta.sqlite (and remembered). Read into a list at once:
        another thread may drop the remembered rows at any moment."""
        cache = self._rows
        rows = [cache.get(key) for key in keys]
        if None not in rows:
            return rows
        found = self._meta.lookup([key for key, row in zip(keys, rows, strict=True) if row is None])
        if len(cache) + len(found) > _ROW_CACHE:
            cache.clear()
        cache.update(found)
        return [found.get(key) if row is None else row for key, row in zip(keys, rows, strict=True)]

    # -- internals --------------------------------------------------------------------------
    def _embed(self, texts: list[str], source: str) -> np.ndarray:
        parts = [
            np.asarray(self.embedder.embed_batch(texts[i : i + _EMBED_BATCH]), dtype=np.float32)
            for i in range(0, len(texts), _EMBED_BATCH)
        ]
        out = np.concatenate(parts) if parts else np.zeros((0, self._dim), np.float32)
        if out.shape != (len(texts), self._dim):
            raise DataError(source, f"embedder returned shape {out.shape}")
        return out

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._write_lock, exclusive(self.directory / "lock", "knowledge index writer"):
            yield

    @contextlib.contextmanager
    def _mutation(self, staged: list[tuple[Path, Index]]) -> Iterator[None]:
        """A failed mutation leaves no trace: its temp file goes, the writable copy (which
        holds the uncommitted change) is dropped; a full disk is raised as `DiskFull`."""
        try:
            yield
        except BaseException as exc:
            self._writable = None
            for tmp, _ in staged:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            full = as_disk_full(exc, self.directory)
            if full is not None and full is not exc:
                raise full from exc
            raise

    def _read_manifest(self) -> _Manifest | None:
        try:
            return msgspec.json.decode(self.manifest_path.read_bytes(), type=_Manifest)
        except FileNotFoundError:
            return None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("knowledge manifest unreadable (%s); the index will be rebuilt", exc)
            return None

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._manifest_file)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _load(self) -> None:
        """Bring the in-memory view in line with the files (caller holds the locks)."""
        self._writable = None
        stored_version = self._meta.get_state("embedding_version")
        if self._meta.count_chunks() and stored_version != self._version:
            log.warning(
                "knowledge index was embedded with %s, the model uses %s: re-embedding %d chunks",
                stored_version,
                self._version,
                self._meta.count_chunks(),
            )
            self._reembed()
            self._rebuild()
            self.rebuilt = True
            return
        gen = self._meta.generation()
        manifest = self._read_manifest()
        reason = None
        if manifest is None:
            reason = "no manifest"
        elif manifest.embedding_version != self._version or manifest.embedding_dim != self._dim:
            reason = "manifest is for another embedding version"
        elif manifest.generation != gen:
            reason = f"index is at generation {manifest.generation}, metadata at {gen}"
        else:
            try:
                view = Index.restore(str(self.index_path), view=True)
            except Exception as exc:  # usearch raises RuntimeError/ValueError on bad files
                view, reason = None, f"index file unreadable ({exc})"
            if view is None and reason is None:
                reason = "index file missing"
            elif view is not None and (
                len(view) != self._meta.count_chunks() or view.ndim != self._dim
            ):
                reason = "index file does not match the metadata"
            elif view is not None:
                self._view, self._generation = view, gen
                self._rows.clear()
                self._manifest_stamp = self._stamp()
                return
        fresh = reason == "no manifest" and not self._meta.count_chunks()
        if not fresh:
            log.warning("rebuilding knowledge index from meta.sqlite: %s", reason)
        self._rebuild()
        self.rebuilt = self.rebuilt or not fresh

    def _reembed(self) -> None:
        # a log line every few seconds (chunks done, rate, ETA): re-embedding a large index
        # at start-up must not look like a hang
        progress = ProgressLog(
            log, "knowledge index re-embedding", self._meta.count_chunks(), unit="chunks"
        )

        def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for batch in self._meta.iter_texts(_EMBED_BATCH):
                keys = np.array([k for k, _ in batch], dtype=np.uint64)
                yield keys, self._embed([t for _, t in batch], "re-embed")
                progress.advance(len(batch))

        self._meta.replace_vectors(batches(), self._version)
        progress.finish()

    def _rebuild(self) -> None:
        index = self._new_index()
        for keys, vecs in self._meta.iter_vectors(self._dim):
            index.add(keys, vecs)
        self._save(index, self._meta.generation())
        self._writable = index

    def _new_index(self) -> Index:
        return Index(ndim=self._dim, metric="cos", dtype=INDEX_DTYPE)

    def _sync(self) -> None:
        """Before a mutation: pick up changes another process committed since we loaded."""
        if self._meta.generation() != self._generation:
            log.info("knowledge index changed on disk; reloading")
            self._load()

    def _stage(
        self, removed: list[int], keys: np.ndarray | None, vectors: np.ndarray | None
    ) -> tuple[Path, Index]:
        """Apply a change to the writable copy and write it to a temp file (fsynced): (its
        path, the copy). Runs inside the meta transaction: raising here rolls the change back."""
        index = self._writable
        if index is None:
            index = Index.restore(str(self.index_path), view=False)
            if index is None:  # pragma: no cover - the file was checked on load
                index = self._new_index()
        self._writable = index
        for key in removed:
            index.remove(key)
        if keys is not None and vectors is not None and len(keys):
            index.add(keys, vectors)
        return self._write_temp(index), index

    def _write_temp(self, index: Index) -> Path:
        # saved to memory and written here, so a full disk is an OSError(ENOSPC)
        data = index.save()
        if data is None:  # pragma: no cover - usearch returns the bytes when given no path
            raise RuntimeError("usearch returned no index bytes")
        tmp = self.directory / f".index.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp

    def _save(self, index: Index, gen: int) -> None:
        """Write the index then the manifest, each via temp file + fsync + rename; re-view."""
        self._publish(self._write_temp(index), index, gen)

    def _publish(self, tmp: Path, index: Index, gen: int) -> None:
        """Rename a written index file into place, then the manifest; swap the view. After a
        committed change, a manifest that cannot be written (a full disk) only leaves it
        behind meta.sqlite: the next `open` rebuilds the file, so it is logged, not raised."""
        os.replace(tmp, self.index_path)
        manifest = _Manifest(
            format=_FORMAT,
            embedding_version=self._version,
            embedding_dim=self._dim,
            metric="cos",
            dtype=INDEX_DTYPE,
            generation=gen,
            n_chunks=len(index),
        )
        try:
            manifest_json = msgspec.json.format(msgspec.json.encode(manifest))
            write_atomic(self.manifest_path, manifest_json, sync_dir=True)
        except OSError as exc:
            if as_disk_full(exc, self.directory) is None:
                raise
            log.warning("knowledge manifest not updated (disk full); rebuilt at next open")
        self._view = Index.restore(str(self.index_path), view=True)
        self._rows.clear()
        self._generation = gen
        self._manifest_stamp = self._stamp()

    def _refresh_if_changed(self) -> None:
        """Searches pick up an index another process (e.g. `aivos kb add`) saved."""
        stamp = self._stamp()
        if stamp == self._manifest_stamp or stamp is None:
            return
        if not self._write_lock.acquire(blocking=False):
            return  # our own writer is mid-save; it swaps the view when done
        try:
            manifest = self._read_manifest()
            if manifest is None or manifest.generation == self._generation:
                self._manifest_stamp = stamp
                return
            if manifest.embedding_version != self._version:
                return  # another embedder rebuilt the index; our reopen will re-embed
            view = Index.restore(str(self.index_path), view=True)
            self._view, self._writable = view, None
            self._rows.clear()
            self._generation = manifest.generation
            self._manifest_stamp = stamp
            log.info("knowledge index reloaded at generation %d", manifest.generation)
        except Exception as exc:  # a racing writer replaced the file again; next search retries
            log.debug("knowledge index reload deferred: %s", exc)
        finally:
            self._write_lock.release()


def _search(view: Index, query: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """Keys and distances of one (1, dim) query's `k` nearest, in the calling thread.

    `Index.search` (usearch 2.26) wraps the compiled `search_many` in argument checks and a
    `BatchMatches`, and by default (`threads=0`) hands even one query to a pool of every
    core: ~50 us of a batch worker's CPU per query for an index of a few dozen chunks, ~20 us
    calling the compiled search directly on one thread (same call, same results). A usearch
    without it gets the public call, on one thread as well."""
    compiled = getattr(view, "_compiled", None)
    if compiled is None:
        found = view.search(query[0], k, threads=1)
        return found.keys.tolist(), found.distances.tolist()
    keys, dists, counts = compiled.search_many(query, k, False, 1)[:3]
    n = int(counts[0])
    return keys[0, :n].tolist(), dists[0, :n].tolist()
