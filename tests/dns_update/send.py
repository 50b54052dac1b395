"""Sends one DNS UPDATE built with dnspython and prints what came back.

Used by tests/dns_update*.rs to replay message shapes no command-line tool
sends on demand (external-dns's, a forged clock, an unknown key) and to
read the TSIG of the answer, which nsupdate and knsupdate only summarise.

Reads one JSON object on stdin:

    {"server": "127.0.0.1", "port": 5353, "tcp": true,
     "zone": "service.local.",
     "key": {"name": "roster-key.", "algorithm": "hmac-sha256",
             "secret": "<base64>"} or null (unsigned); the algorithm
             "gss-tsig" signs with a stand-in GSS-API context,
     "skew": 0,                      # seconds added to the signing clock
     "original_id": null,            # the TSIG's Original ID, if not the header's
     "sig0": false,                  # add a SIG(0) record (RFC 2931) instead
     "prerequisites": [["present", "web-1.web", "A", "127.0.0.2"], ...],
     "updates": [["add", "web", 300, "A", "127.0.0.2"],
                 ["delete", "web", "A", "127.0.0.2"], ...]}

Names are relative to the zone unless they end with a dot. Prints one JSON
object: {"rcode": "NOERROR", "tsig": null or {"error": "BADSIG",
"mac_len": 32, "mac_ok": true}}. "mac_ok" is the answer's MAC checked
with the request's key (RFC 8945 section 5.3), also when the answer
carries a TSIG error; it is null when the MAC is empty.
"""

import json
import socket
import struct
import sys
import time
import types

import dns.message
import dns.name
import dns.rcode
import dns.rrset
import dns.renderer
import dns.tsig
import dns.update

# How long to wait for an answer, per attempt and over TCP.
TIMEOUT = 10.0
# UDP attempts before giving up.
UDP_ATTEMPTS = 3
# TSIG error names (RFC 8945 section 3): dns.rcode.to_text(16) says BADVERS,
# the EDNS meaning of the same number.
TSIG_ERRORS = {16: "BADSIG", 17: "BADKEY", 18: "BADTIME", 22: "BADTRUNC"}


def build(spec):
    zone = dns.name.from_text(spec["zone"])
    update = dns.update.UpdateMessage(zone)
    key = spec.get("key")
    if key:
        secret = key["secret"]
        if key["algorithm"] == "gss-tsig":
            # GSS-TSIG (RFC 3645) signs with a Kerberos context; roster
            # refuses it by its algorithm, so any MAC will do.
            secret = FakeGssContext()
        update.use_tsig(
            dns.tsig.Key(key["name"], secret, key["algorithm"]),
            fudge=key.get("fudge", 300),
            # Kea's D2 signs with an Original ID other than the header's.
            original_id=spec.get("original_id"),
        )
    for op, name, *rest in spec.get("prerequisites", []):
        name = dns.name.from_text(name, zone)
        # present(name), present(name, type), present(name, type, data...)
        getattr(update, op)(name, *rest)
    for op, name, *rest in spec.get("updates", []):
        name = dns.name.from_text(name, zone)
        getattr(update, op)(name, *rest)
    if spec.get("sig0"):
        # A SIG(0) (RFC 2931) in place of a TSIG: type covered 0, owner
        # the root, TTL 0, class ANY, last in the additional section. Its
        # RDATA is written as generic (RFC 3597): dnspython has no SIG
        # type for class ANY.
        rdata = (
            struct.pack("!HBBIIIH", 0, 15, 0, 0, 4102444800, 1577836800, 1)
            + zone.to_wire()
            + b"\x00" * 64
        )
        update.additional.append(
            dns.rrset.from_text(".", 0, "ANY", "SIG", f"\\# {len(rdata)} {rdata.hex()}")
        )
    return update


class FakeGssContext:
    """Stands in for a GSS-API security context (dns.tsig.GSSTSig)."""

    def get_signature(self, data):
        return b"\x00" * 28

    def verify_signature(self, data, expected):
        raise dns.tsig.BadSignature


def render(update, skew):
    """The wire form, signed `skew` seconds off this machine's clock:
    dnspython signs with time.time() when it renders (in dns.message, and in
    dns.renderer in other versions), so both modules see a shifted clock."""
    real = time.time
    shifted = types.SimpleNamespace(time=lambda: real() + skew)
    dns.message.time = dns.renderer.time = shifted
    try:
        return update.to_wire()
    finally:
        dns.message.time = dns.renderer.time = time


def exchange(spec, wire):
    address = (spec["server"], spec["port"])
    if spec.get("tcp"):
        with socket.create_connection(address, timeout=TIMEOUT) as sock:
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            (length,) = struct.unpack("!H", read_exactly(sock, 2))
            return read_exactly(sock, length)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT / UDP_ATTEMPTS)
        for _ in range(UDP_ATTEMPTS):
            sock.sendto(wire, address)
            try:
                while True:
                    answer, _ = sock.recvfrom(65535)
                    if answer[:2] == wire[:2]:
                        return answer
            except socket.timeout:
                continue
    raise SystemExit(f"no UDP answer from {address}")


def read_exactly(sock, length):
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            raise SystemExit("the server closed the TCP connection mid-answer")
        data += chunk
    return data


def parse(answer, update):
    """Decodes the answer, recording its TSIG instead of letting dnspython
    raise on a TSIG error: the tests assert the error and the MAC."""
    seen = {}
    key = update.keyring if update.had_tsig else None

    def record(wire, _key, owner, rdata, _now, request_mac, tsig_start, ctx, multi):
        seen["error"] = TSIG_ERRORS.get(rdata.error, str(rdata.error)) if rdata.error else None
        seen["mac_len"] = len(rdata.mac)
        seen["owner"] = owner.to_text()
        seen["mac_ok"] = None
        if key is not None and rdata.mac:
            # The digest as validate() computes it, but also for answers
            # that carry a TSIG error (BADTIME is signed, RFC 8945 5.3.2).
            (adcount,) = struct.unpack("!H", wire[10:12])
            unsigned = wire[0:10] + struct.pack("!H", adcount - 1) + wire[12:tsig_start]
            ctx = dns.tsig._digest(unsigned, key, rdata, None, request_mac)
            try:
                ctx.verify(rdata.mac)
                seen["mac_ok"] = True
            except dns.tsig.BadSignature:
                seen["mac_ok"] = False
        return None

    validate = dns.tsig.validate
    dns.tsig.validate = record
    try:
        message = dns.message.from_wire(
            answer,
            keyring=lambda _message, _name: key or dns.tsig.Key("unknown.", b"x"),
            request_mac=update.mac if update.had_tsig else b"",
        )
    finally:
        dns.tsig.validate = validate
    return message, (seen or None)


def main():
    spec = json.load(sys.stdin)
    update = build(spec)
    wire = render(update, spec.get("skew", 0))
    answer = exchange(spec, wire)
    message, tsig = parse(answer, update)
    if message.id != update.id:
        raise SystemExit(f"answer ID {message.id} for request ID {update.id}")
    print(json.dumps({"rcode": dns.rcode.to_text(message.rcode()), "tsig": tsig}))


main()
