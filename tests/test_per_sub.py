"""Per-token-``sub`` bounds over real sockets: stored ``client_id`` offsets (issue 9, row 14)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio
import pytest

from live import LiveApp
from secstream.eventlog import MAX_CLIENT_IDS

pytestmark = pytest.mark.anyio

LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]


async def test_sixty_throwaway_client_ids_keep_fifty_offsets(live_app: LiveAppFactory) -> None:
    with anyio.fail_after(60):
        async with live_app() as app:
            offset = await app.publish("system.status", {"n": 1})
            token = app.token("churner", ["viewer"])
            async with app.ws(app.token("bystander", ["viewer"]), client_id="desk") as ws:
                await ws.send({"type": "ack", "id": "a", "offset": offset})
                await ws.expect("acked", ref="a", offset=offset)
            for i in range(60):
                async with app.ws(token, client_id=f"tmp-{i}") as ws:
                    await ws.send({"type": "ack", "id": "a", "offset": offset})
                    await ws.expect("acked", ref="a", offset=offset)
            log, redis = app.service.log, app.service.redis

            async def stored() -> list[bytes]:
                return [k async for k in redis.scan_iter(match=log.offset_key("churner", "*"))]

            # (acks may be written in batches a little after ``acked``)
            for _ in range(100):
                if await log.stored_offset("churner", "tmp-59") is not None:
                    break
                await anyio.sleep(0.05)
            assert len(await stored()) == MAX_CLIENT_IDS == 50
            # the ten acknowledged first are forgotten: they start over as new clients
            for i in (0, 9):
                async with app.ws(token, client_id=f"tmp-{i}") as ws:
                    assert ws.welcome["resume_from"] is None
            async with app.ws(token, client_id="tmp-59") as ws:
                assert ws.welcome["resume_from"] == offset
            # another sub's offsets are not touched
            async with app.ws(app.token("bystander", ["viewer"]), client_id="desk") as ws:
                assert ws.welcome["resume_from"] == offset
