"""``secstream tail`` against a running ``secstream serve``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from live import JWT_SECRET, hs256
from secstream.tail import line, summary, ws_url
from support import ServeProcess

ADMIN = hs256({"sub": "ops", "roles": ["admin"], "exp": time.time() + 3600})


def tail(proc: ServeProcess, *args: str, token: str = ADMIN) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "secstream", "tail", "--url", proc.base_url, "--token", token,
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def publish(proc: ServeProcess, event_type: str, data: dict[str, object], **extra: object) -> str:
    response = httpx.post(
        f"{proc.base_url}/api/v1/events",
        json={"event_type": event_type, "data": data, **extra},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def started(watcher: subprocess.Popen[str]) -> None:
    """Wait for the welcome line on stderr (the subscription follows it at once)."""
    assert watcher.stderr is not None
    first = watcher.stderr.readline()
    assert "connected to node" in first, first
    time.sleep(0.5)


@pytest.mark.slow
def test_tail_prints_one_line_per_event_filtered_by_pattern_and_test(
    redis_url: str, serve: Callable[..., ServeProcess]
) -> None:
    proc = serve(redis_url, env={"SECSTREAM_JWT_SECRET": JWT_SECRET})
    watcher = tail(proc, "test.*", "system.alert", "--test-id", "t-9", "--count", "2")
    started(watcher)
    publish(proc, "test.progress", {"test_id": "t-other", "progress": 1, "output": "no"})
    publish(proc, "system.status", {"ok": True})
    first = publish(proc, "test.progress", {"test_id": "t-9", "progress": 45,
                                            "output": "Running port scan on 192.168.1.1..."})
    second = publish(proc, "test.completed", {"test_id": "t-9", "status": "completed"},
                     priority="high")
    out, err = watcher.communicate(timeout=20)
    assert watcher.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith(f"{first}  test.progress") and "normal" in lines[0]
    assert "t-9  [45%] Running port scan on 192.168.1.1..." in lines[0]
    assert lines[1].startswith(f"{second}  test.completed") and " high " in lines[1]


@pytest.mark.slow
def test_tail_json_since_replays_raw_envelopes(
    redis_url: str, serve: Callable[..., ServeProcess]
) -> None:
    proc = serve(redis_url, env={"SECSTREAM_JWT_SECRET": JWT_SECRET})
    ids = [publish(proc, "system.alert", {"title": f"alert {i}"}) for i in range(3)]
    watcher = tail(proc, "system.alert", "--since", ids[0], "--json", "--count", "2")
    out, err = watcher.communicate(timeout=20)
    assert watcher.returncode == 0, err
    envelopes = [json.loads(x) for x in out.splitlines()]
    assert [e["id"] for e in envelopes] == ids[1:]
    assert envelopes[0]["type"] == "event" and envelopes[0]["data"] == {"title": "alert 1"}
    assert "traceparent" in envelopes[0]


@pytest.mark.slow
def test_tail_refused_token_and_bad_arguments(
    redis_url: str, serve: Callable[..., ServeProcess]
) -> None:
    proc = serve(redis_url, env={"SECSTREAM_JWT_SECRET": JWT_SECRET})
    expired = hs256({"sub": "ops", "roles": ["admin"], "exp": 1000})
    watcher = tail(proc, token=expired)
    _, err = watcher.communicate(timeout=20)
    assert watcher.returncode == 3 and "HTTP 401" in err
    assert expired not in err
    watcher = tail(proc, "no.such.type")
    _, err = watcher.communicate(timeout=20)
    assert watcher.returncode == 2 and "bad_request" in err
    bad = subprocess.run(
        [sys.executable, "-m", "secstream", "tail", "--url", "ftp://x", "--token", "t"],
        capture_output=True, text=True, timeout=20, check=False,
    )
    assert bad.returncode == 2 and "not a WebSocket or HTTP URL" in bad.stderr


def test_url_forms() -> None:
    assert ws_url("http://h:8000") == "ws://h:8000/ws"
    assert ws_url("https://h/ws") == "wss://h/ws"
    assert ws_url("h:1") == "ws://h:1/ws"
    with pytest.raises(ValueError):
        ws_url("ftp://h")


def test_summary_is_short_and_on_one_line() -> None:
    assert summary({"title": "Open port 23", "severity": "high"}) == "Open port 23"
    long = summary({"output": "x\n" * 500})
    assert "\n" not in long and len(long) == 100 and long.endswith("…")
    assert summary({"test_id": "t", "a": 1}) == "a=1"
    event = {"id": "1-0", "event_type": "system.status", "priority": "low", "data": {"ok": 1}}
    assert line(event) == "1-0  system.status      low      -  ok=1"
