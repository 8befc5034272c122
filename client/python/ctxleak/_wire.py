"""The wire protocol of proto/PROTOCOL.md, version 2: a msgpack encoder for
HELLO and the ten record types, and the reader of what the daemon sends
back (its RECEIPT, then ACKs; kinds it does not know are skipped).

Written by hand so that the package needs only the standard library.
Integers take msgpack's smallest format and strings the smallest str
format, exactly as msgpack-c's packer (and so libctxleak) writes them:
tests/python/test_wire.py holds every hex dump of PROTOCOL.md section 10
to that, byte for byte.
"""

import struct

VERSION = 2

(SITE, BEGIN, END, TAG, EVENT, RESUME, SUSPEND, DROPPED, WATERMARK,
 CLOSE) = range(1, 11)
KIND_REQUEST, KIND_CHILD = 0, 1
RECEIPT, ACK = 1, 2  # kinds of the daemon's messages

# Strings are cut to this many bytes, as libctxleak cuts them
# (CTXLEAK_MAX_STRING): the daemon refuses a str over 16384.
MAX_STRING = 4096

_U8, _U16, _U32, _U64 = (struct.Struct(f) for f in (">B", ">H", ">I", ">Q"))
_I8, _I16, _I32, _I64 = (struct.Struct(f) for f in (">b", ">h", ">i", ">q"))


def uint(v):
    """An unsigned integer in its smallest msgpack format."""
    if v < 0x80:
        return bytes((v,))
    if v <= 0xFF:
        return b"\xcc" + _U8.pack(v)
    if v <= 0xFFFF:
        return b"\xcd" + _U16.pack(v)
    if v <= 0xFFFFFFFF:
        return b"\xce" + _U32.pack(v)
    return b"\xcf" + _U64.pack(v)


def sint(v):
    """A signed integer: the unsigned formats when non-negative, as
    msgpack-c's msgpack_pack_int64 writes it."""
    if v >= 0:
        return uint(v)
    if v >= -32:
        return _I8.pack(v)
    if v >= -0x80:
        return b"\xd0" + _I8.pack(v)
    if v >= -0x8000:
        return b"\xd1" + _I16.pack(v)
    if v >= -0x80000000:
        return b"\xd2" + _I32.pack(v)
    return b"\xd3" + _I64.pack(v)


def _utf8(s):
    """The bytes of a string field, cut to MAX_STRING; returns them and
    whether they were cut.  Anything that is not str or bytes is str()ed;
    characters UTF-8 cannot carry (lone surrogates) are replaced."""
    if isinstance(s, bytes):
        b = s
    else:
        if not isinstance(s, str):
            s = str(s)
        b = s.encode("utf-8", "replace")
    if len(b) > MAX_STRING:
        return b[:MAX_STRING], True
    return b, False


def string(s):
    """A str (never bin); None goes out as nil."""
    if s is None:
        return b"\xc0"
    b, _ = _utf8(s)
    n = len(b)
    if n < 32:
        return bytes((0xA0 | n,)) + b
    if n <= 0xFF:
        return b"\xd9" + _U8.pack(n) + b
    if n <= 0xFFFF:
        return b"\xda" + _U16.pack(n) + b
    return b"\xdb" + _U32.pack(n) + b


def cut(s):
    """Whether string() will cut s (for the truncated counter)."""
    return s is not None and _utf8(s)[1]


