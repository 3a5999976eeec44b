#!/usr/bin/env python3
"""A tiny authoritative DNS stub on UDP, standing in for cluster DNS in the image tests.

Answers A queries for the names given on the command line (NAME=IPV4), an empty NOERROR for
other query types of those names (AAAA: "no IPv6 address"), and NXDOMAIN for everything else,
so a resolver with a Kubernetes-like `search` list and `ndots:5` walks its search domains the
way it does in a pod. Prints `ready` on stdout once bound, then one line per query.

Usage: dns_stub.py ADDR PORT NAME=IPV4...
"""

from __future__ import annotations

import socket
import struct
import sys


def parse_question(packet: bytes) -> tuple[str, int, int, int]:
    """(name, qtype, qclass, offset after the question) of the first question."""
    labels = []
    pos = 12
    while True:
        length = packet[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(packet[pos + 1 : pos + 1 + length].decode("ascii").lower())
        pos += 1 + length
    qtype, qclass = struct.unpack("!HH", packet[pos : pos + 4])
    return ".".join(labels), qtype, qclass, pos + 4


def answer(packet: bytes, records: dict[str, bytes]) -> bytes:
    (query_id,) = struct.unpack("!H", packet[:2])
    rd = packet[2] & 0x01
    name, qtype, qclass, end = parse_question(packet)
    question = packet[12:end]
    known = name.rstrip(".") in records
    rcode = 0 if known else 3
    answers = b""
    if known and qtype == 1 and qclass == 1:
        # Name as a pointer to the question (offset 12), A, IN, TTL 5, 4 bytes.
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + records[name.rstrip(".")]
    flags = 0x8400 | (rd << 8) | 0x0080 | rcode  # QR, AA, RD echoed, RA, rcode
    header = struct.pack("!HHHHHH", query_id, flags, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    records = {}
    for item in argv[3:]:
        name, _, ip = item.partition("=")
        records[name.lower().rstrip(".")] = socket.inet_aton(ip)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((argv[1], int(argv[2])))
    print("ready", flush=True)
    while True:
        packet, peer = sock.recvfrom(4096)
        try:
            name, qtype, _, _ = parse_question(packet)
            sock.sendto(answer(packet, records), peer)
        except (ValueError, IndexError, UnicodeDecodeError, struct.error):
            continue
        known = name.rstrip(".") in records
        print(f"query {name} type {qtype} {'answered' if known else 'NXDOMAIN'}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
