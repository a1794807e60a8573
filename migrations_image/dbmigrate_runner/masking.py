"""What of a Secret may leave the runner: nothing. The one mask every output goes through.

Every value the runner reads from the credential variables — the ones the operator fills from the
Secret: ``DATABASE_URL`` (its user, password, host, port, database and query, each on its own, and
the whole string), ``DB_HOST``, ``DB_PORT``, ``DB_NAME``, ``DB_USER``, ``DB_PASS`` (and
``DB_PASSWORD``, ``PGPASSWORD``) — is collected from the environment before anything is parsed or
checked, so a value that turns out invalid is masked too. Masking replaces with ``***``:

* every written form of a value (raw, trimmed, lowercased, percent-encoded the ways urllib and
  SQLAlchemy do, escaped by ``json.dumps`` or ``repr``) that stands as a word of its own;
* every run of at least :data:`MIN_FRAGMENT` characters of such a form that stands as a word of its
  own: what a library leaves of a value after cutting it (pydantic's ``pos...Xl6cb3aYUL4nLQn@``,
  Tortoise's "first third" of a password). "Word of its own": not glued to a letter, digit or
  ``_`` on either side, so a table ``shop_order`` survives a database named ``shop``;
* a password (and a ``DATABASE_URL`` whole) wherever it appears, even inside a longer word;
* the password part of any ``scheme://user:password@`` in the text, known or not.

Values shorter than :data:`MIN_VALUE` characters are not masked: they would erase innocent text and
tell nobody anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, quote_plus, unquote

MASK = "***"
MIN_VALUE = 3
MIN_FRAGMENT = 4

# Filled by the operator from the Secret (docs/operator.md); the password-ish ones are also read
# when set by hand.
PASSWORD_VARS = ("DB_PASS", "DB_PASSWORD", "PGPASSWORD")
SPLIT_VARS = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER")
URL_VAR = "DATABASE_URL"


class Secret(NamedTuple):
    """One value to keep in: ``anywhere`` = also inside a longer word (a password)."""

    value: str
    anywhere: bool = True
    fragments: bool = True


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*)(?::[^@/\s]*)?@")


def mask_urls(text: str) -> str:
    """Hide the password part of every ``scheme://user:password@`` in ``text``."""
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def secret_forms(secret: str) -> set[str]:
    """Every way a value can be written out: raw, trimmed, lowercased, percent-encoded (urllib's
    ways and SQLAlchemy's ``safe=" +"``) or -decoded, and escaped by ``json.dumps`` or ``repr`` (a
    library printing a dict), so masking holds whatever the quoting."""
    forms: set[str] = set()
    for base in {secret, secret.strip(), unquote(secret), unquote(secret).strip()}:
        for variant in {base, base.lower()}:
            forms |= {variant, quote_plus(variant, safe="")}
            forms |= {quote(variant, safe=safe) for safe in ("", "/", " +", " +/")}
    escaped = set()
    for form in forms:
        escaped |= {json.dumps(form)[1:-1], json.dumps(form, ensure_ascii=False)[1:-1], repr(form)[1:-1]}
        escaped.add(json.dumps(repr(form)[1:-1], ensure_ascii=False)[1:-1])  # a repr inside a JSON string
    return {form for form in forms | escaped if len(form) >= MIN_VALUE}


def _url_parts(url: str) -> list[Secret]:
    """The parts of a database URL, read leniently (the URL may be invalid: it is masked anyway).

    An unencoded ``@`` makes the split ambiguous: both readings (first and last ``@``) are kept."""
    match = re.match(r"\s*[A-Za-z][A-Za-z0-9+.-]*://(?P<rest>.*)", url, re.S)
    if match is None:  # not a URL at all (a key naming the wrong Secret entry): all of it is secret
        return [Secret(url)]
    rest = match["rest"].strip()
    parts = [Secret(url, fragments=False)]
    ats = {rest.find("@"), rest.rfind("@")} - {-1}
    for at in sorted(ats) or [-1]:
        if at >= 0:
            user, _, password = rest[:at].partition(":")
            parts += [Secret(user, anywhere=False), Secret(password)]
        location = rest[at + 1 :]
        cut = re.search(r"[/?#]", location)
        netloc = location[: cut.start()] if cut else location
        tail = location[len(netloc) :]
        host, port = netloc, ""
        if not netloc.startswith("[") and netloc.count(":") == 1:
            host, port = netloc.split(":")
        elif netloc.startswith("[") and "]:" in netloc:
            host, port = netloc.rsplit(":", 1)
        path, _, query = tail.partition("?")
        parts += [Secret(v, anywhere=False) for v in (host, host.strip("[]"), port, path.lstrip("/"))]
        for name, value in parse_qsl(query.partition("#")[0], keep_blank_values=True):
            parts.append(Secret(value, anywhere="pass" in name.lower()))
    return parts


