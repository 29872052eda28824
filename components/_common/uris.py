"""Showing a URI without its password: in messages, logs, lineage and dataset records."""

from __future__ import annotations

_MASK = "***"


def redact(uri: str) -> str:
    """The URI with any password replaced by `***` (also when the URI does not parse)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    # Userinfo ends at the last "@" before the options: pymongo splits the same way,
    # and a stray "/" or "@" in an unescaped password then stays inside the masked part.
    head, query_sep, query = rest.partition("?")
    userinfo, at, hosts = head.rpartition("@")
    if not at:
        return uri
    user, colon, _ = userinfo.partition(":")
    masked = f"{user}:{_MASK}" if colon else user
    return f"{scheme}://{masked}@{hosts}{query_sep}{query}"


def redact_all(value):
    """`value` (a config: dicts, lists, strings) with every URI's password masked."""
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_all(v) for v in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        return redact(value)
    return value
