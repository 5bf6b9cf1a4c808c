"""fetch: content decoding under the size cap, against a real server on 127.0.0.1."""

from __future__ import annotations

import gzip
import zlib

import httpx
import pytest
from pytest_httpserver import HTTPServer

from ihub.egress import EgressPolicy, ResponseTooLarge, egress_client, fetch
from ihub.egress.fetch import BoundedDecoder

pytestmark = pytest.mark.anyio

LOOPBACK = EgressPolicy.from_entries(["127.0.0.0/8"])
MiB = 1024 * 1024
BOMB = gzip.compress(b"\0" * (50 * MiB))  # about 50 KiB on the wire


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def test_a_compressed_chunk_never_inflates_past_the_room_left() -> None:
    decoder = BoundedDecoder("gzip")
    pieces = decoder.decode(BOMB, room=MiB)
    assert len(next(pieces)) <= MiB + 1  # httpx's own decoder would hand back all 50 MiB here


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", raw_deflate), ("br", lambda data: data)],
    ids=["gzip", "deflate-zlib", "deflate-raw", "unknown-passes-through"],
)
async def test_encoded_answers_decode_as_before(httpserver: HTTPServer, encoding: str, encode) -> None:  # noqa: ANN001
    body = b'{"ok": true, "padding": "' + b"p" * 200_000 + b'"}'
    httpserver.expect_request("/x").respond_with_data(encode(body), headers={"Content-Encoding": encoding})
    async with egress_client(LOOPBACK) as http:
        response = await fetch(http, "GET", httpserver.url_for("/x"), deadline=10, max_bytes=MiB)
    assert response.content == body


async def test_a_gzip_bomb_fails_at_the_cap(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/bomb").respond_with_data(BOMB, headers={"Content-Encoding": "gzip"})
    async with egress_client(LOOPBACK) as http:
        with pytest.raises(ResponseTooLarge):
            await fetch(http, "GET", httpserver.url_for("/bomb"), deadline=10, max_bytes=MiB)


async def test_a_broken_encoding_is_a_clear_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/broken").respond_with_data(b"not gzip at all", headers={"Content-Encoding": "gzip"})
    async with egress_client(LOOPBACK) as http:
        with pytest.raises(httpx.DecodingError, match="gzip encoding is broken"):
            await fetch(http, "GET", httpserver.url_for("/broken"), deadline=10, max_bytes=MiB)
