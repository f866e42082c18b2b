"""ternipc: tern's IPC framing (common/ipc.h) for tests written in Python.

A frame is a 4-byte big-endian length followed by attributes, each
  type (b'i' int64, b's' text, b'd' bytes), name length (1 byte), name,
  value length (4 bytes, big-endian), value.
Attribute names are the wire names of common/ipc_attr.h."""
import socket
import struct

MAX_FRAME = 1024 * 1024


def encode(attrs):
    """One frame from a list of (name, value) pairs (or a dict): int values
    become 'i', str 's' and bytes 'd'."""
    items = attrs.items() if isinstance(attrs, dict) else attrs
    body = bytearray()
    for name, value in items:
        raw_name = name.encode("ascii")
        if isinstance(value, bool) or isinstance(value, int):
            kind, raw = b"i", struct.pack(">q", int(value))
        elif isinstance(value, str):
            kind, raw = b"s", value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray)):
            kind, raw = b"d", bytes(value)
        else:
            raise TypeError(f"{name}: cannot encode {type(value).__name__}")
        body += kind + bytes([len(raw_name)]) + raw_name + struct.pack(">I", len(raw)) + raw
    return struct.pack(">I", len(body)) + bytes(body)


def decode(payload):
    """The attributes of one frame's payload as a dict."""
    attrs, pos = {}, 0
    while pos < len(payload):
        kind = payload[pos:pos + 1]
        name_len = payload[pos + 1]
        name = payload[pos + 2:pos + 2 + name_len].decode("ascii")
        pos += 2 + name_len
        (value_len,) = struct.unpack(">I", payload[pos:pos + 4])
        raw = payload[pos + 4:pos + 4 + value_len]
        pos += 4 + value_len
        if kind == b"i":
            attrs[name] = struct.unpack(">q", raw)[0]
        elif kind == b"s":
            attrs[name] = raw.decode("utf-8")
        else:
            attrs[name] = bytes(raw)
    return attrs


class Connection:
    """A blocking connection to a tern UNIX socket."""

    def __init__(self, path, timeout=30.0, sock=None):
        """Connects to path, or takes over sock, a socket connected already."""
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(str(path))
        else:
            sock.settimeout(timeout)
        self.sock = sock
        self.pending = b""

    def send(self, attrs):
        self.sock.sendall(encode(attrs))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self, count):
        while len(self.pending) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by peer")
            self.pending += chunk

    def receive(self):
        """The next frame as a dict."""
        self._fill(4)
        (length,) = struct.unpack(">I", self.pending[:4])
        if length == 0 or length > MAX_FRAME:
            raise ValueError(f"bad frame length {length}")
        self._fill(4 + length)
        payload, self.pending = self.pending[4:4 + length], self.pending[4 + length:]
        return decode(payload)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
