"""The package as users get it: a wheel with the web app inside, in a fresh virtualenv."""

from __future__ import annotations

import http.client
import subprocess
import sys
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from support import ServeProcess

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "src" / "secstream" / "web"

pytestmark = pytest.mark.slow


def _built_web_app() -> Path:
    """The built React app; built here when ``scripts/test`` has not built it yet."""
    if not (WEB / "index.html").is_file():
        subprocess.run(["npm", "--prefix", "frontend", "run", "build"], cwd=ROOT, check=True,
                       timeout=600)
    assert (WEB / "index.html").is_file()
    return WEB


class _InstalledServe(ServeProcess):
    """``secstream serve`` from the script a virtualenv installed, not this interpreter."""

    def __init__(self, script: Path, workdir: Path, **kwargs: object) -> None:
        super().__init__(workdir, None, **kwargs)  # type: ignore[arg-type]
        self.script = script

    @property
    def argv(self) -> list[str]:
        return [str(self.script), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                *self.extra]


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


def test_the_wheel_installs_and_serves_the_app(tmp_path: Path) -> None:
    web = _built_web_app()
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True, timeout=600, capture_output=True,
    )
    (wheel,) = dist.glob("secstream-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(meta_name).decode())
    assert "secstream/web/index.html" in names
    assets = {p.relative_to(web).as_posix() for p in web.rglob("*") if p.is_file()}
    assert {f"secstream/web/{a}" for a in assets} <= names, "every built file is in the wheel"
    assert "secstream/py.typed" in names
    assert "secstream/apidoc.py" in names
    assert any(c.startswith("Programming Language :: Python :: 3.11")
               for c in metadata.get_all("Classifier") or [])
    assert "Typing :: Typed" in (metadata.get_all("Classifier") or [])
    assert metadata.get_all("Project-URL"), "project URLs"

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", str(wheel)],
        check=True, timeout=600, capture_output=True,
    )
    script = env_dir / "bin" / "secstream"
    schema = subprocess.run([str(script), "schema"], check=True, capture_output=True, timeout=60)
    assert schema.stdout.decode() == (ROOT / "docs" / "api" / "asyncapi.json").read_text()

    server = _InstalledServe(script, tmp_path / "run", extra=["--demo"])
    try:
        server.start(timeout=60)
        status, kind, body = _get(server.port, "/")
        assert status == 200 and kind.startswith("text/html")
        index = (web / "index.html").read_bytes()
        assert body == index, "/ answers with the built app"
        script_src = body.decode().split('src="', 1)[1].split('"', 1)[0]
        status, kind, js = _get(server.port, script_src)
        assert status == 200 and "javascript" in kind and len(js) > 10_000
        status, _, _ = _get(server.port, "/health/ready")
        assert status == 200
    finally:
        server.close()