def hello(instance, pid, app=None, backend=None, reason=None,
          clock_offset=0, client=None, seq=None, version=VERSION):
    """The HELLO map, keys in libctxleak's order; absent optional values
    are left out.  seq: the stream position of the connection's first
    record (version 2, PROTOCOL.md 2.3)."""
    out = [string("version"), uint(version), string("instance"),
           uint(instance), string("pid"), uint(pid)]
    for key, value in (("app", app), ("backend", backend),
                       ("reason", reason)):
        if value is not None:
            out += (string(key), string(value))
    out += (string("clock_offset"), sint(clock_offset))
    if client is not None:
        out += (string("client"), string(client))
    if seq is not None:
        out += (string("seq"), uint(seq))
    return bytes((0x80 | (len(out) // 2),)) + b"".join(out)


def _head(n, kind, ts, tid, ctx, cause, site):
    return (bytes((0x90 | n, kind)) + uint(ts) + uint(tid) + uint(ctx)
            + uint(cause) + uint(site))


def site(ts, tid, id, file, line, func):
    return _head(9, SITE, ts, tid, 0, 0, id) + string(file or "") \
        + uint(line) + string(func or "")


def begin(ts, tid, ctx, cause, site, prev, kind, name):
    return _head(9, BEGIN, ts, tid, ctx, cause, site) + uint(prev) \
        + uint(kind) + string(name)


def end(ts, tid, ctx, cause, site, cur):
    return _head(7, END, ts, tid, ctx, cause, site) + uint(cur)


def tag(ts, tid, ctx, cause, site, key, value):
    return _head(8, TAG, ts, tid, ctx, cause, site) + string(key) \
        + string(value)


def event(ts, tid, ctx, cause, site, name, message):
    return _head(8, EVENT, ts, tid, ctx, cause, site) + string(name) \
        + string(message)


def resume(ts, tid, ctx, cause, site):
    return _head(6, RESUME, ts, tid, ctx, cause, site)


def suspend(ts, tid, ctx, cause, site):
    return _head(6, SUSPEND, ts, tid, ctx, cause, site)


def dropped(ts, tid, count, since):
    return _head(8, DROPPED, ts, tid, 0, 0, 0) + uint(count) + uint(since)


def watermark(ts, tid):
    return _head(6, WATERMARK, ts, tid, 0, 0, 0)


def close(ts, tid):
    return _head(6, CLOSE, ts, tid, 0, 0, 0)


# ------------------------------------------- what the daemon sends back

class Incomplete(Exception):
    """More bytes are needed."""


def _read_uint(buf, pos):
    """An unsigned integer at pos (any msgpack format); its value and the
    next position.  ValueError when it is not one."""
    if pos >= len(buf):
        raise Incomplete
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    s = _UINTS.get(b)
    if s is None:
        raise ValueError("not an unsigned integer")
    if pos + 1 + s.size > len(buf):
        raise Incomplete
    return s.unpack_from(buf, pos + 1)[0], pos + 1 + s.size


_UINTS = {0xCC: _U8, 0xCD: _U16, 0xCE: _U32, 0xCF: _U64}
# Objects of a fixed size, by first byte: nil, false, true, the other
# integers, floats and fixext (0xC1 is never used: not msgpack).
_FIXED = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3,
          0xCE: 5, 0xCF: 9, 0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9, 0xD4: 3,
          0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18}
# First byte of a length-prefixed object -> (width of the length, bytes
# after the length before the payload): bin, ext (its type byte), str.
_PREFIXED = {0xC4: (_U8, 0), 0xC5: (_U16, 0), 0xC6: (_U32, 0),
             0xC7: (_U8, 1), 0xC8: (_U16, 1), 0xC9: (_U32, 1),
             0xD9: (_U8, 0), 0xDA: (_U16, 0), 0xDB: (_U32, 0)}


def skip(buf, pos, depth=0):
    """The position after the msgpack object at pos, whatever its type
    (a later revision's trailing elements, a message of a kind this
    client does not know).  Incomplete when it is not all there,
    ValueError when it is not msgpack or nests over 8 deep."""
    if pos >= len(buf):
        raise Incomplete
    b = buf[pos]
    if b < 0x80 or b >= 0xE0:  # positive and negative fixint
        end = pos + 1
    elif b <= 0x9F:  # fixmap, fixarray
        n = b & 0x0F
        end = pos + 1
        if b <= 0x8F:
            n *= 2
        return _skip_n(buf, end, n, depth)
    elif b <= 0xBF:  # fixstr
        end = pos + 1 + (b & 0x1F)
    elif b in _FIXED:
        end = pos + _FIXED[b]
    elif b in _PREFIXED:
        width, extra = _PREFIXED[b]
        if pos + 1 + width.size > len(buf):
            raise Incomplete
        end = pos + 1 + width.size + extra + \
            width.unpack_from(buf, pos + 1)[0]
    elif 0xDC <= b <= 0xDF:  # array 16/32, map 16/32
        width = _U16 if b in (0xDC, 0xDE) else _U32
        if pos + 1 + width.size > len(buf):
            raise Incomplete
        n = width.unpack_from(buf, pos + 1)[0]
        if b >= 0xDE:
            n *= 2
        return _skip_n(buf, pos + 1 + width.size, n, depth)
    else:
        raise ValueError("not msgpack")
    if end > len(buf):
        raise Incomplete
    return end


def _skip_n(buf, pos, n, depth):
    if depth >= 8:
        raise ValueError("nested too deep")
    for _ in range(n):
        pos = skip(buf, pos, depth + 1)
    return pos


def parse_reply(buf, pos=0):
    """The daemon's message at pos: (kind, fields, next position), fields
    being (records, dropped) of a RECEIPT, (watermark,) of an ACK, () of
    a kind this client does not know (skipped whole, PROTOCOL.md 7).
    Trailing elements of any type are skipped.  Raises Incomplete when it
    is not all there yet, ValueError when the bytes are not a message."""
    if pos >= len(buf):
        raise Incomplete
    head = buf[pos]
    if 0x91 <= head <= 0x9F:
        n, at = head & 0x0F, pos + 1
    elif head == 0xDC or head == 0xDD:
        width = _U16 if head == 0xDC else _U32
        if pos + 1 + width.size > len(buf):
            raise Incomplete
        n, at = width.unpack_from(buf, pos + 1)[0], pos + 1 + width.size
    else:
        raise ValueError("not a message of the daemon")
    kind, at = _read_uint(buf, at)
    want = {RECEIPT: 2, ACK: 1}.get(kind, 0)
    if n - 1 < want:
        raise ValueError("short message")
    fields = []
    for _ in range(want):
        v, at = _read_uint(buf, at)
        fields.append(v)
    return kind, tuple(fields), _skip_n(buf, at, n - 1 - want, 0)


# ------------------------------------------------- the shipper's encoder

class Encoder:
    """Encodes the records the calls queue, as tuples (type, ts, tid, ctx,
    cause, site, ...the type's fields), into the bytes the per-type
    functions above make.  The same values come back record after record
    (the tid, the ctx of a request, a site, a tag key), so their encodings
    are cached, up to CACHE_MAX each: this is what the shipping thread
    spends its time on, with the GIL that the application wants too."""

    CACHE_MAX = 4096

    def __init__(self):
        self.ints = {}  # int -> its encoding
        self.strs = {}  # str -> its encoding (cut strings are not kept)
        self.mids = {}  # (tid, ctx, cause, site) -> their encodings
        self.truncated = 0  # strings cut to MAX_STRING

    def _u(self, v):
        b = self.ints.get(v)
        if b is None:
            if len(self.ints) >= self.CACHE_MAX:
                self.ints.clear()
            b = self.ints[v] = uint(v)
        return b

    def _s(self, s):
        try:
            b = self.strs.get(s)
        except TypeError:  # unhashable: str() it
            s = str(s)
            b = self.strs.get(s)
        if b is None:
            b = string(s)
            if s is not None and _utf8(s)[1]:
                self.truncated += 1
            elif len(b) <= 256:
                if len(self.strs) >= self.CACHE_MAX:
                    self.strs.clear()
                self.strs[s] = b
        return b

    def record(self, r):
        kind = r[0]
        u = self._u
        ts = r[1]
        # tid, ctx, cause, site: one lookup for the four together.
        key = r[2:6]
        mid = self.mids.get(key)
        if mid is None:
            if len(self.mids) >= self.CACHE_MAX:
                self.mids.clear()
            mid = self.mids[key] = u(r[2]) + u(r[3]) + u(r[4]) + u(r[5])
        head = (_HEADS[kind]
                + (b"\xcf" + _U64.pack(ts) if ts > 0xFFFFFFFF else uint(ts))
                + mid)
        if kind == TAG or kind == EVENT:
            return head + self._s(r[6]) + self._s(r[7])
        if kind == BEGIN:
            return head + u(r[6]) + u(r[7]) + self._s(r[8])
        if kind == END:
            return head + u(r[6])
        return head  # RESUME, SUSPEND


# fixarray header and type of each record type, by type.
_HEADS = {SITE: b"\x99\x01", BEGIN: b"\x99\x02", END: b"\x97\x03",
          TAG: b"\x98\x04", EVENT: b"\x98\x05", RESUME: b"\x96\x06",
          SUSPEND: b"\x96\x07", DROPPED: b"\x98\x08",
          WATERMARK: b"\x96\x09"}
