"""Per-session memory as the API sees it: recent turns (short-term) and facts (long-term)."""

from __future__ import annotations

import msgspec

from aivos.edge.store import Fact, Store, Turn
from aivos.shared.errors import FactNotFound

__all__ = ["SessionMemory", "Sessions"]


class SessionMemory(msgspec.Struct, frozen=True):
    session_id: str
    turns: list[Turn]
    facts: list[Fact]


class Sessions:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, session_id: str) -> SessionMemory:
        turns = self.store.turns(session_id)
        facts = self.store.list_facts(session_id)
        return SessionMemory(session_id=session_id, turns=turns, facts=facts)

    def facts(self, session_id: str) -> list[Fact]:
        return self.store.list_facts(session_id)

    async def forget(self, session_id: str) -> None:
        await self.store.delete_session(session_id)

    async def put_fact(self, session_id: str, key: str, value: str) -> Fact:
        return await self.store.put_fact(session_id, key, value)

    def get_fact(self, session_id: str, key: str) -> Fact:
        fact = self.store.get_fact(session_id, key)
        if fact is None:
            raise FactNotFound(session_id, key)
        return fact

    async def delete_fact(self, session_id: str, key: str) -> None:
        if not await self.store.delete_fact(session_id, key):
            raise FactNotFound(session_id, key)
