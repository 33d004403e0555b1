"""A test module in a process of its own: ``python cancel_worker.py URL PREFIX TEST_ID USER``.

Prints ``started`` once its run has begun, then one JSON line when a cancel request reached
it: the wall-clock time it arrived, who sent it and why. It publishes nothing while it
waits, so Redis may restart meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from secstream import Publisher


async def main(url: str, prefix: str, test_id: str, user: str) -> None:
    seen: list[float] = []
    async with Publisher(url, key_prefix=prefix) as pub:
        async with pub.test_run(
            test_id, module="worker", user_id=user, metadata={"target": "10.9.9.9"}
        ) as run:

            async def note() -> None:
                await run.cancel_requested.wait()
                seen.append(time.time())

            watcher = asyncio.ensure_future(note())
            print("started", flush=True)
            await asyncio.sleep(60)
        await watcher
        print(
            json.dumps({"seen_at": seen[0], "by": run.cancelled_by, "reason": run.cancel_reason,
                        "status": run.status}),
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
