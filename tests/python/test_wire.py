"""test_wire.py: the hand-written msgpack encoder of the Python client
against every hex dump of proto/PROTOCOL.md section 10 and of section 2.3
(version 2's HELLO and the ACK), byte for byte, and the reader of the
daemon's messages (RECEIPT, ACK, kinds it skips) against the daemon's.
The dumps are read from the spec itself, so a dump that changes (or a new
one without a case here) fails."""

import os
import re
import unittest

from harness import PACKAGE, ROOT
import sys
sys.path.insert(0, PACKAGE)
from ctxleak import _wire  # noqa: E402

INSTANCE = 0x5EED0123456789AB
A = 0x9C2F11D0A4B3E871
T = 5000000000  # ts around 5 s of CLOCK_MONOTONIC

# Heading of each dump in section 10 -> what the Python encoder makes.
CASES = {
    "HELLO": lambda: _wire.hello(INSTANCE, 4242, "worker", "thread",
                                 "default", 1764000000000000000,
                                 "libctxleak 0.1.0", version=1),
    "TAG user=alice": lambda: _wire.tag(T + 200, 4242, A, A, 1, "user",
                                        "alice"),
    "SITE 1": lambda: _wire.site(T, 4242, 1, "server.c", 142,
                                 "on_db_reply"),
    "BEGIN request A": lambda: _wire.begin(T + 100, 4242, A, 0, 1, 0,
                                           _wire.KIND_REQUEST, "GET /a"),
    "END of A": lambda: _wire.end(T + 9000, 4242, A, A, 1, A),
    "EVENT db.done": lambda: _wire.event(T + 300, 4242, A, A, 1,
                                         "db.done", None),
    "RESUME of A": lambda: _wire.resume(T + 400, 4243, 0, A, 1),
    "SUSPEND": lambda: _wire.suspend(T + 500, 4243, 0, A, 1),
    "DROPPED 12": lambda: _wire.dropped(T + 10000, 4242, 12, T + 600),
    "WATERMARK": lambda: _wire.watermark(T + 9000, 4242),
}


def dumps():
    """{heading: bytes} of every hex dump in section 10."""
    with open(os.path.join(ROOT, "proto", "PROTOCOL.md")) as f:
        text = f.read()
    section = text[text.index("## 10. Examples"):]
    out = {}
    for part in section.split("\n### ")[1:]:
        heading = part.splitlines()[0]
        block = re.search(r"\n\n((?:    [0-9a-f]{2}(?: [0-9a-f]{2})*\n)+)",
                          part)
        if block:
            out[heading] = bytes.fromhex(block.group(1).replace("\n", " "))
    return out


def dumps_v2():
    """(HELLO, ACK) of section 2.3: the hex block after the sentence that
    introduces each."""
    with open(os.path.join(ROOT, "proto", "PROTOCOL.md")) as f:
        text = f.read()
    section = text[text.index("### 2.3"):text.index("## 3. Encoding")]
    out = []
    for intro in ("A version 2 HELLO", "An ACK of 5000009000"):
        part = section[section.index(intro):]
        block = re.search(r"\n\n((?:    [0-9a-f]{2}(?: [0-9a-f]{2})*\n)+)",
                          part)
        out.append(bytes.fromhex(block.group(1).replace("\n", " ")))
    return out


def case_of(heading):
    found = [k for k in CASES if heading.startswith(k)]
    return max(found, key=len) if found else None


