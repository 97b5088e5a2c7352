"""Optional API keys per organisation.

With no keys configured the service is open. With keys configured:
/feedback and /admin/* need a valid key; /route, /route_batch and /v1/* take
one optionally (or need one with `require_key_for_routing`); a valid key binds
the request to its organisation, and a request naming another org is refused.

Each key has scopes: `route` (the routing endpoints and the proxy), `feedback`
and `admin` (/admin/*). An org's key defaults to [route, feedback]; only a key
configured with `admin` opens /admin/*, so one org cannot refit the service.
Keys are configured and held only as sha256 digests (`sha256:`, or `env:` naming
a variable whose value is hashed at start-up), and a presented key is compared
against every digest in constant time."""
from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

PROTECTED_PREFIXES = ("/feedback", "/admin")
ROUTING_PREFIXES = ("/route", "/route_batch", "/v1/")
SCOPES = ("route", "feedback", "admin")
DEFAULT_SCOPES = ("route", "feedback")


class AuthError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Key:
    org: str | None
    scopes: frozenset[str]


def scope_of(path: str) -> str | None:
    """The scope an endpoint needs (None: no key involved)."""
    if path.startswith("/admin"):
        return "admin"
    if path.startswith("/feedback"):
        return "feedback"
    if path.startswith(ROUTING_PREFIXES):
        return "route"
    return None


@dataclass
class KeyRing:
    digests: dict[str, Key]          # sha256 hex -> the key's org and scopes
    header: str = "x-api-key"
    require_for_routing: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> "KeyRing":
        cfg = dict(cfg or {})
        environ = os.environ if environ is None else environ
        digests: dict[str, Key] = {}
        for i, entry in enumerate(cfg.get("keys") or []):
            entry = dict(entry)
            org = entry.get("org")
            scopes = frozenset(entry.get("scopes") or DEFAULT_SCOPES)
            if scopes - set(SCOPES):
                raise ValueError(f"serving.auth.keys[{i}]: unknown scopes {sorted(scopes - set(SCOPES))}; "
                                 f"use {list(SCOPES)}")
            if not org and scopes & {"route", "feedback"}:
                raise ValueError(f"serving.auth.keys[{i}] has no org (only an admin-only key may have none)")
            if entry.get("key"):
                raise ValueError(f"serving.auth.keys[{i}]: plain keys are not accepted; give its sha256 "
                                 "(`sha256sum`) or the name of an environment variable (env)")
            if entry.get("sha256"):
                digest = str(entry["sha256"]).lower()
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ValueError(f"serving.auth.keys[{i}].sha256 is not a sha256 hex digest")
            elif entry.get("env"):
                value = environ.get(str(entry["env"]))
                if not value:
                    raise ValueError(f"serving.auth.keys[{i}]: environment variable {entry['env']} "
                                     f"(key of org {org!r}) is not set")
                digest = _digest(value)
            else:
                raise ValueError(f"serving.auth.keys[{i}] needs env or sha256")
            digests[digest] = Key(str(org) if org else None, scopes)
        return cls(digests, str(cfg.get("header", "x-api-key")).lower(),
                   bool(cfg.get("require_key_for_routing", False)))

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def presented_key(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        want = self.header.encode("latin-1")
        bearer = None
        for name, value in headers:
            name = name.lower()
            if name == want:
                return value.decode("latin-1").strip()
            if name == b"authorization":
                v = value.decode("latin-1").strip()
                if v.lower().startswith("bearer "):
                    bearer = v[7:].strip()
        return bearer

    def lookup(self, key: str) -> Key | None:
        """The key's entry; every digest is compared (constant time in the key and its position)."""
        digest = _digest(key).encode()
        found = None
        for known, entry in self.digests.items():
            if hmac.compare_digest(known.encode(), digest):
                found = entry
        return found

    def check(self, path: str, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The org the request is bound to (None = unauthenticated); AuthError otherwise."""
        if not self.enabled:
            return None
        scope = scope_of(path)
        if scope is None:
            return None
        protected = scope != "route"
        key = self.presented_key(headers)
        if not key:
            if protected or self.require_for_routing:
                raise AuthError(f"{path} needs an API key: send it in the {self.header} header "
                                "or as Authorization: Bearer <key>", 401)
            return None
        entry = self.lookup(key)
        if entry is None:
            raise AuthError("the API key is not valid", 401)
        if scope not in entry.scopes:
            raise AuthError(f"{path} needs a key with the {scope!r} scope; this key has "
                            f"{sorted(entry.scopes)}", 403)
        return entry.org


def bind_org(obj: Any, org: str, where: str) -> None:
    """Set or check the org of a parsed request body in place (AuthError 403 on a mismatch)."""
    if not isinstance(obj, dict):
        return
    have = obj.get("org_id")
    if have is not None and have != org:
        raise AuthError(f"{where}: the API key belongs to org {org!r}, the request names org {have!r}", 403)
    obj["org_id"] = org
