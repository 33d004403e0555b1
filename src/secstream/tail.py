"""``secstream tail``: watch the event stream from a terminal, as a client would see it.

    secstream tail --url ws://host:8000/ws --token "$TOKEN" 'system.*' --test-id t-42

One line per event (id, type, priority, test, a short summary), or the raw envelope
with ``--json``; server notices (``connection.info``, ``token.expiring``, errors) go
to stderr. Exit codes: 0 after ``--count`` events or Ctrl-C, 1 when the connection
fails or the server closes it, 2 for bad arguments, 3 when the token is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, Final, TextIO
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

SUBPROTOCOL: Final = "secstream.v1"
SUMMARY_WIDTH: Final = 100
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_REFUSED: Final = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("patterns", nargs="*", default=["*"],
                        help="event types or patterns (default: every type you may receive)")
    parser.add_argument("--url", default=os.environ.get("SECSTREAM_URL", "ws://127.0.0.1:8000/ws"),
                        help="the service's /ws URL (http:// and a bare host work too)")
    parser.add_argument("--token", default=os.environ.get("SECSTREAM_TOKEN"),
                        help="a JWT (default: $SECSTREAM_TOKEN); sent as a subprotocol")
    parser.add_argument("--test-id", help="only events of this test")
    parser.add_argument("--since", help='replay from this event id ("0": all retained)')
    parser.add_argument("--json", action="store_true", help="print each raw envelope")
    parser.add_argument("--count", type=int, help="exit after this many events")


def ws_url(url: str) -> str:
    """``ws://h:p/ws`` from a ws, wss, http or https URL, or from ``host:port``."""
    if "://" not in url:
        url = f"ws://{url}"
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not a WebSocket or HTTP URL: {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def summary(data: dict[str, Any]) -> str:
    """A few words from an event's data: its title, output or message, else its fields."""
    for key in ("title", "output", "message", "error", "status"):
        value = data.get(key)
        if isinstance(value, str) and value:
            text = value
            break
    else:
        text = " ".join(f"{k}={v}" for k, v in data.items() if k != "test_id")
    if "progress" in data and isinstance(data["progress"], int | float):
        text = f"[{data['progress']:g}%] {text}"
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_WIDTH else text[: SUMMARY_WIDTH - 1] + "…"


def line(event: dict[str, Any]) -> str:
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    assert isinstance(data, dict)
    test = data.get("test_id") or "-"
    return (
        f"{event.get('id', '?')}  {event.get('event_type', '?'):<18} "
        f"{event.get('priority', '?'):<8} {test}  {summary(data)}"
    )


async def tail(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if not args.token:
        print("secstream tail: --token or SECSTREAM_TOKEN is needed", file=err)
        return EXIT_USAGE
    try:
        url = ws_url(args.url)
    except ValueError as exc:
        print(f"secstream tail: {exc}", file=err)
        return EXIT_USAGE
    subscribe: dict[str, Any] = {"type": "subscribe", "id": "tail", "event_types": args.patterns}
    if args.test_id:
        subscribe["test_id"] = args.test_id
    if args.since:
        subscribe["since"] = args.since
    seen = 0
    try:
        async with connect(
            url,
            subprotocols=[SUBPROTOCOL, f"bearer.{args.token}"],  # type: ignore[list-item]
            open_timeout=10,
            max_size=16 * 1024 * 1024,
        ) as ws:
            await ws.send(json.dumps(subscribe))
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                events = frame["events"] if kind == "batch" else [frame] if kind == "event" else []
                for event in events:
                    print(json.dumps(event) if args.json else line(event), file=out, flush=True)
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        return 0
                if kind == "ping":
                    await ws.send('{"type":"pong"}')
                elif kind == "welcome":
                    print(f"connected to node {frame.get('node', '?')} as "
                          f"{frame.get('user_id')} ({', '.join(frame.get('roles', []))})", file=err)
                elif kind == "error":
                    print(f"error {frame.get('code')}: {frame.get('message')}", file=err)
                    if frame.get("ref") == "tail":
                        return EXIT_USAGE
                elif kind in ("connection.info", "token.expiring", "replayed"):
                    print(json.dumps(frame), file=err)
    except InvalidStatus as exc:
        status = exc.response.status_code
        print(f"secstream tail: the server refused the connection (HTTP {status})", file=err)
        return EXIT_REFUSED if status in (401, 403) else EXIT_FAILED
    except (OSError, InvalidURI, TimeoutError) as exc:
        print(f"secstream tail: cannot connect to {url}: {exc}", file=err)
        return EXIT_FAILED
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
        print(f"secstream tail: closed by the server (code {code})", file=err)
        return EXIT_FAILED
    print("secstream tail: closed by the server", file=err)
    return EXIT_FAILED


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(tail(args))
    except KeyboardInterrupt:
        return 0
