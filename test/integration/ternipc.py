"""ternipc: a Python client of tern's IPC attribute protocol (common/ipc.h),
for the integration tests.

    frame     = length:u32 attribute*          (big-endian)
    attribute = type:u8 namelen:u8 name vlen:u32 value
    type      = 'i' int64 / 's' text / 'd' bytes

Python values choose the type: int -> 'i', str -> 's', bytes -> 'd'.
EnqueueClient speaks qmgr's enqueue protocol (doc/queue.md)."""
import socket
import struct

FRAME_MAX = 1024 * 1024
DATA_CHUNK = 256 * 1024


class ProtocolError(Exception):
    pass


def encode_frame(attrs):
    """attrs: a list of (name, value) pairs, in wire order."""
    body = bytearray()
    for name, value in attrs:
        raw_name = name.encode()
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            kind, raw = b"i", struct.pack(">q", value)
        elif isinstance(value, str):
            kind, raw = b"s", value.encode()
        elif isinstance(value, (bytes, bytearray)):
            kind, raw = b"d", bytes(value)
        else:
            raise TypeError(f"attribute {name}: cannot encode {type(value).__name__}")
        body += kind + bytes([len(raw_name)]) + raw_name + struct.pack(">I", len(raw)) + raw
    return struct.pack(">I", len(body)) + bytes(body)


def decode_attrs(payload):
    """The attributes of one frame's payload, as a dict."""
    out, pos = {}, 0
    while pos < len(payload):
        if len(payload) - pos < 7:
            raise ProtocolError("truncated attribute")
        kind, namelen = payload[pos], payload[pos + 1]
        name = payload[pos + 2:pos + 2 + namelen].decode()
        pos += 2 + namelen
        (vlen,) = struct.unpack(">I", payload[pos:pos + 4])
        pos += 4
        raw = payload[pos:pos + vlen]
        if len(raw) != vlen:
            raise ProtocolError(f"truncated value of {name}")
        pos += vlen
        if name in out:
            raise ProtocolError(f"duplicated attribute {name}")
        if kind == ord("i"):
            out[name] = struct.unpack(">q", raw)[0]
        elif kind == ord("s"):
            out[name] = raw.decode()
        elif kind == ord("d"):
            out[name] = raw
        else:
            raise ProtocolError(f"unknown type {kind}")
    return out


class Connection:
    """A blocking connection to a tern UNIX socket."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.inbuf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, attrs):
        self.sock.sendall(encode_frame(attrs))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self, n):
        while len(self.inbuf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.inbuf += chunk

    def receive(self):
        self._fill(4)
        (length,) = struct.unpack(">I", self.inbuf[:4])
        if length == 0 or length > FRAME_MAX:
            raise ProtocolError(f"bad frame length {length}")
        self._fill(4 + length)
        payload, self.inbuf = self.inbuf[4:4 + length], self.inbuf[4 + length:]
        return decode_attrs(payload)


def enqueue_frames(sender, recipients, body, **envelope):
    """The frames of one message.  recipients: addresses, or
    (address, {"orcpt": ..., "notify": ...}) pairs."""
    frames = [encode_frame([("request", "enqueue"), ("sender", sender), *envelope.items()])]
    for rcpt in recipients:
        address, extra = (rcpt, {}) if isinstance(rcpt, str) else rcpt
        frames.append(encode_frame([("request", "rcpt"), ("recipient", address), *extra.items()]))
    for off in range(0, len(body), DATA_CHUNK):
        frames.append(encode_frame([("request", "data"), ("data", body[off:off + DATA_CHUNK])]))
    frames.append(encode_frame([("request", "end")]))
    return b"".join(frames)


class EnqueueClient(Connection):
    """Hands messages to qmgr; each call returns qmgr's reply as a dict:
    {"status": 250, "queue_id": ...} or {"status": 4xx/5xx, "reason": ...}."""

    def enqueue(self, sender, recipients, body, **envelope):
        self.send_raw(enqueue_frames(sender, recipients, body, **envelope))
        return self.receive()
