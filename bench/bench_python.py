"""bench_python.py: what one ctxleak.event() costs the calling Python
code, against the least a client that writes each record to the daemon
itself would pay: one socket.send() of an already encoded EVENT per event.

Both run in the same process against the same real ctxleakd (started on a
temporary directory, as tests/python/harness.py does), in alternating
rounds, so that the machine's load weighs on both alike.  event() is timed
with the background thread running: its batching, encoding and sending
take the GIL from the caller, and are in the figure.  "drained" also waits
until the last record of the round has been handed to the socket.

    /usr/bin/python3 bench/bench_python.py [EVENTS_PER_ROUND [ROUNDS]]
"""

import os
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "client", "python"))

from harness import Daemon  # noqa: E402

import ctxleak  # noqa: E402
from ctxleak import _wire  # noqa: E402


def send_round(sock, n, record):
    send = sock.send
    t0 = time.perf_counter_ns()
    for _ in range(n):
        send(record)
    return (time.perf_counter_ns() - t0) / n


def event_round(n):
    event = ctxleak.event
    t0 = time.perf_counter_ns()
    for _ in range(n):
        event("db.done", "rows=1")
    t1 = time.perf_counter_ns()
    ctxleak.flush()
    while ctxleak.stats()["buffered"]:
        ctxleak.flush()
    return (t1 - t0) / n, (time.perf_counter_ns() - t0) / n


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with Daemon() as d:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(d.socket)
        raw.sendall(_wire.hello(_wire.VERSION + 0x5EED, os.getpid(),
                                "bench-raw", "task", None, 0, "bench"))
        ctx = 0x9C2F11D0A4B3E871
        record = _wire.event(time.monotonic_ns(), 1, ctx, ctx, 0,
                             "db.done", "rows=1")
        # Both bounds fit the run: a round's records wait in the queue,
        # and the whole run is one request, which holds the daemon's ACK
        # back by up to a second (daemon/process.c, HELD_ACK_LAG): at this
        # rate far more than the default 4 MiB stay kept meanwhile.
        ctxleak.init(socket=d.socket, app="bench", backend="task",
                     max_buffered=n + 1000,
                     buffer_limit=(n + 1000) * rounds * 64)
        sends, calls, drained = [], [], []
        with ctxleak.request("GET /bench"):
            for _ in range(rounds):
                sends.append(send_round(raw, n, record))
                c, dr = event_round(n)
                calls.append(c)
                drained.append(dr)
        raw.close()
        st = ctxleak.stats()
        ctxleak.shutdown()
        st = ctxleak.stats()
    med = statistics.median
    print(f"python {sys.version.split()[0]}, {rounds} rounds of {n} "
          "events, median (best)")
    print(f"socket.send() per event  {med(sends):8.0f} ns "
          f"({min(sends):.0f})")
    print(f"ctxleak.event()          {med(calls):8.0f} ns "
          f"({min(calls):.0f})   {med(sends) / med(calls):.1f}x cheaper")
    print(f"  drained to the socket  {med(drained):8.0f} ns "
          f"({min(drained):.0f})   {med(sends) / med(drained):.1f}x cheaper")
    print(f"records {st['records']}, dropped {st['dropped']}, "
          f"sent {st['sent_bytes']} bytes")


if __name__ == "__main__":
    main()
