"""What security costs: W1 latency (sequential ``add``, one connection) and the cost of a new
connection, with each protection against the same transport without it, in the same run.

    python bench/bench_security.py                    # every variant available
    python bench/bench_security.py --calls 20000 --variants tcp,tcp+secret

Variants: ``tcp``, ``tcp+secret`` (``[srpc.auth]``: proofs in the hello, every request and
response sealed with a per-session HMAC tag), ``tcp+tls`` (certificates made by trustme for
this run), ``zmq``, ``zmq+secret``, ``zmq+curve`` (``[srpc.zmq]`` CURVE with a key pair made
by ``srpc keygen`` for this run and ``curve_authorized_keys``, so pyzmq's authenticator checks
every new connection; server and client share the one key pair). Each variant is a server
process serving the calculator of examples/calc; the client makes sequential ``add(i, 1)``
calls after a warm-up, every call timed on its own; rows take turns in blocks so background
load hits them alike. "new connection" is the median time of a fresh client's first call
(connect, TLS or CURVE handshake, the hello with its proofs, the call) over ``--connections``
fresh clients. The secret, the certificates, the keys and the config files live in a temporary
directory.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CALC = REPO / "examples" / "calc" / "server"
BLOCK = 250

VARIANTS: dict[str, tuple[str, str]] = {
    # name: (transport, extra srpc.toml text; {secret} is the secret file's path)
    "tcp": ("tcp", ""),
    "tcp+secret": ("tcp", '[srpc.auth]\nsecret_file = "{secret}"\n'),
    "tcp+tls": (
        "tcp",
        '[srpc.tcp]\ntls_cert = "{dir}/server.pem"\ntls_key = "{dir}/server.key"\n'
        'tls_ca = "{dir}/ca.pem"\ntls_server_name = "srpc.test"\n',
    ),
    "zmq": ("zmq", ""),
    "zmq+secret": ("zmq", '[srpc.auth]\nsecret_file = "{secret}"\n'),
    "zmq+curve": (
        "zmq",
        '[srpc.zmq]\ncurve_secret_key_file = "{dir}/bench.key"\n'
        'curve_server_key = "{dir}/bench.pub"\ncurve_authorized_keys = "{dir}/authorized.txt"\n',
    ),
}


def write_config(directory: Path, name: str, secret: Path) -> Path:
    transport, extra = VARIANTS[name]
    path = directory / f"{name}.toml"
    path.write_text(
        f'[srpc]\ntransport = "{transport}"\n[srpc.metrics]\npath = ""\n'
        + extra.format(secret=secret, dir=directory)
    )
    return path


def serve(config: str) -> None:
    """In the server process: serve the calculator with `config` on a free port."""
    sys.path.insert(0, str(CALC))
    from calc.calc import Calc
    from calc.calc_interface import CalcInterface

    from srpc_core import Server

    Server(CalcInterface, Calc(), "127.0.0.1", 0, config=config).start()


class Row:
    def __init__(self, name: str, config: Path) -> None:
        sys.path.insert(0, str(CALC))
        from calc.calc_interface import CalcInterface

        from srpc_core import Client

        self.name = name
        self.config = config
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(config)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=tempfile.gettempdir(),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "serving" not in line:
            raise SystemExit(f"{name}: the server did not start: {line}")
        self.port = int(line.split(" at ")[1].split()[0].rsplit(":", 1)[1].rstrip("/"))
        self.interface = CalcInterface
        self.client_class = Client
        self.client = Client(CalcInterface, port=self.port, config=config)
        self.samples: list[float] = []
        self.connects: list[float] = []

    def run(self, calls: int) -> None:
        call = self.client.call
        samples = self.samples
        clock = time.perf_counter
        for i in range(calls):
            start = clock()
            call("add", (i, 1))
            samples.append(clock() - start)

    def connect(self) -> None:
        start = time.perf_counter()
        client = self.client_class(self.interface, port=self.port, config=self.config)
        client.call("add", (1, 1))
        self.connects.append(time.perf_counter() - start)
        client.close()

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=15)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10000, help="timed calls per variant")
    parser.add_argument("--connections", type=int, default=200, help="fresh clients per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=", ".join(VARIANTS))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    with tempfile.TemporaryDirectory() as work:
        directory = Path(work)
        secret = directory / "bench.secret"
        secret.write_text(secrets.token_urlsafe(32))
        os.chmod(secret, 0o600)
        if any("tls" in name for name in names):
            import trustme  # the test extra's; certificates made for this run only

            ca = trustme.CA()
            ca.cert_pem.write_to_path(str(directory / "ca.pem"))
            cert = ca.issue_cert("srpc.test")
            cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
            cert.private_key_pem.write_to_path(str(directory / "server.key"))
        if any("curve" in name for name in names):
            from srpc_core.tools.srpc_keygen import keygen

            public = keygen("bench", directory)[2]
            (directory / "authorized.txt").write_text(public + "\n")
        rows = [Row(name, write_config(directory, name, secret)) for name in names]
        try:
            for row in rows:  # warm-up
                row.run(500)
                row.samples.clear()
            done = 0
            while done < args.calls:
                block = min(BLOCK, args.calls - done)
                for row in rows:
                    row.run(block)
                done += block
            for _ in range(args.connections):
                for row in rows:
                    row.connect()
        finally:
            for row in rows:
                row.stop()
    print(
        f"W1: {args.calls} sequential add() calls per variant, one connection; "
        f"new connection: median of {args.connections} fresh clients' first call"
    )
    print(
        f"{'variant':<14} {'p50 us':>8} {'p99 us':>8} {'+p50 us':>8} {'new conn us':>12} "
        f"{'+conn us':>9}"
    )
    base: dict[str, Row] = {}
    for row in rows:
        transport = VARIANTS[row.name][0]
        base.setdefault(transport, row)
    for row in rows:
        samples = sorted(row.samples)
        p50 = statistics.median(samples)
        p99 = samples[int(len(samples) * 0.99) - 1]
        conn = statistics.median(row.connects)
        ref = base[VARIANTS[row.name][0]]
        ref50 = statistics.median(ref.samples)
        refconn = statistics.median(ref.connects)
        print(
            f"{row.name:<14} {us(p50):>8} {us(p99):>8} {us(p50 - ref50):>8} {us(conn):>12} "
            f"{us(conn - refconn):>9}"
        )


if __name__ == "__main__":
    main()
