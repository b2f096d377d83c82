"""The batch worker's usearch call (edge/knowledge/index.py `_search`, issue 16): the compiled
search on one thread finds what usearch's public `Index.search` finds, key for key and
distance for distance, and a usearch without the compiled handle gets the public call."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from usearch.index import Index

from aivos.edge.knowledge import index as index_module

DIM = 24


class _PublicOnly:
    """A usearch index seen through its public `search` alone (no compiled handle)."""

    def __init__(self, index: Index) -> None:
        self._index = index

    def search(self, *args: Any, **kwargs: Any) -> Any:
        return self._index.search(*args, **kwargs)


@pytest.fixture(scope="module")
def built() -> tuple[Index, np.ndarray]:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((60, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = Index(ndim=DIM, metric="cos", dtype=index_module.INDEX_DTYPE)
    index.add(np.arange(100, 160), vectors)
    queries = rng.standard_normal((25, DIM)).astype(np.float32)
    return index, queries / np.linalg.norm(queries, axis=1, keepdims=True)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_compiled_search_finds_what_the_public_search_finds(
    built: tuple[Index, np.ndarray], k: int
) -> None:
    index, queries = built
    for query in queries:
        keys, dists = index_module._search(index, query.reshape(1, -1), k)
        public = index.search(query, k)
        assert keys == public.keys.tolist()
        assert dists == public.distances.tolist()
        assert len(keys) == k and all(isinstance(key, int) for key in keys)


def test_without_the_compiled_handle_the_public_search_answers(
    built: tuple[Index, np.ndarray],
) -> None:
    index, queries = built
    for query in queries[:5]:
        direct = index_module._search(index, query.reshape(1, -1), 4)
        assert index_module._search(_PublicOnly(index), query.reshape(1, -1), 4) == direct  # type: ignore[arg-type]


def test_asking_for_more_than_the_index_holds_gives_what_it_holds() -> None:
    index = Index(ndim=DIM, metric="cos", dtype=index_module.INDEX_DTYPE)
    vectors = np.eye(DIM, dtype=np.float32)[:2]
    index.add(np.array([5, 9]), vectors)
    keys, dists = index_module._search(index, vectors[:1], 10)
    assert keys == [5, 9]
    assert dists[0] == pytest.approx(0.0, abs=1e-3) and dists[1] == pytest.approx(1.0, abs=1e-3)
