"""The review page of hard examples: candidates synced from the sites, clustered by meaning,
each cluster labelled by an operator as an existing intent, a new intent or out of scope.

Labels go to the candidate store (who and when, per example) and the operator log
(``review.label``). A form names the examples it labels (one checkbox each, all ticked), so
a label always applies to what the operator saw, even if new candidates arrived since.
`aivos models build --from-fleet` trains on the labelled examples.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from aivos.cloud.console.auth import Operator, check_csrf, page_guard
from aivos.cloud.console.clusters import Cluster, ClusterCache, Embedder
from aivos.cloud.ingest.candidates import LABEL_KINDS, Candidate, CandidateStore
from aivos.shared.errors import AivosError

__all__ = ["ReviewController", "setup_review"]

log = logging.getLogger(__name__)

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
_MEMBER = "m|"  # form key prefix of an example's checkbox: "m|<site>|<request_id>"


def setup_review(state: State, bundle: Path | None) -> None:
    """Lazily opened resources of the page: the candidate store (over the console's cloud
    store, once the ingest has created it) and the embedder of `bundle` (None: cluster by
    the sites' intent guesses)."""
    opened: dict[str, Any] = {}

    def candidates() -> CandidateStore | None:
        if "store" not in opened:
            cloud = state.cloud_store()
            if cloud is None:
                return None
            opened["store"] = CandidateStore(cloud)
        store: CandidateStore = opened["store"]
        return store

    def embedder() -> Embedder | None:
        if "embedder" not in opened:
            opened["embedder"] = None
            if bundle is not None and (bundle / "manifest.json").is_file():
                try:
                    opened["embedder"] = Embedder(bundle)
                except AivosError as exc:
                    log.warning("review: bundle %s not usable for clustering: %s", bundle, exc)
        found: Embedder | None = opened["embedder"]
        return found

    state.review_candidates = candidates
    state.review_embedder = embedder
    state.review_clusters = ClusterCache()


def _summary(labelled: list[Candidate]) -> list[dict[str, Any]]:
    by: dict[tuple[str, str], list[Candidate]] = {}
    for c in labelled:
        by.setdefault((c.label or "", c.label_kind or ""), []).append(c)
    rows = []
    for (label, kind), group in sorted(by.items()):
        last = max(group, key=lambda c: c.labelled_at or 0.0)
        rows.append(
            {
                "label": label,
                "kind": kind,
                "n": len(group),
                "by": last.labelled_by,
                "at": last.labelled_at,
                "examples": group[:5],
            }
        )
    return rows


def _view(
    store: CandidateStore | None, embedder: Embedder | None, cache: ClusterCache
) -> dict[str, Any]:
    if store is None:
        return {"has_store": False, "clusters": [], "labelled": [], "known": [], "n_open": 0}
    open_ = store.candidates(unlabelled=True)
    # the same open set with the same bundle: the grouping of an earlier page load
    clusters: list[Cluster] = cache.clusters(open_, embedder)
    return {
        "has_store": True,
        "clusters": clusters,
        "labelled": _summary(store.candidates(unlabelled=False)),
        "known": embedder.labels if embedder is not None else [],
        "bundle": embedder.manifest.bundle_version if embedder is not None else None,
        "n_open": len(open_),
    }


def _back(**params: str) -> Redirect:
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in params.items() if v})
    return Redirect(f"/review?{query}" if query else "/review", status_code=303)


class ReviewController(Controller):
    guards = [page_guard]
    include_in_schema = False
    path = "/review"

    @get("/")
    async def review_page(self, request: Request[Any, Any, Any]) -> Template:
        op: Operator = request.state.operator
        store = request.app.state.review_candidates()
        embedder = request.app.state.review_embedder()
        cache = request.app.state.review_clusters
        view = await asyncio.to_thread(_view, store, embedder, cache)
        return Template(
            "review.html",
            context={
                "operator": op.name,
                "csrf": op.csrf,
                "nav": "review",
                "flash": request.query_params.get("flash", ""),
                "error": request.query_params.get("error", ""),
                "kinds": LABEL_KINDS,
                **view,
            },
        )

    @post("/label")
    async def label(self, request: Request[Any, Any, Any], data: Form) -> Redirect:
        op: Operator = request.state.operator
        check_csrf(op, data.get("csrf"))
        store: CandidateStore | None = request.app.state.review_candidates()
        if store is None:
            return _back(error="no synced candidates yet")
        embedder: Embedder | None = request.app.state.review_embedder()
        keys = [
            (site, rid)
            for key in data
            if key.startswith(_MEMBER)
            for site, _, rid in [key[len(_MEMBER) :].partition("|")]
        ]
        kind = data.get("kind", "")
        label = data.get("new_name", "") if kind == "new_intent" else data.get("intent", "")
        try:
            stored = await asyncio.to_thread(
                store.label,
                keys,
                kind,
                label,
                op.name,
                embedder.labels if embedder is not None else None,
            )
        except AivosError as exc:
            return _back(error=f"not labelled: {exc}")
        registry = request.app.state.registry
        await asyncio.to_thread(
            registry.record_action,
            op.name,
            "review.label",
            stored,
            {"kind": kind, "n": len(keys), "examples": [f"{s}/{r}" for s, r in keys]},
        )
        return _back(flash=f"{len(keys)} example(s) labelled {stored} ({kind})")
