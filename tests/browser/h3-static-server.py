"""A tiny HTTP/3-only static file server (aioquic) for checking play.mjs --h3.

    .venv/bin/python tests/browser/h3-static-server.py DIR

Listens on UDP 127.0.0.1 with a port the OS picks, with a fresh self-signed
certificate for 127.0.0.1/localhost, and prints the port alone on the first
line of stdout and the certificate's path (PEM) on the second. Every response carries Access-Control-Allow-Origin: *.
"""

import asyncio
import datetime
import ipaddress
import mimetypes
import os
import shutil
import signal
import sys
import tempfile

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
}


def self_signed(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


CERT_DIR = tempfile.mkdtemp(prefix="h3-static-")


class StaticH3(QuicConnectionProtocol):
    root = "."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self.h3 = H3Connection(self._quic)
        if self.h3 is None:
            return
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                self.respond(ev)

    def respond(self, ev: HeadersReceived) -> None:
        headers = dict(ev.headers)
        method = headers.get(b":method", b"GET")
        path = headers.get(b":path", b"/").decode().split("?", 1)[0]
        base = [(b"access-control-allow-origin", b"*"), (b"server", b"h3-static-server")]
        if method == b"OPTIONS":
            self.send(ev.stream_id, 204, base + [(b"access-control-allow-headers", b"*")], b"")
            return
        if path == "/time":
            # The clock the test content's MPDs name (ffmpeg -utc_timing_url /time).
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
            body = now.replace("+00:00", "Z").encode()
            self.send(ev.stream_id, 200, base + [(b"content-type", b"text/plain"), (b"cache-control", b"no-store")], body)
            return
        file = os.path.realpath(os.path.join(self.root, path.lstrip("/")))
        if not file.startswith(self.root + os.sep) or not os.path.isfile(file):
            self.send(ev.stream_id, 404, base, b"not found")
            return
        with open(file, "rb") as f:
            body = f.read()
        ext = os.path.splitext(file)[1]
        ctype = TYPES.get(ext) or mimetypes.guess_type(file)[0] or "application/octet-stream"
        cache = b"no-cache" if ext in (".m3u8", ".mpd") else b"max-age=60"
        extra = [(b"content-type", ctype.encode()), (b"cache-control", cache)]
        self.send(ev.stream_id, 200, base + extra, b"" if method == b"HEAD" else body)

    def send(self, stream_id, status, headers, body):
        self.h3.send_headers(
            stream_id,
            [(b":status", str(status).encode()), (b"content-length", str(len(body)).encode())] + headers,
        )
        self.h3.send_data(stream_id, body, end_stream=True)
        self.transmit()


async def main():
    StaticH3.root = os.path.realpath(sys.argv[1] if len(sys.argv) > 1 else ".")
    cert, key = self_signed(CERT_DIR)
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
    config.load_cert_chain(cert, key)
    server = await serve("127.0.0.1", 0, configuration=config, create_protocol=StaticH3)
    port = server._transport.get_extra_info("sockname")[1]
    print(port, flush=True)
    print(cert, flush=True)
    await asyncio.Future()


def stop(*_):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(CERT_DIR, ignore_errors=True)
