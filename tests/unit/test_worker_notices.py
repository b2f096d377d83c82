"""The worker's batched notices to a router (`cloud.worker.notices`): one message per router
per window, a full batch at once, `take` for a notice that must go now, `close` sends the
rest."""

from __future__ import annotations

import asyncio

from aivos.cloud.worker.notices import NoticeBatcher, decode_notices


async def test_notices_are_batched_per_router_and_flushed() -> None:
    sent: list[tuple[str, list[tuple[str, int]]]] = []

    async def publish(subject: str, data: bytes) -> None:
        sent.append((subject, [(n.reply, n.n_tokens) for n in decode_notices(data)]))

    batcher = NoticeBatcher(publish, window_s=0.05, max_batch=3)
    batcher.add("r1.n", "r1.1", "v", 1, 0)
    batcher.add("r2.n", "r2.1", "v", 2, 0)
    batcher.add("r1.n", "r1.2", "v", 3, 0)
    assert sent == []  # waiting for the window
    for _ in range(1000):  # bounded: a batcher that never flushes fails below
        if len(sent) >= 2:
            break
        await asyncio.sleep(0.01)
    assert sorted(sent) == [("r1.n", [("r1.1", 1), ("r1.2", 3)]), ("r2.n", [("r2.1", 2)])]

    sent.clear()
    for i in range(3):  # a full batch goes out without waiting for the window
        batcher.add("r1.n", f"r1.{i}", "v", i, 0)
    batcher.add("r1.n", "r1.9", "v", 9, 5)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sent == [("r1.n", [("r1.0", 0), ("r1.1", 1), ("r1.2", 2)])]

    # `take`: the queued notices for that router with this one, for the caller to send now
    data = batcher.take("r1.n", "r1.10", "v", 10, 0)
    assert [(n.reply, n.prompt_tokens) for n in decode_notices(data)] == [
        ("r1.9", 5),
        ("r1.10", 0),
    ]
    batcher.add("r2.n", "r2.2", "v", 1, 0)
    await batcher.close()  # sends what is queued, without the window
    assert sent[-1] == ("r2.n", [("r2.2", 1)])
    assert len(sent) == 2
