"""Domain values -> HTTP response bodies (`schemas`). The edge core never sees these."""

from __future__ import annotations

from aivos.edge.agent import Readiness
from aivos.edge.api.schemas import (
    DocumentOut,
    FactOut,
    GeneratorOut,
    InferResponse,
    JobAccepted,
    JobOut,
    PassageOut,
    ReadyOut,
    SearchOut,
    SessionOut,
    TurnOut,
)
from aivos.edge.documents import SearchResult
from aivos.edge.jobs import JobStatus
from aivos.edge.knowledge.types import DocumentInfo
from aivos.edge.results import InferResult, Passage
from aivos.edge.sessions import SessionMemory
from aivos.edge.store import Fact

__all__ = [
    "document_out",
    "fact_out",
    "infer_response",
    "job_accepted",
    "job_out",
    "ready_out",
    "search_out",
    "session_out",
]


def _passages(passages: list[Passage]) -> list[PassageOut]:
    return [PassageOut(p.text, p.source, p.score, p.doc_id, p.chunk_id) for p in passages]


def infer_response(r: InferResult) -> InferResponse:
    return InferResponse(
        request_id=r.request_id,
        intent=r.intent,
        confidence=r.confidence,
        decision=r.decision,
        answer=r.answer,
        passages=_passages(r.passages),
        model_version=r.model_version,
        latency_ms=r.latency_ms,
        job_id=r.job_id,
        answered_by=r.answered_by,
        truncated=r.truncated,
        run_id=r.run_id,
        generator=(
            None
            if r.generator is None
            else GeneratorOut(r.generator.model, r.generator.version, r.generator.fallback)
        ),
    )


def job_accepted(job: JobStatus) -> JobAccepted:
    return JobAccepted(job_id=job.job_id, status=job.status, status_url=f"/v1/jobs/{job.job_id}")


def job_out(job: JobStatus) -> JobOut:
    return JobOut(
        job_id=job.job_id,
        status=job.status,
        created_at=job.created_at,
        updated_at=job.updated_at,
        result=job.result,
        error=job.error,
    )


def document_out(info: DocumentInfo) -> DocumentOut:
    return DocumentOut(
        doc_id=info.doc_id,
        source=info.source,
        title=info.title,
        n_chunks=info.n_chunks,
        added_at=info.added_at,
    )


def search_out(found: SearchResult) -> SearchOut:
    return SearchOut(
        query=found.query,
        passages=_passages(found.passages),
        embedding_version=found.embedding_version,
    )


def fact_out(fact: Fact) -> FactOut:
    return FactOut(key=fact.key, value=fact.value, updated_at=fact.updated_at)


def session_out(memory: SessionMemory) -> SessionOut:
    return SessionOut(
        session_id=memory.session_id,
        turns=[TurnOut(role=t.role, text=t.text, ts=t.ts) for t in memory.turns],
        facts=[fact_out(f) for f in memory.facts],
    )


def ready_out(ready: Readiness) -> ReadyOut:
    return ReadyOut(
        ready=ready.ready,
        checks=ready.checks,
        model_version=ready.model_version,
        provider=ready.provider,
        link=ready.link,
    )
