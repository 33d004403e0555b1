"""The complete module of docs/publishing.md, run as written against a real Redis."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from redis import Redis

from secstream.redis_server import die_with_parent, free_port

DOC = Path(__file__).parent.parent / "docs" / "publishing.md"


def example_module() -> str:
    text = DOC.read_text()
    section = text[text.index("## A complete module") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/publishing.md lost its complete module"
    return match.group(1)


def events_of(url: str, prefix: str) -> list[dict[str, object]]:
    with Redis.from_url(url) as redis:
        rows = redis.xrange(f"{prefix}:log")
    return [json.loads(fields[b"b"]) for _, fields in rows]


def test_the_documented_module_runs(
    tmp_path: Path, shared_redis_url: str, key_prefix: str
) -> None:
    module = tmp_path / "tiny_scanner.py"
    module.write_text(example_module())
    listener = socket.create_server(("127.0.0.1", 0))
    open_port = listener.getsockname()[1]
    closed_port = free_port()
    env = {**os.environ, "SECSTREAM_REDIS_URL": shared_redis_url,
           "SECSTREAM_KEY_PREFIX": key_prefix}
    try:
        done = subprocess.run(
            [sys.executable, str(module), "127.0.0.1", str(open_port), str(closed_port),
             "--test-id", "scan-1", "--user", "u-7"],
            env=env, capture_output=True, text=True, timeout=60, preexec_fn=die_with_parent,
        )
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "completed"
    events = events_of(shared_redis_url, key_prefix)
    types = [e["event_type"] for e in events]
    assert types == [
        "test.started", "test.progress", "system.alert", "test.progress", "test.completed"
    ]
    started, alert, completed = events[0], events[2], events[-1]
    assert started["data"]["metadata"] == {  # type: ignore[index]
        "target": "127.0.0.1", "profile": "2 TCP ports", "started_by": "u-7"
    }
    assert alert["priority"] == "low" and alert["data"]["port"] == open_port  # type: ignore[index]
    summary = completed["data"]["summary"]  # type: ignore[index]
    assert summary["open_ports"] == [open_port] and summary["ports_scanned"] == 2
    assert summary["findings"]["info"] == 1 and summary["lines"] == 1
    assert all(e["user_id"] == "u-7" for e in events)


def test_every_python_block_of_the_doc_compiles() -> None:
    text = DOC.read_text()
    for code in re.findall(r"```python\n(.*?)```", text, re.S):
        compile(code, "publishing.md", "exec", flags=0x2000)  # PyCF_ALLOW_TOP_LEVEL_AWAIT
