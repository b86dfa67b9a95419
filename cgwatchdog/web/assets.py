"""The status page's files: its style sheet, its script and a favicon, served from memory.

Nothing is fetched from elsewhere (farms are often offline) and nothing is inline, so
the page runs under a Content-Security-Policy of ``'self'`` only. The favicon is drawn
here (a 32x32 PNG in an ICO) so that browsers find one and log no 404.
"""

from __future__ import annotations

import struct
import zlib
from importlib import resources
from typing import Final

from aiohttp import web

__all__ = ["FAVICON", "SCRIPT", "STYLE", "routes"]

_CACHE: Final = "public, max-age=3600"


def _png(size: int, pixel: object) -> bytes:
    """A square RGBA PNG; ``pixel(x, y)`` gives each pixel's 4 bytes."""
    rows = b"".join(
        b"\0" + b"".join(pixel(x, y) for x in range(size))  # type: ignore[operator]
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def _icon_pixel(x: int, y: int) -> bytes:
    """A dark rounded tile with an amber bar chart: a farm's hashrate."""
    size, radius = 32, 6
    cx = min(max(x, radius), size - 1 - radius)
    cy = min(max(y, radius), size - 1 - radius)
    if (x - cx) ** 2 + (y - cy) ** 2 > radius**2:
        return b"\0\0\0\0"
    for left, top in ((7, 17), (14, 10), (21, 5)):
        if left <= x < left + 5 and top <= y < 26:
            return b"\xf5\xa6\x23\xff"
    return b"\x1f\x29\x37\xff"


def _ico(png: bytes, size: int) -> bytes:
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", size, size, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


FAVICON: Final = _ico(_png(32, _icon_pixel), 32)
STYLE: Final = resources.files("cgwatchdog.web").joinpath("static/page.css").read_bytes()
SCRIPT: Final = resources.files("cgwatchdog.web").joinpath("static/page.js").read_bytes()


def _file(body: bytes, content_type: str) -> web.Response:
    response = web.Response(body=body, content_type=content_type)
    response.headers["Cache-Control"] = _CACHE
    return response


async def _favicon(request: web.Request) -> web.StreamResponse:
    return _file(FAVICON, "image/x-icon")


async def _style(request: web.Request) -> web.StreamResponse:
    response = _file(STYLE, "text/css")
    response.charset = "utf-8"
    return response


async def _script(request: web.Request) -> web.StreamResponse:
    response = _file(SCRIPT, "text/javascript")
    response.charset = "utf-8"
    return response


def routes() -> list[web.RouteDef]:
    """GET /favicon.ico, /static/page.css, /static/page.js."""
    return [
        web.get("/favicon.ico", _favicon),
        web.get("/static/page.css", _style),
        web.get("/static/page.js", _script),
    ]
