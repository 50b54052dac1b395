"""A client that finds a service through roster's DNS and calls it.

It asks roster for the service's SRV records (_SERVICE._tcp.DOMAIN), picks
an instance by priority and weight as RFC 2782 says, takes the target's
address from the answer's additional section (or asks for it), and GETs /
from it with requests. It prints the answer and exits 0, or exits 1 if no
instance is healthy.

    python consumer.py --dns 127.0.0.1:8600 --service hello
"""

import argparse
import random
import sys

import dns.rdatatype
import dns.resolver
import requests


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dns", default="127.0.0.1:8600",
                        help="roster's DNS address (host:port)")
    parser.add_argument("--domain", default="service.local", help="roster's domain")
    parser.add_argument("--service", default="hello", help="service to call")
    return parser.parse_args()


def pick(records):
    """The lowest priority, then a weighted random choice (RFC 2782)."""
    best = min(r.priority for r in records)
    candidates = [r for r in records if r.priority == best]
    total = sum(r.weight for r in candidates)
    if total == 0:
        return random.choice(candidates)
    point = random.uniform(0, total)
    for record in candidates:
        point -= record.weight
        if point <= 0:
            return record
    return candidates[-1]


def main():
    args = parse_args()
    host, port = args.dns.rsplit(":", 1)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)

    name = f"_{args.service}._tcp.{args.domain}"
    try:
        answer = resolver.resolve(name, "SRV")
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        print(f"no healthy instance of {args.service} ({name})", file=sys.stderr)
        return 1
    chosen = pick(list(answer))

    # roster puts the targets' addresses in the additional section; ask for
    # them only if they were left out (a large answer over UDP).
    address = None
    for rrset in answer.response.additional:
        if rrset.name == chosen.target and rrset.rdtype == dns.rdatatype.A:
            address = rrset[0].address
    if address is None:
        address = resolver.resolve(chosen.target, "A")[0].address

    url = f"http://{address}:{chosen.port}/"
    response = requests.get(url, timeout=5)
    response.raise_for_status()
    print(f"{url} -> {response.json()['message']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
