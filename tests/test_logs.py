"""Log output: one redacting formatter for every logger, text or JSON (contract sections 1, 8)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from live import JWT_SECRET, hs256
from secstream import logs
from secstream.logs import REDACTED, RedactingFormatter, Redactor
from support import ServeProcess

TOKEN = hs256({"sub": "u-secret", "roles": ["admin"], "exp": 4_102_444_800})
SIGNATURE = TOKEN.rsplit(".", 1)[1]


@pytest.mark.parametrize(
    "line",
    [
        f"GET /ws?token={TOKEN} HTTP/1.1",
        f"GET /ws?TOKEN={TOKEN}&client_id=c1 HTTP/1.1",
        f"GET /ws?%74oken={TOKEN} HTTP/1.1",
        f"GET /ws?tok%65n={TOKEN.replace('.', '%2E')} HTTP/1.1",
        f"GET /ws?client_id=c1&access_token=opaque-{SIGNATURE}",
        f"Sec-WebSocket-Protocol: secstream.v1, bearer.{TOKEN}",
        f"Sec-WebSocket-Protocol: secstream.v1, BEARER.{TOKEN}",
        f"authorization: Bearer {TOKEN}",
        f"(b'authorization', b'Bearer {TOKEN}')",
        f'{{"authorization": "Bearer opaque-{SIGNATURE}"}}',
        f"a token in plain text {TOKEN} somewhere",
        f'< TEXT \'{{"type":"refresh","id":"r","token":"opaque-{SIGNATURE}"}}\' [80 bytes]',
        f"{{'type': 'refresh', 'token': 'opaque-{SIGNATURE}'}}",
        f'{{"message": "{{\\"token\\": \\"opaque-{SIGNATURE}\\"}}"}}',
    ],
)
def test_redaction_removes_the_token_and_its_signature(line: str) -> None:
    out = logs.REDACT(line)
    assert SIGNATURE not in out and TOKEN not in out, out
    assert REDACTED in out


def test_redaction_keeps_harmless_text() -> None:
    line = "GET /ws?client_id=c1&since=123-0 HTTP/1.1 secstream.audit opentelemetry.sdk.trace"
    assert logs.REDACT(line) == line


def test_configured_secret_is_redacted() -> None:
    redactor = Redactor([JWT_SECRET])
    assert JWT_SECRET not in redactor(f"settings: jwt_secret={JWT_SECRET!r}")


@pytest.fixture
def captured() -> Iterator[Callable[[str], io.StringIO]]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)

    def use(fmt: str) -> io.StringIO:
        stream = io.StringIO()
        logs.configure(fmt, "debug", stream=stream)
        return stream

    try:
        yield use
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_json_lines_carry_every_field_and_the_logger_name(
    captured: Callable[[str], io.StringIO],
) -> None:
    stream = captured("json")
    logging.getLogger("secstream.test").warning(
        "rate limited %s", "u-1", extra={"kind": "publish", "count": 3, "url": f"/ws?token={TOKEN}"}
    )
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["logger"] == "secstream.test" and first["level"] == "warning"
    assert first["message"] == "rate limited u-1"
    assert first["kind"] == "publish" and first["count"] == 3
    assert first["url"] == f"/ws?token={REDACTED}"
    assert first["time"].endswith("Z")
    assert second["logger"] == "uvicorn.error" and "ValueError" in second["exc"]
    assert SIGNATURE not in stream.getvalue()


def test_text_lines_append_extra(captured: Callable[[str], io.StringIO]) -> None:
    stream = captured("text")
    logging.getLogger("secstream.test").info("hello", extra={"kind": "publish", "src": "a b"})
    line = stream.getvalue().strip()
    assert line.endswith('secstream.test: hello kind=publish src="a b"'), line


def test_uvicorn_handlers_are_replaced_so_nothing_bypasses_redaction(
    captured: Callable[[str], io.StringIO],
) -> None:
    bypass = io.StringIO()
    logging.getLogger("uvicorn.access").addHandler(logging.StreamHandler(bypass))
    logging.getLogger("uvicorn.access").propagate = False
    stream = captured("text")
    logging.getLogger("uvicorn.access").info('%s - "GET /ws?token=%s"', "127.0.0.1", TOKEN)
    assert bypass.getvalue() == ""
    assert REDACTED in stream.getvalue() and SIGNATURE not in stream.getvalue()


def test_formatter_refuses_unknown_format() -> None:
    with pytest.raises(ValueError, match="log format"):
        RedactingFormatter("xml")


@pytest.mark.slow
def test_no_token_in_any_log_line_of_a_serve_at_debug(
    tmp_path: Path, redis_url: str, serve: Callable[..., ServeProcess]
) -> None:
    """A token through every door (query in three spellings, subprotocol, Authorization,
    refused and accepted alike); not one JSON line of a debug-level serve shows it."""
    env = {
        "SECSTREAM_JWT_SECRET": JWT_SECRET,
        "SECSTREAM_LOG_FORMAT": "json",
        "SECSTREAM_LOG_LEVEL": "debug",
    }
    proc = serve(redis_url, env=env)
    expired = hs256({"sub": "u-old", "roles": ["admin"], "exp": 1_000})
    bad_sig = TOKEN[: -len(SIGNATURE)] + "A" * len(SIGNATURE)

    async def traffic() -> None:
        for name in ("token", "TOKEN", "%74oken"):
            for token in (TOKEN, expired, bad_sig):
                url = f"{proc.ws_url}?{name}={token}&client_id=c1"
                try:
                    async with connect(url, open_timeout=5) as ws:
                        await ws.recv()
                except InvalidStatus:
                    pass
        for token in (TOKEN, expired):
            protocols = ["secstream.v1", f"bearer.{token}"]
            try:
                async with connect(proc.ws_url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
                    await ws.recv()
                    for fresh in (TOKEN, "opaque-refresh-value"):
                        await ws.send(json.dumps({"type": "refresh", "id": "r", "token": fresh}))
                        while json.loads(await ws.recv()).get("ref") != "r":
                            pass
            except InvalidStatus:
                pass
        async with httpx.AsyncClient(base_url=proc.base_url) as http:
            for token in (TOKEN, expired, "opaque-not-a-jwt"):
                headers = {"Authorization": f"Bearer {token}"}
                await http.post(
                    "/api/v1/events", headers=headers,
                    json={"event_type": "system.status", "data": {}},
                )
                await http.get(f"/api/v1/events?token={token}&since=0", headers=headers)
                await http.get("/api/v1/connections", headers=headers)

    asyncio.run(traffic())
    proc.terminate()
    text = proc.log()
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) > 10, text
    for token in (TOKEN, expired, bad_sig):
        assert token.rsplit(".", 1)[1] not in text
        assert token.split(".")[1] not in text  # the claims segment
    assert JWT_SECRET not in text
    assert "opaque-not-a-jwt" not in text and "opaque-refresh-value" not in text
    parsed = [json.loads(line) for line in lines]
    loggers = {p["logger"] for p in parsed}
    assert "uvicorn.access" in loggers, loggers
    assert any("/ws?" in p["message"] or "/api/v1/events?" in p["message"] for p in parsed)
    assert not any("color_message" in p for p in parsed)


@pytest.mark.slow
def test_log_level_flag_beats_the_environment_and_text_is_the_default(
    redis_url: str, serve: Callable[..., ServeProcess]
) -> None:
    env = {"SECSTREAM_JWT_SECRET": JWT_SECRET, "SECSTREAM_LOG_LEVEL": "error"}
    proc = serve(redis_url, env=env, extra=["--log-level", "DEBUG"])
    assert proc.get_status(f"/ws?token={TOKEN}") is not None
    proc.terminate()
    lines = proc.log().splitlines()
    assert any(" DEBUG " in line for line in lines), lines[:20]
    assert not any(line.startswith("{") for line in lines)
    assert SIGNATURE not in proc.log()
    quiet = serve(redis_url, env=env, name="quiet")
    assert quiet.get_status(f"/ws?token={TOKEN}") is not None
    quiet.terminate()
    assert not any(" INFO " in line or " DEBUG " in line for line in quiet.log().splitlines())


_PIECES = [
    "token", "TOKEN", "%74oken", "%2574oken", "Access_Token", "jwt", "secret", "password",
    "key", "KEY", "=", "%3D", "%3d", "?", "&", ";", " ", '"', "'", ":", ",", "\\", "Bearer ",
    "bearer.", "BEARER%2e", "authorization", "Cookie", "x-api-key",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "eyJabcd%2Eefgh%2eijkl",
    "\u017fecret", "\u212aey", "publish allowed", "audit=", "{", "}", "abc", "1764566400000-0",
]


def test_skipping_scans_changes_no_line() -> None:
    """A scan is skipped only on lines it could not change: the same output as all five."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from secstream.logs import Redactor, _redact_all

    redact = Redactor()

    @settings(max_examples=3000, deadline=None)
    @given(st.lists(st.sampled_from(_PIECES), max_size=12), st.text(max_size=20))
    def same(pieces: list[str], noise: str) -> None:
        line = "".join(pieces) + noise
        assert redact(line) == _redact_all(line)

    same()
    for before in ("", "?", "&", " ", '"', "x "):
        for name in ("token", "%74oken", "%2574oken", "TOKEN", "key", "%6Bey", "Access_Token",
                     "jwt", "Secret", "pass%77ord", "other"):
            for equals in ("=", "%3D", "%3d"):
                for value in ("abc", "eyJhbGciOiJ9.eyJzdWIiOiJ4In0.c2ln", ""):
                    line = f"{before}{name}{equals}{value}"
                    assert redact(line) == _redact_all(line), line
    audit_line = 'INFO secstream.audit: publish allowed audit="{\\"sub\\": \\"p\\"}"'
    assert redact(audit_line) == audit_line
    assert redact('x "\u017fecret": "hunter2"') == _redact_all('x "\u017fecret": "hunter2"')
