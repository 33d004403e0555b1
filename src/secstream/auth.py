"""JWT -> Principal (contract section 2); the only joserfc import.

Static keys are built once: the HS256 secret, and the RSA/EC keys of a PEM or
JWKS file. An OpenID provider's keys come from a ``KeySource`` (``oidc.py``) and
change at run time. A token's ``alg`` picks the key family, so a public key is
never used as an HMAC secret and ``none`` is never accepted. A token verified by
a provider's key must carry that provider's ``iss``; one verified by a static key
is checked against ``SECSTREAM_JWT_ISSUER`` when it is set.
"""

from __future__ import annotations

import hashlib
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
from typing import Any, Final, Protocol, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, JWKRegistry, Key, OctKey, RSAKey
from joserfc.jws import CompactSignature, JWSRegistry, extract_compact, validate_compact

from secstream import claims as claim_paths
from secstream import events
from secstream.config import Settings
from secstream.errors import AuthError, ConfigError, Forbidden, KeysUnavailable
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

PUBLIC_SIGNATURE_ALGS: Final = frozenset().union(*_JWK_ALGS.values())
"""What a provider's keys may sign with: RS*, PS*, ES*; never HS* nor ``none``."""

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
class VerifyKey:
    alg: str
    kid: str | None
    """None: tried for any ``kid`` (the secret, a PEM key, a JWK without one)."""
    key: Key


class KeySource(Protocol):
    """Keys that change at run time: an OpenID provider's (``oidc.OidcKeys``)."""

    @property
    def issuer(self) -> str:
        """The ``iss`` every token verified by these keys must carry."""
        ...

    @property
    def loaded(self) -> bool:
        """False until the first key set arrived: tokens then get KeysUnavailable."""
        ...

    def keys(self, alg: str) -> tuple[VerifyKey, ...]: ...

    async def refresh_for(self, kid: str) -> None:
        """A token named ``kid``, which no key has: fetch the key set again, unless
        that was done lately (a forged ``kid`` must not make us hammer the provider)."""
        ...


class UnknownSigningKey(AuthError):
    """The token's ``kid`` is none of the provider's keys (yet): ``verify`` refreshes."""

    def __init__(self, kid: str) -> None:
        super().__init__("unknown signing key")
        self.kid = kid


class Authenticator:
    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key_file: Path | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0,
        key_source: KeySource | None = None,
        roles_claim: str = "roles",
        groups_claim: str = "groups",
        role_map: claim_paths.RoleMap | None = None,
    ) -> None:
        """Raises ConfigError naming the setting when a key is missing or unusable."""
        keys: list[VerifyKey] = []
        self._secret_key: OctKey | None = None
        if secret is not None:
            self._secret_key = _load_secret(secret)
            keys.append(VerifyKey(_HMAC_ALG, None, self._secret_key))
        if public_key_file is not None:
            keys.extend(_load_public_keys(public_key_file))
        if not keys and key_source is None:
            raise ConfigError(_SECRET, "no JWT key: give a secret or a public key file")
        self._keys: dict[str, tuple[VerifyKey, ...]] = {}
        for vk in keys:
            self._keys[vk.alg] = (*self._keys.get(vk.alg, ()), vk)
        self._source = key_source
        algorithms = set(self._keys) | (PUBLIC_SIGNATURE_ALGS if key_source else set())
        self._registry = JWSRegistry(algorithms=sorted(algorithms), strict_check_header=False)
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway
        self._roles_claim = roles_claim
        self._groups_claim = groups_claim
        self._role_map = role_map or claim_paths.RoleMap()
        # SHA-256 of the token -> (principal, monotonic deadline, the provider key that
        # verified it or None for a key of our own): a publisher's requests skip the
        # signature check. Only verified tokens go in; never past exp + leeway, nor past
        # their key. Keyed by digest: the cache holds no bearer token, and 33 bytes a
        # connection instead of the token's few hundred (each new connection's token
        # stays here up to CACHE_SECONDS).
        self._verified: OrderedDict[bytes, tuple[Principal, float, VerifyKey | None]] = (
            OrderedDict()
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, key_source: KeySource | None = None
    ) -> Authenticator:
        """With ``--demo`` and no secret, a random secret is made for this process.

        ``key_source``: the OpenID provider's keys when ``SECSTREAM_OIDC_ISSUER`` is set
        (``serve`` checks the settings without one: the provider is asked later).
        """
        secret = settings.jwt_secret
        if secret is None and settings.demo:
            secret = secrets.token_urlsafe(32)
            logger.info("generated a random JWT secret for demo mode")
        if key_source is None and settings.oidc_issuer is not None:
            key_source = _NotLoaded(settings.oidc_issuer)
        return cls(
            secret=secret,
            public_key_file=settings.jwt_public_key_file,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway,
            key_source=key_source,
            roles_claim=settings.roles_claim,
            groups_claim=settings.groups_claim,
            role_map=claim_paths.RoleMap(settings.role_map),
        )

    @property
    def algorithms(self) -> frozenset[str]:
        return frozenset(self._keys) | (PUBLIC_SIGNATURE_ALGS if self._source else frozenset())

    async def verify(self, token: str | None) -> Principal:
        """``authenticate``, but a token naming a provider key not seen yet first makes
        the key source fetch the provider's keys again (at most once per its interval;
        concurrent callers share one fetch)."""
        try:
            return self.authenticate(token)
        except UnknownSigningKey as exc:
            if self._source is None:
                raise
            await self._source.refresh_for(exc.kid)
        return self.authenticate(token)

    def authenticate(self, token: str | None) -> Principal:
        """The token's principal, or AuthError whose message is a short, fixed reason.

        KeysUnavailable (an AuthError answered 503): the token needs the provider's
        keys, and none have arrived yet.

        A token verified in the last ``CACHE_SECONDS`` is not verified again while the
        key that verified it is still trusted (our own keys never change; a provider's
        may), but its expiry is checked every time.
        """
        if not token:
            raise AuthError("missing token")
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._verified.get(digest)
        if cached is not None:
            principal, deadline, key = cached
            if (
                time.time() < principal.exp + self._leeway
                and time.monotonic() < deadline
                and (key is None or self._trusted(key))
            ):
                self._verified.move_to_end(digest)
                return principal
            del self._verified[digest]
        principal, key = self._verify_token(token)
        if len(token) <= MAX_CACHED_TOKEN:
            self._verified[digest] = (principal, time.monotonic() + CACHE_SECONDS, key)
            if len(self._verified) > CACHE_SIZE:
                self._verified.popitem(last=False)
        return principal

    def _trusted(self, key: VerifyKey) -> bool:
        return self._source is not None and key in self._source.keys(key.alg)

    def _verify_token(self, token: str) -> tuple[Principal, VerifyKey | None]:
        """The token's principal and the provider key that verified it (None: ours)."""
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
        source = self._source if alg in PUBLIC_SIGNATURE_ALGS else None
        if alg not in self._keys and source is None:
            raise AuthError("unsupported algorithm")
        static = _matching(self._keys.get(alg, ()), kid)
        if any(self._verify(obj, vk.key) for vk in static):
            return self._principal(_claims_of(obj), self._issuer), None
        if source is not None:
            if not source.loaded:
                raise KeysUnavailable(
                    f"the identity provider's keys are not loaded yet ({source.issuer}); retry"
                )
            dynamic = _matching(source.keys(alg), kid)
            if kid is not None and not any(vk.kid == kid for vk in dynamic):
                raise UnknownSigningKey(kid)
            for vk in dynamic:
                if self._verify(obj, vk.key):
                    return self._principal(_claims_of(obj), source.issuer), vk
            raise AuthError("bad signature")
        if not static:
            raise AuthError("unknown signing key")
        raise AuthError("bad signature")

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
        claims: dict[str, Any] = {"sub": sub, "iat": int(now), "exp": exp}
        # Where this service reads them (SECSTREAM_ROLES_CLAIM / _GROUPS_CLAIM).
        claim_paths.place(claims, self._roles_claim, list(roles))
        claim_paths.place(claims, self._groups_claim, list(groups or ()))
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

    def _principal(self, claims: Mapping[str, Any], issuer: str | None) -> Principal:
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
        roles = self._role_map.apply(claim_paths.strings(claims, self._roles_claim))
        groups = claim_paths.strings(claims, self._groups_claim)
        now = time.time()
        if now >= exp + self._leeway:
            raise AuthError("token expired")
        if now + self._leeway < nbf:
            raise AuthError("token not yet valid")
        if self._audience is not None and not _has_audience(claims.get("aud"), self._audience):
            raise AuthError("invalid audience")
        if issuer is not None and claims.get("iss") != issuer:
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