def secret_values(env: Mapping[str, str]) -> list[Secret]:
    """Every value of the environment that may have come from a Secret, valid or not."""
    found = [Secret(env[name]) for name in PASSWORD_VARS if env.get(name)]
    found += [Secret(env[name], anywhere=False) for name in SPLIT_VARS if env.get(name)]
    if env.get(URL_VAR, "").strip():
        found += _url_parts(env[URL_VAR])
    return found


class Masker:
    """Removes every known secret value, and any telling piece of one, from a text."""

    def __init__(self, secrets: Iterable[Secret | str | None] = ()) -> None:
        self._anywhere: set[str] = set()
        self._words: set[str] = set()
        self._grams: set[str] = set()
        self._anywhere_re: re.Pattern[str] | None = None
        self._words_re: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: Secret | str | None) -> None:
        """Add values; a plain string counts as a password (masked anywhere, and its fragments)."""
        for secret in secrets:
            if isinstance(secret, str):
                secret = Secret(secret)
            if secret is None or len(secret.value.strip()) < MIN_VALUE:
                continue
            forms = secret_forms(secret.value)
            (self._anywhere if secret.anywhere else self._words).update(forms)
            if secret.fragments:
                for form in forms:
                    self._grams |= {form[i : i + MIN_FRAGMENT] for i in range(len(form) - MIN_FRAGMENT + 1)}
        self._anywhere_re = _alternation(self._anywhere, r"", r"")
        self._words_re = _alternation(self._words - self._anywhere, r"(?<!\w)", r"(?!\w)")

    def __call__(self, text: str) -> str:
        text = mask_urls(text)
        if self._anywhere_re is not None:
            text = self._anywhere_re.sub(MASK, text)
        if self._words_re is not None:
            text = self._words_re.sub(MASK, text)
        return self._mask_fragments(text) if self._grams else text

    def _mask_fragments(self, text: str) -> str:
        """Replace each maximal run made of secret n-grams that stands as a word of its own."""
        n, grams = MIN_FRAGMENT, self._grams
        runs: list[tuple[int, int]] = []
        for i in [i for i in range(len(text) - n + 1) if text[i : i + n] in grams]:
            if runs and i <= runs[-1][1]:
                runs[-1] = (runs[-1][0], i + n)
            else:
                runs.append((i, i + n))
        out, last = [], 0
        for start, end in runs:
            glued = (start > 0 and _is_word(text[start - 1])) or (end < len(text) and _is_word(text[end]))
            if glued:
                continue
            out += [text[last:start], MASK]
            last = end
        return "".join(out) + text[last:] if out else text

    def value(self, value: Any) -> Any:
        """Mask every string inside a JSON-able value, before it is serialised (escaping would hide
        a secret from a mask applied to the serialised text)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set):
            return [self.value(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self(str(value))

    def names(self, value: Any, keep: Collection[str] = (), withheld: str = MASK) -> Any:
        """The passwords out of every string inside a JSON-able ``value`` whose strings are names (a
        report's versions, a log line's values already masked): only passwords, so a table
        ``shop_order`` survives a database named ``shop``. A string whose JSON escaping would still
        write a password becomes ``withheld``; values under a key in ``keep`` (an encoding, not
        text) and the keys themselves stay as they are."""
        if isinstance(value, str):
            value = self.passwords(value)
            return withheld if self.spelled_by_escaping(value) else value
        if isinstance(value, list):
            return [self.names(item, keep, withheld) for item in value]
        if isinstance(value, dict):
            return {k: item if k in keep else self.names(item, keep, withheld) for k, item in value.items()}
        return value

    def spelled_by_escaping(self, value: str) -> bool:
        """Whether JSON's escaping of ``value`` writes a password (``Zq"`` becomes ``Zq\\"``, which
        holds a password ``Zq\\``): such a value must go, or the serialised text keeps it."""
        escaped = json.dumps(value, ensure_ascii=False)[1:-1]
        return self.passwords(escaped) != escaped

    def passwords(self, text: str) -> str:
        """Only what may be masked inside any word (the passwords, whole): safe on a serialised
        document whose names (tables, versions) must stay as they are."""
        text = mask_urls(text)
        return self._anywhere_re.sub(MASK, text) if self._anywhere_re is not None else text


def _alternation(forms: set[str], before: str, after: str) -> re.Pattern[str] | None:
    if not forms:
        return None
    ordered = sorted(forms, key=len, reverse=True)
    return re.compile(before + "(?:" + "|".join(map(re.escape, ordered)) + ")" + after)
