"""The explorer page's files, shipped in the package (no CDN, no network), and the headers
every one of them is sent with.

Presentation layer. The page is static: it holds no data, and fetches JSON from the lookup API
with the user's token. Its Content-Security-Policy allows nothing but this server's own script,
style sheet, icon and JSON: no inline script or style, no other origin, no frames, no forms
sent anywhere; so a value that slipped through as markup could still not run.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

PAGE = "index.html"
# The files under /explorer/ (name -> content type); nothing else is served from there.
FILES = {
    PAGE: "text/html; charset=utf-8",
    "explorer.js": "text/javascript; charset=utf-8",
    "explorer.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@cache
def asset(name: str) -> tuple[bytes, str] | None:
    """The bytes and content type of one of FILES (None: not one of them)."""
    content_type = FILES.get(name)
    if content_type is None:
        return None
    return (resources.files(__package__) / "assets" / name).read_bytes(), content_type