class TestDumps(unittest.TestCase):
    def test_every_dump_byte_for_byte(self):
        d = dumps()
        self.assertEqual(len(d), 11, sorted(d))
        for heading, want in d.items():
            if heading.startswith("RECEIPT"):
                continue
            key = case_of(heading)
            self.assertIsNotNone(key, f"no case for dump '{heading}'")
            got = CASES[key]()
            self.assertEqual(got.hex(" "), want.hex(" "), heading)
            size = re.search(r"\((\d+) bytes", heading)
            if size:
                self.assertEqual(len(got), int(size.group(1)), heading)

    def test_shipper_encoder_same_bytes(self):
        """The shipper's cached encoder writes what the dumps show, on
        first use and from its caches."""
        tuples = {
            "TAG user=alice": (_wire.TAG, T + 200, 4242, A, A, 1, "user",
                               "alice"),
            "BEGIN request A": (_wire.BEGIN, T + 100, 4242, A, 0, 1, 0,
                                _wire.KIND_REQUEST, "GET /a"),
            "END of A": (_wire.END, T + 9000, 4242, A, A, 1, A),
            "EVENT db.done": (_wire.EVENT, T + 300, 4242, A, A, 1,
                              "db.done", None),
            "RESUME of A": (_wire.RESUME, T + 400, 4243, 0, A, 1),
            "SUSPEND": (_wire.SUSPEND, T + 500, 4243, 0, A, 1),
        }
        d = dumps()
        enc = _wire.Encoder()
        for _ in range(2):
            for heading, want in d.items():
                key = case_of(heading)
                if key in tuples:
                    self.assertEqual(enc.record(tuples[key]).hex(" "),
                                     want.hex(" "), heading)
        # Small ts, cut and unhashable strings take the slow paths.
        r = (_wire.TAG, 5, 1, 2, 3, 4, ["k"], "v" * 5000)
        self.assertEqual(enc.record(r), _wire.tag(*r[1:]))
        self.assertEqual(enc.truncated, 1)

    def test_version_2_dumps(self):
        """Section 2.3: the HELLO with seq 300, as the shipper writes it
        (version 2 by default), and the ACK it reads."""
        hello, ack = dumps_v2()
        got = _wire.hello(INSTANCE, 4242, "worker", "thread", "default",
                          1764000000000000000, "libctxleak 0.1.0", seq=300)
        self.assertEqual(got.hex(" "), hello.hex(" "))
        self.assertEqual(len(got), 129)
        self.assertEqual(_wire.parse_reply(ack), (_wire.ACK, (T + 9000,),
                                                  11))
        self.assertEqual(_wire.parse_reply(bytes.fromhex("92 02 00")),
                         (_wire.ACK, (0,), 3))
        self.assertEqual(_wire.close(T, 4242).hex(" "),
                         "96 0a cf 00 00 00 01 2a 05 f2 00 cd 10 92 00 00 00")

    def test_replies_in_a_stream(self):
        """A RECEIPT with trailing elements of every type, an ACK, a kind
        this client does not know (skipped whole), another ACK."""
        # [1, 300, 5, nil, "hi", 0.0, [true, {1: 2}], bin "\xab\xcd"]
        receipt = bytes.fromhex("98 01 cd 01 2c 05 c0 a2 68 69 cb" + " 00" * 8
                                + " 92 c3 81 01 02 c4 02 ab cd")
        unknown = bytes.fromhex("93 07 dc 00 02 01 02 d9 03 61 62 63")
        buf = receipt + bytes.fromhex("92 02 cd 01 00") + unknown + \
            bytes.fromhex("92 02 ce 00 01 00 00")
        got, pos = [], 0
        while pos < len(buf):
            kind, fields, pos = _wire.parse_reply(buf, pos)
            got.append((kind, fields))
        self.assertEqual(got, [(_wire.RECEIPT, (300, 5)), (_wire.ACK, (256,)),
                               (7, ()), (_wire.ACK, (65536,))])
        for cut in range(1, len(unknown)):
            with self.assertRaises(_wire.Incomplete):
                _wire.parse_reply(unknown[:cut])
        with self.assertRaises(ValueError):
            _wire.parse_reply(b"\xc1")
        with self.assertRaises(ValueError):
            _wire.parse_reply(bytes.fromhex("91 02"))  # an ACK without W

    def test_receipt_dump(self):
        (want,) = [v for k, v in dumps().items() if k.startswith("RECEIPT")]
        self.assertEqual(_wire.parse_reply(want),
                         (_wire.RECEIPT, (300, 0), 6))

    def test_receipt_any_uint_format_and_trailing(self):
        # 300 as uint 32, dropped as uint 64, one trailing integer.
        buf = bytes.fromhex("94 01 ce 00 00 01 2c cf 00 00 00 00 00 00 00 05"
                            " 07")
        self.assertEqual(_wire.parse_reply(buf),
                         (_wire.RECEIPT, (300, 5), len(buf)))
        with self.assertRaises(_wire.Incomplete):
            _wire.parse_reply(buf[:5])
        with self.assertRaises(ValueError):
            _wire.parse_reply(bytes.fromhex("92 01 00"))  # short RECEIPT


class TestFormats(unittest.TestCase):
    def test_smallest_integer_formats(self):
        for v, hx in ((0, "00"), (127, "7f"), (128, "cc 80"),
                      (255, "cc ff"), (256, "cd 01 00"),
                      (65535, "cd ff ff"), (65536, "ce 00 01 00 00"),
                      (2**32 - 1, "ce ff ff ff ff"),
                      (2**32, "cf 00 00 00 01 00 00 00 00"),
                      (2**64 - 1, "cf ff ff ff ff ff ff ff ff")):
            self.assertEqual(_wire.uint(v).hex(" "), hx, v)
        for v, hx in ((-1, "ff"), (-32, "e0"), (-33, "d0 df"),
                      (-129, "d1 ff 7f"), (-32769, "d2 ff ff 7f ff"),
                      (-2**31 - 1, "d3 ff ff ff ff 7f ff ff ff")):
            self.assertEqual(_wire.sint(v).hex(" "), hx, v)

    def test_strings(self):
        self.assertEqual(_wire.string(None), b"\xc0")
        self.assertEqual(_wire.string(""), b"\xa0")
        self.assertEqual(_wire.string("x" * 31)[:1], b"\xbf")
        self.assertEqual(_wire.string("x" * 32)[:2], b"\xd9\x20")
        self.assertEqual(_wire.string("x" * 256)[:3], b"\xda\x01\x00")
        self.assertEqual(_wire.string("é"), b"\xa2\xc3\xa9")
        # Cut to 4096 bytes, as libctxleak cuts them.
        self.assertEqual(_wire.string("x" * 5000)[:3], b"\xda\x10\x00")
        self.assertTrue(_wire.cut("x" * 4097))
        self.assertFalse(_wire.cut("x" * 4096))
        # A lone surrogate cannot be UTF-8: replaced, not raised.
        self.assertEqual(_wire.string("\ud800"), b"\xa1?")


if __name__ == "__main__":
    unittest.main()
