"""API keys and their scopes: which key a request presents, and what that key may do.

Four scopes: `write` posts events; `stats` reads aggregates; `read` also reads raw events;
`admin` also erases. For reading, each scope includes the ones below it (`admin` ⊃ `read` ⊃
`stats`); `write` is apart. Keys come from the flags (`--write-key`, `--stats-key`,
`--read-key`, `--admin-key`) and from a keys file (`keys_file`), one `scope secret [label]`
per line. A `KeyRing` is one immutable set of keys; `Keys` holds the ring in force, replaced
whole when the keys file changes, so a request sees either the old keys or the new ones.

A key is kept as the SHA-256 digest of its secret, never the secret itself, and looked up by
the digest of the presented token: the time a lookup takes depends on the digests, which an
attacker cannot steer byte by byte, not on how much of a secret a guess matches (the reason
`hmac.compare_digest` exists); the final comparison is `compare_digest` all the same. Logs
and answers name a key by its label, never by its secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

from tlytics.errors import TlyticsError
from tlytics.events import refused_character
from tlytics.setting_values import api_key

Scope = Literal["write", "stats", "read", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
# The route levels a key of each scope opens (besides the open routes).
GRANTS: dict[Scope, frozenset[Scope]] = {
    "write": frozenset({"write"}),
    "stats": frozenset({"stats"}),
    "read": frozenset({"stats", "read"}),
    "admin": frozenset({"stats", "read", "admin"}),
}
READING_SCOPES: tuple[Scope, ...] = ("stats", "read", "admin")


class KeysFileError(TlyticsError):
    """The keys file cannot be read, a line of it is not `scope secret [label]`, or one secret
    is given two scopes; the message names the file and line (or the flag), never a secret."""


def digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key: its scope, a label for logs (never the secret) and its secret's digest."""

    scope: Scope
    label: str
    secret_digest: bytes = field(repr=False)

    @classmethod
    def of(cls, scope: Scope, secret: str, label: str) -> ApiKey:
        return cls(scope, label, digest(secret.encode()))

    def opens(self, level: Scope) -> bool:
        return level in GRANTS[self.scope]


class KeyRing:
    """A set of keys, immutable: looked up by the digest of the token a request presents."""

    def __init__(self, keys: Iterable[ApiKey] = (), *, keys_always_needed: bool = False) -> None:
        by_digest: dict[bytes, ApiKey] = {}
        for key in keys:
            known = by_digest.get(key.secret_digest)
            if known is not None and known.scope != key.scope:
                raise KeysFileError(f"{key.label}: the same key is also a {known.scope} key ({known.label})")
            by_digest.setdefault(key.secret_digest, key)
        self._by_digest = by_digest
        self.keys = tuple(by_digest.values())
        scopes = {key.scope for key in self.keys}
        # Reading is open until some reading key exists; from then on every reading route
        # needs a key that opens it, even a level no key opens yet (an `admin` route on a
        # server with only read keys is refused to everyone rather than left open). With a
        # keys file, every route but the open ones needs a key, always: removing the last key
        # of a kind from the file must refuse that kind, not open it to everyone.
        self.has_write_keys = keys_always_needed or "write" in scopes
        self.has_reading_keys = keys_always_needed or bool(scopes & set(READING_SCOPES))

    def find(self, token: bytes) -> ApiKey | None:
        """The key whose secret is `token`, or None."""
        token_digest = digest(token)
        key = self._by_digest.get(token_digest)
        if key is None or not hmac.compare_digest(key.secret_digest, token_digest):
            return None
        return key

    def needs_key(self, level: Scope) -> bool:
        """Whether a route of `level` needs a key at all (it does once its kind has keys)."""
        return self.has_write_keys if level == "write" else self.has_reading_keys

    def labels(self) -> set[str]:
        return {key.label for key in self.keys}


class Keys:
    """The keys in force: those of the flags, plus those of the keys file once loaded. The
    ring is replaced whole (one reference assignment), never edited in place."""

    def __init__(self, flag_keys: tuple[ApiKey, ...], *, keys_file: bool = False) -> None:
        self.flag_keys = flag_keys
        self.keys_file = keys_file
        self.ring = KeyRing(flag_keys, keys_always_needed=keys_file)

    def with_file_keys(self, file_keys: tuple[ApiKey, ...]) -> KeyRing:
        """The ring the flags' keys and `file_keys` make (raises KeysFileError on a conflict)."""
        return KeyRing((*self.flag_keys, *file_keys), keys_always_needed=self.keys_file)


def flag_keys(keys_by_scope: dict[Scope, tuple[str, ...]]) -> tuple[ApiKey, ...]:
    """The keys given by flags or environment, labelled `--read-key #2` and so on."""
    return tuple(
        ApiKey.of(scope, secret, f"--{scope}-key #{number}")
        for scope, secrets in keys_by_scope.items()
        for number, secret in enumerate(secrets, start=1)
    )


LABEL_MAX_CHARS = 200


def _check_label(label: str, where: str) -> None:
    """A label is shown in logs and answers (403, /whoami): refuse one that could disguise
    itself or what follows it (a right-to-left override, a control character), or too long."""
    refused = refused_character(label)
    if refused is not None:
        raise KeysFileError(
            f"{where}: the label has a control or invisible formatting character (U+{ord(refused):04X});"
            " write it without"
        )
    if len(label) > LABEL_MAX_CHARS:
        raise KeysFileError(f"{where}: the label is longer than {LABEL_MAX_CHARS} characters")


def parse_keys_file(text: str, source: str) -> tuple[ApiKey, ...]:
    """The keys of a keys file: one `scope secret [label]` per line; blank lines and lines
    starting with `#` are skipped; a line without a label is labelled `<source>:<line>`.
    Raises KeysFileError naming the first bad line (never its secret)."""
    keys: list[ApiKey] = []
    seen: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split(maxsplit=2)
        if not words or words[0].startswith("#"):
            continue
        where = f"{source}, line {number}"
        scope = words[0]
        # The first word is not echoed: a line written "secret scope" would show the secret.
        if scope not in SCOPES:
            raise KeysFileError(f"{where}: the first word must be a scope: write, stats, read or admin")
        if len(words) < 2:
            raise KeysFileError(f"{where}: a {scope} key without its secret (write: scope secret [label])")
        try:
            secret = api_key(words[1])
        except ValueError as exc:
            raise KeysFileError(f"{where}: {exc}") from None
        label = words[2].strip() if len(words) == 3 else f"{source}:{number}"
        _check_label(label, where)
        key = ApiKey.of(scope, secret, label)
        if key.secret_digest in seen:
            raise KeysFileError(f"{where}: the same key as on line {seen[key.secret_digest]}")
        seen[key.secret_digest] = number
        keys.append(key)
    return tuple(keys)
