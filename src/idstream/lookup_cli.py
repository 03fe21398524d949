"""`idstream profile KEY`: look a profile up on a worker's HTTP API and print it readably.

Entry point. KEY is a profile id (`a_…`, `p_…`), `email:…`, `phone:…`, `externalUserId:…`, or a
pushRegistrationId (`install:…` to force it). The worker answers masked; --raw asks for raw
values with the raw token (`http_raw_token`), and the worker grants them only for that token.
Standard library only (urllib), so it runs wherever the settings are.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from idstream.domain.events import IdentityKind
from idstream.domain.identities import mask
from idstream.errors import IdstreamError

_PROFILE_ID = re.compile(r"[ap]_[0-9a-f]{20}")
_KINDS = {k.value.lower(): k for k in IdentityKind}


@dataclass(frozen=True, slots=True)
class Key:
    """What to ask for: `path` on the API; `install` when the answer is an install view."""

    path: str
    install: bool = False


def parse_key(text: str) -> Key:
    """Map the command-line KEY to an API path (values are percent-encoded)."""
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() in _KINDS:
        kind = _KINDS[prefix.lower()]
        return Key(f"/identities/{kind.value}/{_quote(rest)}")
    if sep and prefix.lower() == "profile":
        return Key(f"/profiles/{_quote(rest)}")
    if sep and prefix.lower() == "install":
        return Key(f"/installs/{_quote(rest)}", install=True)
    if _PROFILE_ID.fullmatch(text):
        return Key(f"/profiles/{text}")
    return Key(f"/installs/{_quote(text)}", install=True)


def _quote(value: str) -> str:
    if not value:
        raise ValueError("empty key")
    return urllib.parse.quote(value, safe="")


class ApiError(IdstreamError):
    """The API answered with an error (status and JSON body); 503 and 429 (after
    `retry_after` seconds) are worth retrying."""

    def __init__(self, status: int, body: Any, retry_after: str | None = None) -> None:
        wait = f" (retry after {retry_after} s)" if retry_after else ""
        super().__init__(f"HTTP {status}: {body}{wait}")
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.retriable = status in (429, 503)


def fetch(
    base_url: str, path: str, token: str | None, *, raw: bool = False, timeout: float = 10.0
) -> Any:
    """GET `path` (JSON); `raw` asks for raw values, which only the raw token is granted."""
    url = base_url.rstrip("/") + path + ("?raw=1" if raw else "")
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            body = json.loads(text)
        except ValueError:
            body = text.decode("utf-8", "replace")
        raise ApiError(exc.code, body, exc.headers.get("Retry-After")) from None


# --- printing --------------------------------------------------------------------------


def _time(ms: Any) -> str:
    if not isinstance(ms, int):
        return str(ms)
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _shown(kind: IdentityKind, value: str, show: bool) -> str:
    return value if show else mask(kind, value)


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in values.items()) or "-"


def render_profile(snapshot: dict[str, Any], *, show_identities: bool = False) -> str:
    """A profile snapshot as lines for a terminal."""
    s = snapshot
    ids = s.get("identities") or {}
    lines = [
        f"profile {s.get('profileId')}  ({s.get('kind')}, pool {s.get('pool')}, "
        f"version {s.get('version')}, created {_time(s.get('createdAt'))})"
    ]
    external = ids.get("externalUserId")
    if external:
        shown = _shown(IdentityKind.EXTERNAL_USER_ID, external, show_identities)
        lines.append(f"  externalUserId  {shown}")
    channels = s.get("channels") or {}
    for key, kind in (("emails", IdentityKind.EMAIL), ("phones", IdentityKind.PHONE)):
        primary = {c.get("value") for c in channels.get(key, []) if c.get("primary")}
        values = [
            _shown(kind, v, show_identities) + (" (primary)" if v in primary else "")
            for v in ids.get(key) or []
        ]
        lines.append(f"  {key:<15} {', '.join(values) or '-'}")
    lines.append(f"  attributes      {_pairs(s.get('attributes') or {})}")
    lines.append(f"  custom          {_pairs(s.get('customAttributes') or {})}")
    lines.append(f"  tags            {', '.join(s.get('tags') or []) or '-'}")
    installs = s.get("installs") or []
    lines.append(f"  installs        {len(installs)}")
    for i in installs:
        flags = [
            f
            for f, on in (("primary", i.get("primaryDevice")), ("push", i.get("pushEnabled")))
            if on
        ]
        lines.append(
            f"    {i.get('pushRegistrationId')}  {i.get('appCode')}  {i.get('lifecycle')}"
            + (f"  [{', '.join(flags)}]" if flags else "")
        )
    merged = s.get("mergedFrom") or []
    if merged:
        lines.append(f"  mergedFrom      {', '.join(merged)}")
    return "\n".join(lines)


def render_install(view: dict[str, Any]) -> str:
    v = view
    return "\n".join(
        [
            f"install {v.get('pushRegistrationId')}  ({v.get('appCode')}, pool {v.get('pool')}, "
            f"{v.get('lifecycle')})",
            f"  profile         {v.get('profileId') or '(pending)'}",
            f"  system data     {_pairs(v.get('systemData') or {})}",
            f"  custom          {_pairs(v.get('customAttributes') or {})}",
            f"  last launch     {_time(v.get('lastLaunch'))}  "
            f"(dropped by dedup: {v.get('droppedLaunches')})",
        ]
    )


# --- command ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "key",
        help="profile id, email:…, phone:…, externalUserId:…, or a pushRegistrationId",
    )
    parser.add_argument("--url", help="a worker's API, default http://<http_host>:<http_port>")
    parser.add_argument("--settings", help="settings file (TOML or JSON); IDSTREAM_* win")
    parser.add_argument(
        "--raw",
        "--show-identities",
        dest="raw",
        action="store_true",
        help="ask for raw values (identities, attributes); granted only for the raw token "
        "(IDSTREAM_HTTP_RAW_TOKEN)",
    )


def base_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def run(args: argparse.Namespace) -> int:
    from idstream.settings import load_settings

    settings = load_settings(args.settings)
    url = args.url or base_url(settings.http_host, settings.http_port)
    try:
        key = parse_key(args.key)
    except ValueError as exc:
        print(f"idstream profile: {exc}", file=sys.stderr)
        return 2
    # The raw token for raw values; otherwise the read token (or the raw one if that is all).
    if args.raw:
        token = settings.http_raw_token or settings.http_token
    else:
        token = settings.http_token or settings.http_raw_token
    try:
        answer = fetch(url, key.path, token, raw=args.raw)
        blocks = [answer]
        if key.install:
            profile_id = answer.get("profileId")
            if profile_id:
                path = f"/profiles/{_quote(profile_id)}"
                blocks.append(fetch(url, path, token, raw=args.raw))
    except ApiError as exc:
        print(f"idstream profile: {args.key}: {exc}", file=sys.stderr)
        return 1 if exc.status == 404 else 3
    except (urllib.error.URLError, OSError) as exc:
        print(f"idstream profile: cannot reach {url}: {exc}", file=sys.stderr)
        return 3
    for block in blocks:
        if "installs" in block:
            print(render_profile(block, show_identities=args.raw))
        else:
            print(render_install(block))
    return 0
