#!/usr/bin/env python3
"""A non-quinn client attacking a Ringside relay (aioquic, ALPN ringside-client/1).

Each connection plays one abuse, chosen by its index:

  0 junk-datagrams   after hello, QUIC DATAGRAM frames of random bytes
  1 bogus-length     after hello, a frame header announcing 4 GiB on the control stream
  2 unfinished       after hello, 64 KiB header then 64 KiB - 1 bytes on the control
                     stream, 100 uni + 15 bidi streams of 256 KiB each, never finished
  3 idle             handshake, never a hello, PINGs every 300 ms
  4 idle-session     hello, then nothing but PINGs

and prints one JSON line per connection: what it sent, whether it got a
Welcome, and how it ended (the close code as this client saw it, its reason,
and when, from the script's start). A last line {"done": ...} sums up.

Hello frames are not built here: the relay speaks postcard, which this script
does not encode. `testbed attack --aioquic` writes them (one hex line per
connection, from the protocol's own codec) and passes --hello-file; without
one, the connections that need a hello fall back to "idle".

Standalone:
  pip install aioquic
  python3 testbed/attack/aioquic_attack.py --port 4700 --cafile ringside-data/relay-cert.pem \
      --hello-file hellos.txt --connections 20 --duration 7
"""

import argparse
import asyncio
import json
import os
import random
import ssl
import struct
import sys
import time

import contextlib
import socket

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.connection import QuicConnection
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    StreamDataReceived,
)

ALPN = "ringside-client/1"
MODES = ["junk-datagrams", "bogus-length", "unfinished", "idle", "idle-session"]
MAX_FRAME = 64 * 1024
START = time.monotonic()


class Watcher(QuicConnectionProtocol):
    """Records what the relay sends and how the connection ends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.control_bytes = bytearray()
        self.welcome = False
        self.received = 0
        self.datagrams = 0
        self.terminated = None
        self.ended = asyncio.get_event_loop().create_future()

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            self.received += len(event.data)
            if event.stream_id == 0 and not self.welcome:
                self.control_bytes.extend(event.data)
                if len(self.control_bytes) >= 5:
                    # Frame: 4-byte length, then postcard: Welcome is variant 0.
                    self.welcome = self.control_bytes[4] == 0
        elif isinstance(event, DatagramFrameReceived):
            self.datagrams += 1
        elif isinstance(event, ConnectionTerminated):
            self.terminated = {
                "error_code": event.error_code,
                "reason": event.reason_phrase,
                "frame_type": event.frame_type,
                "after_s": round(time.monotonic() - START, 3),
            }
            if not self.ended.done():
                self.ended.set_result(True)


def send(proto, stream_id, data, end=False):
    proto._quic.send_stream_data(stream_id, data, end_stream=end)
    proto.transmit()


async def keep_pinging(proto, until):
    while time.monotonic() < until and proto.terminated is None:
        try:
            await asyncio.wait_for(proto.ping(), timeout=1.0)
        except Exception:
            pass
        await asyncio.sleep(0.3)


@contextlib.asynccontextmanager
async def connect(source, host, port, configuration, create_protocol):
    """aioquic's `connect`, from a source address of our choice (its own
    binds "::"): the attacker must not share the honest clients' address, or
    the relay's penalty box for abusive addresses would refuse them too."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    connection = QuicConnection(configuration=configuration)
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: create_protocol(connection), sock=sock
    )
    try:
        protocol.connect((host, port), transmit=True)
        await protocol.wait_connected()
        yield protocol
    finally:
        protocol.close()
        await protocol.wait_closed()
        transport.close()


async def one(index, args, hellos):
    mode = MODES[index % len(MODES)]
    hello = hellos[index] if index < len(hellos) else None
    if hello is None and mode != "idle":
        mode = "idle"
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        server_name="localhost",
        max_datagram_frame_size=65536,
        idle_timeout=args.duration + 30,
    )
    if args.cafile:
        config.load_verify_locations(args.cafile)
    else:
        config.verify_mode = ssl.CERT_NONE
    record = {"conn": index, "mode": mode, "sent": 0}
    until = START + args.duration
    rng = random.Random(args.seed * 1000 + index)
    try:
        async with connect(args.source, args.host, args.port, config, Watcher) as proto:
            record["handshake"] = True
            quic = proto._quic
            if hello is not None and mode != "idle":
                send(proto, 0, hello)
                record["sent"] += len(hello)
                # A moment for the welcome.
                for _ in range(50):
                    if proto.welcome or proto.terminated:
                        break
                    await asyncio.sleep(0.01)
            if mode == "junk-datagrams":
                for _ in range(200):
                    junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 1000)))
                    quic.send_datagram_frame(junk)
                    record["sent"] += len(junk)
                proto.transmit()
            elif mode == "bogus-length":
                data = struct.pack(">I", 0xFFFFFFFF) + bytes(1024)
                send(proto, 0, data)
                record["sent"] += len(data)
            elif mode == "unfinished":
                data = struct.pack(">I", MAX_FRAME) + bytes(MAX_FRAME - 1)
                send(proto, 0, data)
                record["sent"] += len(data)
                chunk = bytes(256 * 1024)
                for uni in [True] * 100 + [False] * 15:
                    try:
                        sid = quic.get_next_available_stream_id(is_unidirectional=uni)
                        send(proto, sid, chunk)
                        record["sent"] += len(chunk)
                    except Exception as e:  # stream limit reached, connection closed
                        record["stream_error"] = type(e).__name__
                        break
            pinger = asyncio.ensure_future(keep_pinging(proto, until))
            await asyncio.wait(
                [pinger, proto.ended],
                timeout=max(0.0, until - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            pinger.cancel()
            # Stream bytes the relay acknowledged (it holds them, or read them).
            record["acked_stream_bytes"] = sum(
                getattr(stream.sender, "_buffer_start", 0) for stream in quic._streams.values()
            )
            record["welcome"] = proto.welcome
            record["received"] = proto.received
            record["datagrams_received"] = proto.datagrams
            if proto.terminated is not None:
                record["ended"] = proto.terminated
                record["closed_by_relay"] = True
            else:
                record["closed_by_relay"] = False
                record["ended"] = {"still_open_at_s": round(time.monotonic() - START, 3)}
    except Exception as e:
        record["error"] = f"{type(e).__name__}: {e}"
    return record


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--source", default="127.0.1.250", help="local address to send from")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cafile", help="the relay's certificate (PEM); without it, not verified")
    p.add_argument("--hello-file", help="hello frames, one hex line per connection")
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    hellos = []
    if args.hello_file:
        with open(args.hello_file) as f:
            hellos = [bytes.fromhex(line.strip()) for line in f if line.strip()]
    records = await asyncio.gather(*(one(i, args, hellos) for i in range(args.connections)))
    for r in records:
        print(json.dumps(r), flush=True)
    by_relay = sum(1 for r in records if r.get("closed_by_relay"))
    print(
        json.dumps(
            {
                "done": True,
                "connections": len(records),
                "handshakes": sum(1 for r in records if r.get("handshake")),
                "welcomed": sum(1 for r in records if r.get("welcome")),
                "closed_by_relay": by_relay,
                "errors": sum(1 for r in records if "error" in r),
                "pid": os.getpid(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
