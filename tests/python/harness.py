"""harness.py: run the real ctxleakd for the Python client's tests, as
tests/harness.c does for the C ones.

A test starts the daemon binary ($CTXLEAKD_BIN, set by the Makefile; else
build/ctxleakd) with --socket, --db and --linger 0 in a fresh temporary
directory, runs a client script in a child python3 (the package from
client/python, CTXLEAK_SOCKET pointing at the daemon), stops the daemon
with SIGTERM and reads the database with the sqlite3 module.  Every wait
polls with a generous timeout: no result depends on timing.
"""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "client", "python")
TIMEOUT = 20  # seconds any wait gives the daemon or a client


def daemon_path():
    return os.environ.get("CTXLEAKD_BIN") or \
        os.path.join(ROOT, "build", "ctxleakd")


class Daemon:
    """One ctxleakd on a temporary directory; a context manager that
    kills it and removes the directory."""

    def __init__(self, *args):
        self.dir = tempfile.mkdtemp(prefix="ctxleak-py-")
        self.socket = os.path.join(self.dir, "ctxleak.sock")
        self.db = os.path.join(self.dir, "ctxleak.db")
        self.log = os.path.join(self.dir, "stderr.log")
        self.args = args
        self.proc = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [daemon_path(), "--socket", self.socket, "--db", self.db,
                 "--linger", "0", *self.args],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ctxleakd exited before listening:\n"
                                   + self.read_log())
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.socket)
                return
            except OSError:
                time.sleep(0.02)
            finally:
                s.close()
        raise RuntimeError("ctxleakd did not listen")

    def stop(self):
        """SIGTERM and wait; returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(TIMEOUT)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def read_log(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def query(self, sql, *params):
        """All rows of sql, read-only (the daemon may still write)."""
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def scalar(self, sql, *params):
        rows = self.query(sql, *params)
        return rows[0][0] if rows else None

    def wait_scalar(self, sql, want):
        """Poll until scalar(sql) >= want; returns the last value."""
        deadline = time.monotonic() + TIMEOUT
        v = None
        while time.monotonic() < deadline:
            try:
                v = self.scalar(sql)
            except sqlite3.Error:
                v = None
            if v is not None and v >= want:
                return v
            time.sleep(0.05)
        return v

    def leaks(self):
        """{class: count} of every finding."""
        return dict(self.query(
            "SELECT class, count(*) FROM leaks GROUP BY class"))

    def process(self):
        """The one process row, as a dict."""
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute("SELECT * FROM processes").fetchall()
        finally:
            db.close()
        assert len(rows) == 1, f"{len(rows)} processes"
        return dict(rows[0])


def dedent(script):
    """The script with the indentation of its first line taken off every
    line that has it: a test's indented script may end with STATS."""
    lines = script.strip("\n").splitlines()
    indent = lines[0][:len(lines[0]) - len(lines[0].lstrip())]
    return "\n".join(ln[len(indent):] if ln.startswith(indent) else ln
                     for ln in lines) + "\n"


def client_env(daemon, env=None):
    """The environment of a client child: the package on its path,
    CTXLEAK_SOCKET at daemon (None: at no daemon at all)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = PACKAGE + os.pathsep + e.get("PYTHONPATH", "")
    e["CTXLEAK_QUIET"] = "1"
    e["CTXLEAK_SOCKET"] = daemon.socket if daemon is not None else \
        "/nonexistent/ctxleak.sock"
    for k in ("CTXLEAK_BACKEND", "CTXLEAK_APP", "CTXLEAK_DISABLE"):
        e.pop(k, None)
    e.update(env or {})
    return e


def run_client(daemon, script, env=None, expect_rc=0):
    """Run script (dedented) in a child python3 against daemon (None: no
    daemon at all); returns the JSON the script printed as its last line
    of stdout (None if none)."""
    p = subprocess.run([sys.executable, "-c", dedent(script)],
                       env=client_env(daemon, env), capture_output=True,
                       text=True, timeout=TIMEOUT * 3)
    if p.returncode != expect_rc:
        raise AssertionError(f"client exited {p.returncode}:\n{p.stdout}"
                             f"\n{p.stderr}")
    lines = p.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


class Client:
    """A client child the test steps through: the script calls step()
    (defined for it) to print a line and wait for the test's go()."""

    PRELUDE = ("import sys\n"
               "def step(what):\n"
               "    print(what, flush=True)\n"
               "    sys.stdin.readline()\n")

    def __init__(self, daemon, script, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.PRELUDE + dedent(script)],
            env=client_env(daemon, env), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def expect(self, what):
        """Wait for the script's step(what)."""
        line = self.proc.stdout.readline().strip()
        if line != what:
            self.proc.kill()
            raise AssertionError(f"client said {line!r}, not {what!r}:\n"
                                 + self.proc.stderr.read())

    def go(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self):
        """Wait for the exit; returns the JSON of its last line."""
        out, err = self.proc.communicate(timeout=TIMEOUT * 3)
        if self.proc.returncode != 0:
            raise AssertionError(f"client exited {self.proc.returncode}:"
                                 f"\n{out}\n{err}")
        return json.loads(out.strip().splitlines()[-1])


# Ends a client script: shut down, then print stats() as JSON.
STATS = """
ctxleak.shutdown()
import json
print(json.dumps(ctxleak.stats()))
"""
