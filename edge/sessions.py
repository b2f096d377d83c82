"""Per-session memory as the API sees it: recent turns (short-term) and facts (long-term),
and who may see them.

A session belongs to the token that first wrote to it (a query with its `session_id`, or a
fact). Another client token gets `SessionNotFound` (404) for everything about it, exactly
as for a session that does not exist; operator and admin callers see every session.
"""

from __future__ import annotations

import msgspec

from aivos.edge.results import SITE, Caller
from aivos.edge.store import Fact, Store, Turn
from aivos.edge.store import memory as _memory
from aivos.shared.errors import FactNotFound, NotFound

__all__ = ["SessionMemory", "SessionNotFound", "Sessions"]


class SessionNotFound(NotFound):
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"no session {session_id!r}")


class SessionMemory(msgspec.Struct, frozen=True):
    session_id: str
    turns: list[Turn]
    facts: list[Fact]


class Sessions:
    def __init__(self, store: Store) -> None:
        self.store = store

    def check(self, session_id: str, caller: Caller) -> None:
        """SessionNotFound unless the session exists and `caller` may see it."""
        owner = _memory.session_owner(self.store.readers.get(), session_id)
        if owner is _memory.UNCLAIMED or not caller.may_see(owner):
            raise SessionNotFound(session_id)

    async def claim(self, session_id: str, caller: Caller) -> None:
        """Before a write to the session: a new session becomes the caller's; someone else's
        raises SessionNotFound."""
        owner = _memory.session_owner(self.store.readers.get(), session_id)
        if owner is _memory.UNCLAIMED:
            owner = await self.store.transact(
                lambda c: _memory.claim_session(c, session_id, caller.token_id)
            )
        if not caller.may_see(owner):
            raise SessionNotFound(session_id)

    def get(self, session_id: str, caller: Caller = SITE) -> SessionMemory:
        self.check(session_id, caller)
        turns = self.store.turns(session_id)
        facts = self.store.list_facts(session_id)
        return SessionMemory(session_id=session_id, turns=turns, facts=facts)

    def facts(self, session_id: str, caller: Caller = SITE) -> list[Fact]:
        self.check(session_id, caller)
        return self.store.list_facts(session_id)

    async def forget(self, session_id: str, caller: Caller = SITE) -> None:
        self.check(session_id, caller)
        await self.store.delete_session(session_id)

    async def put_fact(self, session_id: str, key: str, value: str, caller: Caller = SITE) -> Fact:
        await self.claim(session_id, caller)
        return await self.store.put_fact(session_id, key, value)

    def get_fact(self, session_id: str, key: str, caller: Caller = SITE) -> Fact:
        self.check(session_id, caller)
        fact = self.store.get_fact(session_id, key)
        if fact is None:
            raise FactNotFound(session_id, key)
        return fact

    async def delete_fact(self, session_id: str, key: str, caller: Caller = SITE) -> None:
        self.check(session_id, caller)
        if not await self.store.delete_fact(session_id, key):
            raise FactNotFound(session_id, key)
