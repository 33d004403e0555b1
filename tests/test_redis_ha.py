"""``redis+sentinel://`` URLs and ``SECSTREAM_MIN_REPLICAS`` (Redis ``WAIT``) on a real
primary and replica; the Sentinel failover itself is in test_failover.py."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from live import LiveApp
from secstream import Publisher
from secstream.config import SentinelURL, Settings
from secstream.errors import ConfigError, NotReplicated
from secstream.eventlog import RedisEventLog
from secstream.protocol import PublishRequest
from secstream.redis_server import RedisServer, free_port
from secstream.redis_watch import RedisWatch

SECRET = {"SECSTREAM_JWT_SECRET": "a-test-secret-that-is-long-enough-000"}
LiveAppFactory = Callable[..., AbstractAsyncContextManager[LiveApp]]

# -- settings ----------------------------------------------------------------------------------


def test_a_sentinel_url_is_parsed() -> None:
    url = "redis+sentinel://:p%40ss@10.0.0.1:26379,[::1]:26380,sentinel-3.local:1/prod.events/4"
    settings = Settings.from_env({**SECRET, "SECSTREAM_REDIS_URL": url})
    assert settings.redis_url == url
    target = SentinelURL.parse(url)
    assert target.sentinels == (("10.0.0.1", 26379), ("::1", 26380), ("sentinel-3.local", 1))
    assert (target.master, target.db, target.username, target.password) == (
        "prod.events", 4, None, "p@ss",
    )  # fmt: skip
    assert SentinelURL.parse("redis+sentinel://h:1/m").db == 0


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://h/m/0", "is not host:port"),
        ("redis+sentinel://h:0/m/0", "is not host:port"),
        ("redis+sentinel://h:65536/m/0", "is not host:port"),
        ("redis+sentinel://h:1,/m/0", "is not host:port"),
        ("redis+sentinel://h:1", "master name"),
        ("redis+sentinel://h:1/", "master name"),
        ("redis+sentinel://h:1/m m/0", "master name"),
        ("redis+sentinel://h:1/m/x", "is not a number"),
        ("redis+sentinel://h:1/m/0?ssl=1", "no query"),
        ("redis+sentinel://" + ",".join(f"h:{p}" for p in range(1, 18)) + "/m", "at most 16"),
        ("sentinel://h:1/m", "must start with"),
    ],
)
def test_a_bad_sentinel_url_names_the_setting(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match="SECSTREAM_REDIS_URL") as caught:
        Settings.from_env({**SECRET, "SECSTREAM_REDIS_URL": url})
    assert why in str(caught.value)


def test_min_replicas_defaults_to_0_and_is_bounded() -> None:
    assert Settings.from_env(SECRET).min_replicas == 0
    assert Settings.from_env({**SECRET, "SECSTREAM_MIN_REPLICAS": "2"}).min_replicas == 2
    for raw in ("-1", "17", "one"):
        with pytest.raises(ConfigError, match="SECSTREAM_MIN_REPLICAS"):
            Settings.from_env({**SECRET, "SECSTREAM_MIN_REPLICAS": raw})


def test_serve_with_a_bad_sentinel_url_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "secstream", "serve", "--redis-url", "redis+sentinel://x/m"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", **SECRET},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "SECSTREAM_REDIS_URL" in result.stderr and "host:port" in result.stderr


def test_the_watch_reports_outages_and_failovers() -> None:
    watch = RedisWatch()
    watch.answered("10.0.0.1:6379")
    assert watch.report() == {"primary": "10.0.0.1:6379", "failovers": 0}
    watch.failed("Connection refused")
    watch.failed("No master found for 'm'")
    time.sleep(0.01)
    down = watch.report()
    assert down["reason"] == "No master found for 'm'" and down["down_for"] > 0
    watch.unreplicated(1, 0)
    watch.answered("10.0.0.2:6379")
    up = watch.report()
    assert "reason" not in up and up["failovers"] == 1
    assert up["last_failover"]["from"] == "10.0.0.1:6379"
    assert up["last_failover"]["to"] == "10.0.0.2:6379"
    (outage,) = up["outages"]
    assert outage["reasons"] == ["Connection refused", "No master found for 'm'"]
    assert outage["seconds"] > 0
    assert up["last_unreplicated_write"]["confirmed"] == 0
    for i in range(10):  # bounded
        watch.failed(f"reason {i}" * 100)
        watch.answered(None)
    assert len(watch.report()["outages"]) == 5
    assert all(len(r) <= 300 for o in watch.report()["outages"] for r in o["reasons"])


# -- WAIT on a real primary and replica --------------------------------------------------------


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer(tmp_path / "primary", port=free_port(), die_with_parent=True)
    with primary:
        replica = RedisServer(
            tmp_path / "replica",
            port=free_port(),
            appendonly=False,  # a replica writing its first AOF ignores SIGTERM
            die_with_parent=True,
            extra_args=["--replicaof", "127.0.0.1", str(primary.port)],
        )
        with replica:
            yield primary, replica


@pytest.fixture
async def primary_redis(
    replicated: tuple[RedisServer, RedisServer],
) -> AsyncIterator[Redis]:
    client = Redis.from_url(replicated[0].url)
    try:
        await replicas_connected(client)
        yield client
    finally:
        await client.aclose()


async def replicas_connected(primary: Redis, count: int = 1, within: float = 10) -> None:
    for _ in range(int(within / 0.05)):
        if (await primary.info("replication"))["connected_slaves"] == count:
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"{count} replicas not connected within {within} s")


def _event(n: int) -> PublishRequest:
    return PublishRequest(event_type="system.status", data={"n": n})


@pytest.mark.anyio
async def test_an_append_waits_for_the_replicas_asked_for(
    replicated: tuple[RedisServer, RedisServer], primary_redis: Redis
) -> None:
    _, replica = replicated
    log = RedisEventLog(primary_redis, prefix="ha", min_replicas=1)
    with anyio.fail_after(20):
        (first,) = await log.append([_event(0)], idempotency_key="k0", sub="p")
        # WAIT confirmed it: the replica holds it at once
        async with Redis.from_url(replica.url) as on_replica:
            assert [r[0].decode() for r in await on_replica.xrange("ha:log")] == [first]
        assert await log.idempotent_ids("k0", "p") == [first]

        replica.kill()
        started = time.monotonic()
        with pytest.raises(NotReplicated, match="0 of 1 replicas") as caught:
            await log.append([_event(1)], idempotency_key="k1", sub="p")
        assert 0.9 < time.monotonic() - started < 5  # WAIT's 1 s, not forever
        assert (caught.value.wanted, caught.value.confirmed) == (1, 0)
        # a retry under the same key is refused as well: the first append is not confirmed
        with pytest.raises(NotReplicated):
            await log.idempotent_ids("k1", "p")
        with pytest.raises(NotReplicated):
            await log.append([_event(1)], idempotency_key="k1", sub="p")
        # an unseen key is no error of the check: the append decides
        assert await log.idempotent_ids("never", "p") is None
        assert await RedisEventLog(primary_redis, prefix="ha").append([_event(2)])  # 0: no WAIT

        replica.start()
        await replicas_connected(primary_redis)
        # once a replica is back, the retry is confirmed, with the first append's id
        (kept,) = await log.idempotent_ids("k1", "p") or [""]
        assert await log.append([_event(1)], idempotency_key="k1", sub="p") == [kept]
        assert await primary_redis.xlen("ha:log") == 3


@pytest.mark.anyio
async def test_a_publish_without_its_replicas_is_503_and_its_retry_202(
    replicated: tuple[RedisServer, RedisServer],
    primary_redis: Redis,
    live_app: LiveAppFactory,
    key_prefix: str,
) -> None:
    primary, replica = replicated
    with anyio.fail_after(30):
        async with (
            live_app(redis_url=primary.url, min_replicas=1) as app,
            app.http(app.token("pub", ["publisher"])) as http,
        ):
            body = {"event_type": "system.alert", "data": {"title": "a"}}
            ok = await http.post("/api/v1/events", json=body, headers={"Idempotency-Key": "a"})
            assert ok.status_code == 202, ok.text
            replica.kill()
            refused = await http.post(
                "/api/v1/events", json=body, headers={"Idempotency-Key": "b"}
            )
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "1"
            assert "not confirmed by 1 replicas" in refused.json()["message"]
            ready = (await http.get("/health/ready")).json()
            assert ready["status"] == "ok"  # Redis answers: reads and sockets still work
            assert ready["last_unreplicated_write"]["wanted"] == 1
            replica.start()
            await replicas_connected(primary_redis)
            retried = await http.post(
                "/api/v1/events", json=body, headers={"Idempotency-Key": "b"}
            )
            assert retried.status_code == 202, retried.text
            assert await primary_redis.xlen(f"{key_prefix}:log") == 2  # appended once


def test_publish_with_a_bad_sentinel_url_or_replica_count_exits_2(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "secstream", "publish", "--event-type", "system.alert"]
    for env, url in (
        ({}, "redis+sentinel://no-port/m"),
        ({"SECSTREAM_MIN_REPLICAS": "one"}, "redis://127.0.0.1:1/0"),
    ):
        result = subprocess.run(
            [*base, "--redis-url", url],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert ("host:port" if not env else "SECSTREAM_MIN_REPLICAS") in result.stderr


@pytest.mark.anyio
async def test_the_publishers_keys_are_a_namespace_of_their_own(
    shared_redis_url: str, key_prefix: str
) -> None:
    async with (
        Publisher(shared_redis_url, key_prefix) as mine,
        Publisher(shared_redis_url, key_prefix, sub="svc-b") as theirs,
    ):
        first = await mine.publish("system.status", {"n": 1}, idempotency_key="k")
        assert await mine.publish("system.status", {"n": 2}, idempotency_key="k") == first
        other = await theirs.publish("system.status", {"n": 3}, idempotency_key="k")
        assert other != first
        assert await mine.log.idempotent_ids("k", "svc-b") == [other]
