#!/usr/bin/env python3
"""An independent HTTP/3 client (aioquic) for the edge's e2e tests.

Fetches one URL over HTTP/3 and prints, as one JSON object: status, response
headers, body length and the body's sha256. Exit status 0 when a response
arrived (whatever its status), 1 when the stream was reset or the connection
failed, 2 when aioquic is missing.

    h3_client.py https://localhost:4433/live/a/seg1.m4s?token=x \
        --ca cert.pem --connect 127.0.0.1 --header 'range: bytes=0-99'
"""

import argparse
import asyncio
import hashlib
import json
import ssl
import sys
from urllib.parse import urlsplit

try:
    from aioquic.asyncio.client import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import ConnectionTerminated, StreamReset
except ImportError:
    print("install aioquic: pip install aioquic", file=sys.stderr)
    sys.exit(2)


class Http3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._responses = {}  # stream id -> [headers, body chunks, future]

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self._responses:
            future = self._responses[event.stream_id][2]
            if not future.done():
                future.set_exception(
                    RuntimeError(f"stream reset by the server (code {event.error_code})")
                )
        if isinstance(event, ConnectionTerminated):
            for _, _, future in self._responses.values():
                if not future.done():
                    future.set_exception(
                        RuntimeError(f"connection closed: {event.reason_phrase}")
                    )
        for h3_event in self._http.handle_event(event):
            response = self._responses.get(getattr(h3_event, "stream_id", None))
            if response is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                response[0].extend(h3_event.headers)
            elif isinstance(h3_event, DataReceived):
                response[1].append(h3_event.data)
            if getattr(h3_event, "stream_ended", False) and not response[2].done():
                response[2].set_result(None)

    async def get(self, url, extra_headers):
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        stream_id = self._quic.get_next_available_stream_id()
        future = self._loop.create_future()
        self._responses[stream_id] = [[], [], future]
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", parts.netloc.encode()),
            (b":path", target.encode()),
            (b"user-agent", b"aioquic-strata-test"),
        ] + [(k.lower().encode(), v.encode()) for k, v in extra_headers]
        self._http.send_headers(stream_id, headers, end_stream=True)
        self.transmit()
        await future
        head, chunks, _ = self._responses.pop(stream_id)
        return head, b"".join(chunks)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--ca", help="PEM file of the certificate to trust")
    parser.add_argument("--connect", help="address to connect to instead of the URL's host")
    parser.add_argument("--header", action="append", default=[], help="'name: value'")
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()

    parts = urlsplit(args.url)
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    config.server_name = parts.hostname
    if args.ca:
        config.load_verify_locations(args.ca)
    else:
        config.verify_mode = ssl.CERT_NONE
    extra = []
    for header in args.header:
        name, _, value = header.partition(":")
        extra.append((name.strip(), value.strip()))

    async with connect(
        args.connect or parts.hostname,
        parts.port or 443,
        configuration=config,
        create_protocol=Http3Client,
    ) as client:
        head, body = await asyncio.wait_for(client.get(args.url, extra), args.timeout)

    headers = {}
    status = None
    for name, value in head:
        name, value = name.decode(), value.decode()
        if name == ":status":
            status = int(value)
        else:
            headers[name] = value
    print(
        json.dumps(
            {
                "status": status,
                "headers": headers,
                "body_length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        )
    )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001 - report any failure as a test failure
        print(f"h3_client: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
