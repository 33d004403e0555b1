"""A real OpenID Provider for the tests: ``frontend/e2e/oidc/provider.mjs`` (the certified
``oidc-provider`` npm package) as a subprocess on a free port, plus what tests do with it:
write and rotate its signing keys, mint tokens with them, sign in through its login page
(code flow with PKCE) and read how often it was asked for its keys."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from secstream.redis_server import die_with_parent, free_port

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_SCRIPT = ROOT / "frontend" / "e2e" / "oidc" / "provider.mjs"
AUDIENCE = "secstream"
CLIENT_ID = "secstream-dashboard"
REDIRECT_URI = "http://127.0.0.1:9/callback"
"""Registered with the provider; the tests read the code off the redirect, never follow it."""

USERS: dict[str, Any] = {
    "alice": {
        "password": "alice-pw",
        "claims": {"realm_access": {"roles": ["soc-lead", "offline_access"]},
                   "groups": ["blue-team"]},
    },
    "bob": {
        "password": "bob-pw",
        "claims": {"realm_access": {"roles": ["soc-analyst"]}, "groups": ["red-team"]},
    },
}


def available() -> str | None:
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (ROOT / "frontend" / "node_modules" / "oidc-provider").is_dir():
        return "frontend/node_modules has no oidc-provider: run npm ci in frontend/"
    return None


def new_key(kid: str, kind: str = "RSA") -> dict[str, Any]:
    """A private signing JWK (the provider signs with it; tests may too)."""
    if kind == "EC":
        key: RSAKey | ECKey = ECKey.generate_key("P-256", private=True)
        alg = "ES256"
    else:
        key = RSAKey.generate_key(2048, private=True)
        alg = "RS256"
    return {**key.as_dict(private=True), "kid": kid, "alg": alg, "use": "sig"}


class Provider:
    """``node provider.mjs`` on 127.0.0.1; ``stop()`` then ``start()`` keeps its port."""

    def __init__(self, workdir: Path, *, access_token_ttl: int = 300) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.keys_path = workdir / "jwks.json"
        self.users_path = workdir / "users.json"
        self.users_path.write_text(json.dumps(USERS))
        self.keys: list[dict[str, Any]] = [new_key("key-1")]
        self._write_keys()
        self.access_token_ttl = access_token_ttl
        self.log_path = workdir / "provider.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- the process -------------------------------------------------------------------

    def start(self, timeout: float = 20) -> Provider:
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError("the provider runs already")
        argv = [
            "node", str(PROVIDER_SCRIPT), "--port", str(self.port),
            "--users", str(self.users_path), "--keys", str(self.keys_path),
            "--audience", AUDIENCE, "--client-id", CLIENT_ID,
            "--access-token-ttl", str(self.access_token_ttl), "--redirect-uri", REDIRECT_URI,
        ]
        log = open(self.log_path, "ab")  # the child writes to it
        self._proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        log.close()
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(5)
            raise AssertionError(f"the provider did not start: {self.log_path.read_text()}")
        started = json.loads(line)
        assert started["issuer"] == self.issuer, started
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # listening: wait until it answers
            try:
                if httpx.get(self.discovery_url, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("the provider does not answer its discovery document")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    # -- keys and tokens ---------------------------------------------------------------

    def _write_keys(self) -> None:
        self.keys_path.write_text(json.dumps({"keys": self.keys}))

    def rotate(self, kid: str, kind: str = "RSA") -> dict[str, Any]:
        """A new signing key first, the old ones after it, published now (no restart)."""
        key = new_key(kid, kind)
        self.keys = [key, *self.keys]
        self._write_keys()
        answer = httpx.post(f"{self.issuer}/_test/rotate", timeout=10)
        answer.raise_for_status()
        assert kid in {k["kid"] for k in answer.json()["keys"]}
        return key

    def stats(self) -> dict[str, int]:
        answer: dict[str, int] = httpx.get(f"{self.issuer}/_test/stats", timeout=5).json()
        return answer

    def mint(
        self,
        claims: dict[str, Any] | None = None,
        *,
        key: dict[str, Any] | None = None,
        kid: str | None = None,
        expires_in: int = 300,
        **overrides: Any,
    ) -> str:
        """A token signed with one of the provider's private keys (the newest by
        default), carrying its issuer and the audience unless ``overrides`` say else."""
        key = key or self.keys[0]
        now = int(time.time())
        body: dict[str, Any] = {
            "sub": "alice", "iss": self.issuer, "aud": AUDIENCE, "iat": now,
            "exp": now + expires_in, **(claims or {}), **overrides,
        }
        body = {k: v for k, v in body.items() if v is not None}
        header = {"alg": key["alg"], "kid": kid or key["kid"], "typ": "at+jwt"}
        imported = (ECKey if key["kty"] == "EC" else RSAKey).import_key(key)
        return jwt.encode(header, body, imported)

    def sign_in(self, username: str = "alice") -> dict[str, Any]:
        """The authorization code flow with PKCE through the login page, as a browser
        would run it; the token endpoint's answer (``access_token``, ``refresh_token``...)."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()
        ).rstrip(b"=").decode()
        with httpx.Client(follow_redirects=False, timeout=10) as client:
            discovery = client.get(self.discovery_url).json()
            answer = client.get(discovery["authorization_endpoint"], params={
                "client_id": CLIENT_ID, "response_type": "code", "redirect_uri": REDIRECT_URI,
                "scope": "openid profile offline_access", "code_challenge": challenge,
                "code_challenge_method": "S256", "state": secrets.token_urlsafe(8),
                "prompt": "consent",
            })
            login = urljoin(self.issuer, answer.headers["location"])
            assert client.get(login).status_code == 200  # the login page
            answer = client.post(login + "/login", data={
                "username": username, "password": USERS[username]["password"],
            })
            while answer.status_code in (302, 303):
                location = answer.headers["location"]
                if location.startswith(REDIRECT_URI):
                    break
                answer = client.get(urljoin(self.issuer, location))
            else:
                raise AssertionError(f"sign-in did not come back: {answer.status_code}")
            code = parse_qs(urlparse(answer.headers["location"]).query)["code"][0]
            tokens: dict[str, Any] = client.post(discovery["token_endpoint"], data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "client_id": CLIENT_ID, "code_verifier": verifier,
            }).json()
        assert "access_token" in tokens, tokens
        return tokens