def _matching(keys: tuple[VerifyKey, ...], kid: str | None) -> tuple[VerifyKey, ...]:
    if kid is None:
        return keys
    return tuple(vk for vk in keys if vk.kid in (None, kid))


def _claims_of(obj: CompactSignature) -> dict[str, Any]:
    try:
        claims = json.loads(obj.payload)
    except ValueError:
        raise AuthError("malformed token") from None
    if not isinstance(claims, dict):
        raise AuthError("malformed token")
    return claims


class _NotLoaded:
    """The provider's place before any key arrived (the settings check in ``serve``)."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.loaded = False

    def keys(self, alg: str) -> tuple[VerifyKey, ...]:
        return ()

    async def refresh_for(self, kid: str) -> None:
        return None


MAX_JWKS_KEYS: Final = 100


def provider_keys(document: object) -> tuple[list[VerifyKey], int]:
    """A provider's JWKS: its public signature keys, and how many entries were skipped
    (encryption keys, HMAC keys, private members, unknown types). ValueError when the
    document is not a JWKS or has more than ``MAX_JWKS_KEYS`` entries."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWKS: no "keys" list')
    entries = document["keys"]
    if len(entries) > MAX_JWKS_KEYS:
        raise ValueError(f"{len(entries)} keys; at most {MAX_JWKS_KEYS} are read")
    keys: list[VerifyKey] = []
    for entry in entries:
        # A private member in a published key set is the provider's mistake: never use it.
        if isinstance(entry, dict) and not _PRIVATE_JWK_MEMBERS.isdisjoint(entry):
            continue
        vk = _load_jwk(entry)
        if vk is not None:
            keys.append(vk)
    return keys, len(entries) - len(keys)


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


def _load_public_keys(path: Path) -> list[VerifyKey]:
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


def _load_pem(data: bytes) -> VerifyKey:
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
        return VerifyKey("RS256", None, rsa_key)
    if isinstance(public_key, EllipticCurvePublicKey):
        ec_key = ECKey.import_key(public_key)
        alg = _EC_ALGS.get(ec_key.curve_name)
        if alg is None:
            raise ConfigError(_KEY_FILE, "EC key must use P-256, P-384 or P-521")
        return VerifyKey(alg, None, ec_key)
    raise ConfigError(_KEY_FILE, "must be an RSA or EC public key")


def _load_jwks(data: bytes) -> list[VerifyKey]:
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
    keys: list[VerifyKey] = []
    for index, entry in enumerate(entries):
        vk = _load_jwk(entry)
        if vk is None:
            logger.warning("skipped a JWKS entry: no RSA/EC signing key", extra={"index": index})
        else:
            keys.append(vk)
    return keys


def _load_jwk(entry: object) -> VerifyKey | None:
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
    return None if alg is None else VerifyKey(alg, kid, key)


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
