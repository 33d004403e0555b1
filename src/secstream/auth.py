"""JWT -> Principal (contract section 2); the only joserfc import.

Keys are built once: the HS256 secret, and the RSA/EC keys of a PEM or JWKS
file. A token's ``alg`` picks the key family, so a public key is never used as
an HMAC secret and ``none`` is never accepted.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, JWKRegistry, Key, OctKey, RSAKey
from joserfc.jws import CompactSignature, JWSRegistry, extract_compact, validate_compact

from secstream import events
from secstream.config import Settings
from secstream.errors import AuthError, ConfigError, Forbidden
from secstream.types import EventType

logger = logging.getLogger(__name__)

_SECRET: Final = "SECSTREAM_JWT_SECRET"
_KEY_FILE: Final = "SECSTREAM_JWT_PUBLIC_KEY_FILE"
_HMAC_ALG: Final = "HS256"
_EC_ALGS: Final = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_JWK_ALGS: Final = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset(_EC_ALGS.values()),
}

_PRIVATE_JWK_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_SECRET_BYTES: Final = 32
CACHE_SIZE: Final = 10_000
"""Verified tokens remembered (least recently used dropped first)."""
CACHE_SECONDS: Final = 60.0
"""How long a verified token is remembered at most (and never past its ``exp``)."""
MAX_CACHED_TOKEN: Final = 4096
"""Longer tokens are verified every time, so the cache stays under ~40 MB."""

K = TypeVar("K", bound=Key)


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    roles: frozenset[str]
    groups: frozenset[str]
    exp: float
    receivable: frozenset[EventType]

    @property
    def may_publish(self) -> bool:
        return events.may_publish(self.roles)


@dataclass(frozen=True, slots=True)
class _VerifyKey:
    alg: str
    kid: str | None
    """None: tried for any ``kid`` (the secret, a PEM key, a JWK without one)."""
    key: Key


class Authenticator:
    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key_file: Path | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0,
    ) -> None:
        """Raises ConfigError naming the setting when a key is missing or unusable."""
        keys: list[_VerifyKey] = []
        self._secret_key: OctKey | None = None
        if secret is not None:
            self._secret_key = _load_secret(secret)
            keys.append(_VerifyKey(_HMAC_ALG, None, self._secret_key))
        if public_key_file is not None:
            keys.extend(_load_public_keys(public_key_file))
        if not keys:
            raise ConfigError(_SECRET, "no JWT key: give a secret or a public key file")
        self._keys: dict[str, tuple[_VerifyKey, ...]] = {}
        for vk in keys:
            self._keys[vk.alg] = (*self._keys.get(vk.alg, ()), vk)
        self._registry = JWSRegistry(algorithms=sorted(self._keys), strict_check_header=False)
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway
        # token -> (principal, monotonic deadline): a publisher's requests skip the
        # signature check. Only verified tokens go in; never past exp + leeway.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """With ``--demo`` and no secret, a random secret is made for this process."""
        secret = settings.jwt_secret
        if secret is None and settings.demo:
            secret = secrets.token_urlsafe(32)
            logger.info("generated a random JWT secret for demo mode")
        return cls(
            secret=secret,
            public_key_file=settings.jwt_public_key_file,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway,
        )

    @property
    def algorithms(self) -> frozenset[str]:
        return frozenset(self._keys)

    def authenticate(self, token: str | None) -> Principal:
        """The token's principal, or AuthError whose message is a short, fixed reason.

        A token verified in the last ``CACHE_SECONDS`` is not verified again (the keys
        do not change while the process runs), but its expiry is checked every time.
        """
        if not token:
            raise AuthError("missing token")
        cached = self._verified.get(token)
        if cached is not None:
            principal, deadline = cached
            if time.time() < principal.exp + self._leeway and time.monotonic() < deadline:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal = self._verify_token(token)
        if len(token) <= MAX_CACHED_TOKEN:
            self._verified[token] = (principal, time.monotonic() + CACHE_SECONDS)
            if len(self._verified) > CACHE_SIZE:
                self._verified.popitem(last=False)
        return principal

    def _verify_token(self, token: str) -> Principal:
        try:
            obj = extract_compact(token.encode("ascii"), registry=self._registry)
            header = obj.headers()
            self._registry.check_header(header)
        except (JoseError, ValueError, TypeError):
            raise AuthError("malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
            raise AuthError("malformed token")
        if header.get("b64") is False:
            raise AuthError("malformed token")
        candidates = self._keys.get(alg)
        if candidates is None:
            raise AuthError("unsupported algorithm")
        if kid is not None:
            candidates = tuple(vk for vk in candidates if vk.kid in (None, kid))
            if not candidates:
                raise AuthError("unknown signing key")
        if not any(self._verify(obj, vk.key) for vk in candidates):
            raise AuthError("bad signature")
        try:
            claims = json.loads(obj.payload)
        except ValueError:
            raise AuthError("malformed token") from None
        if not isinstance(claims, dict):
            raise AuthError("malformed token")
        return self._principal(claims)

    def authorize_receiver(self, p: Principal) -> None:
        if not p.receivable:
            raise Forbidden("no role that may receive events")

    def authorize_publisher(self, p: Principal) -> None:
        if not p.may_publish:
            raise Forbidden("publishing needs the publisher or admin role")

    def mint(
        self,
        sub: str,
        roles: list[str],
        groups: list[str] | None = None,
        expires_in: float = 3600,
    ) -> tuple[str, float]:
        """An HS256 token for the demo's dev-token endpoint: (token, expires_at)."""
        if self._secret_key is None:
            raise RuntimeError("mint needs a JWT secret")
        if not sub:
            raise ValueError("sub must be non-empty")
        if not expires_in > 0:
            raise ValueError("expires_in must be greater than 0")
        now = time.time()
        exp = math.ceil(now + expires_in)
        claims: dict[str, Any] = {
            "sub": sub,
            "roles": list(roles),
            "groups": list(groups or ()),
            "iat": int(now),
            "exp": exp,
        }
        if self._audience is not None:
            claims["aud"] = self._audience
        if self._issuer is not None:
            claims["iss"] = self._issuer
        token = jwt.encode({"alg": _HMAC_ALG}, claims, self._secret_key, registry=self._registry)
        return token, float(exp)

    def _verify(self, obj: CompactSignature, key: Key) -> bool:
        try:
            return validate_compact(obj, key, registry=self._registry)
        except (JoseError, ValueError, TypeError):
            return False

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        sub = claims.get("sub")
        if "sub" not in claims:
            raise AuthError("missing claim: sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError("invalid claim: sub")
        if "exp" not in claims:
            raise AuthError("missing claim: exp")
        exp = _number(claims["exp"])
        if exp is None:
            raise AuthError("invalid claim: exp")
        nbf = _number(claims["nbf"]) if "nbf" in claims else 0.0
        if nbf is None:
            raise AuthError("invalid claim: nbf")
        roles = _strings(claims, "roles")
        groups = _strings(claims, "groups")
        now = time.time()
        if now >= exp + self._leeway:
            raise AuthError("token expired")
        if now + self._leeway < nbf:
            raise AuthError("token not yet valid")
        if self._audience is not None and not _has_audience(claims.get("aud"), self._audience):
            raise AuthError("invalid audience")
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise AuthError("invalid issuer")
        return Principal(
            sub=sub,
            roles=roles,
            groups=groups,
            exp=exp,
            receivable=events.receivable(roles),
        )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _strings(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthError(f"invalid claim: {name}")
    return frozenset(value)


def _has_audience(aud: object, audience: str) -> bool:
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and audience in aud


def _load_secret(secret: str) -> OctKey:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            _SECRET, f"must be at least {MIN_SECRET_BYTES} bytes (HS256 needs a 256-bit key)"
        )
    try:
        return _quietly(lambda: OctKey.import_key(secret.encode()))
    except ValueError:
        raise ConfigError(_SECRET, "must be a shared secret, not a public key") from None


def _load_public_keys(path: Path) -> list[_VerifyKey]:
    try:
        data = path.read_bytes().strip()
    except OSError:
        raise ConfigError(_KEY_FILE, "cannot read the file") from None
    if data.startswith(b"{"):
        keys = _load_jwks(data)
    else:
        keys = [_load_pem(data)]
    if not keys:
        raise ConfigError(_KEY_FILE, "holds no usable RSA or EC signing key")
    return keys


def _load_pem(data: bytes) -> _VerifyKey:
    if b"PRIVATE KEY" in data:
        raise ConfigError(_KEY_FILE, "holds a private key: give the public key")
    public_key: object
    try:
        if b"CERTIFICATE" in data:
            public_key = x509.load_pem_x509_certificate(data).public_key()
        else:
            public_key = load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(_KEY_FILE, "is neither a PEM public key nor a JWKS") from None
    if isinstance(public_key, RSAPublicKey):
        rsa_key = _quietly(lambda: RSAKey.import_key(public_key))
        return _VerifyKey("RS256", None, rsa_key)
    if isinstance(public_key, EllipticCurvePublicKey):
        ec_key = ECKey.import_key(public_key)
        alg = _EC_ALGS.get(ec_key.curve_name)
        if alg is None:
            raise ConfigError(_KEY_FILE, "EC key must use P-256, P-384 or P-521")
        return _VerifyKey(alg, None, ec_key)
    raise ConfigError(_KEY_FILE, "must be an RSA or EC public key")


def _load_jwks(data: bytes) -> list[_VerifyKey]:
    try:
        document = json.loads(data)
    except ValueError:
        raise ConfigError(_KEY_FILE, "is not valid JSON") from None
    if isinstance(document, dict) and "keys" in document:
        entries = document["keys"]
    else:
        entries = [document]
    if not isinstance(entries, list):
        raise ConfigError(_KEY_FILE, '"keys" must be a list')
    keys: list[_VerifyKey] = []
    for index, entry in enumerate(entries):
        vk = _load_jwk(entry)
        if vk is None:
            logger.warning("skipped a JWKS entry: no RSA/EC signing key", extra={"index": index})
        else:
            keys.append(vk)
    return keys


def _load_jwk(entry: object) -> _VerifyKey | None:
    if isinstance(entry, dict) and not _PRIVATE_JWK_MEMBERS.isdisjoint(entry):
        raise ConfigError(_KEY_FILE, "holds a private or secret key: give the public keys only")
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None
    kty, kid, declared = entry.get("kty"), entry.get("kid"), entry.get("alg")
    if kty not in _JWK_ALGS or (kid is not None and not isinstance(kid, str)):
        return None
    try:
        key = _quietly(lambda: JWKRegistry.import_key(entry))
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    if isinstance(key, ECKey):
        alg = _EC_ALGS.get(key.curve_name)
    elif isinstance(key, RSAKey):
        alg = "RS256"
    else:
        return None
    if declared is not None:
        if declared not in _JWK_ALGS[kty] or (isinstance(key, ECKey) and declared != alg):
            return None
        alg = declared
    return None if alg is None else _VerifyKey(alg, kid, key)


def _quietly(load: Callable[[], K]) -> K:
    """Turn joserfc's SecurityWarnings (short secret, small RSA key) into log lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SecurityWarning)
        key = load()
    for w in caught:
        if issubclass(w.category, SecurityWarning):
            logger.warning("weak JWT key", extra={"detail": str(w.message)})
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return key
