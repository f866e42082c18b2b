"""tern-sink: a scriptable ESMTP sink for testing mail clients.

The sink accepts SMTP sessions on a TCP address, answers them like a
receiving MTA would, and records what every session did to a JSONL file.
Replies can be scripted per command, per address, per connection or message
number, and the sink can hang, drop the connection, delay a reply or break a
TLS handshake on purpose.

The command-line tool is test/sink/tern-sink; run it with --help, and see
test/sink/README.md for the script and record formats.  Tests can also use
the Sink class in-process:

    sink = Sink(Config(record="/tmp/rec.jsonl"))
    host, port = sink.start()          # runs in a background thread
    ...
    sink.stop()

Only the Python standard library is used.
"""

import argparse
import asyncio
import base64
import datetime
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import sys
import threading
import time

__all__ = ["Config", "Rule", "Sink", "ScriptError", "build_parser", "config_from_args",
           "load_script", "read_records", "main"]

VERSION = "1.0"

# Commands and pseudo-commands a rule can name.  CONNECT is the greeting, EOD
# the end of the message data (after DATA, or the BDAT ... LAST chunk), TLS the
# moment after "220" to STARTTLS (or the start of an implicit TLS session),
# just before the handshake.
COMMANDS = ("CONNECT", "EHLO", "HELO", "STARTTLS", "TLS", "MAIL", "RCPT", "DATA", "BDAT",
            "EOD", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "AUTH", "UNKNOWN")
ACTIONS = ("reply", "hang", "drop", "reset", "garbage")

DEFAULT_EXTENSIONS = ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                      "DSN", "CHUNKING")

GARBAGE = b"This is not a TLS handshake.\r\n" * 4


class ScriptError(ValueError):
    """A script or command-line rule that cannot be used."""


# ---------------------------------------------------------------- replies

_REPLY_CODE = re.compile(r"^([2-5][0-9][0-9])(?:[ -]|$)")
_ENHANCED = re.compile(r"^[245]\.[0-9]{1,3}\.[0-9]{1,3}(?: |$)")


def parse_reply(value, where="reply"):
    """A reply as a list of text lines without codes, and its code.

    Accepts an integer code, "250 text", "250-a\\n250 b", a list of such
    lines, or a dict {"code": 250, "text": "..." or [...]}.
    Returns (code, [line text, ...]).
    """
    if isinstance(value, bool):
        raise ScriptError(f"{where}: a reply cannot be a boolean")
    if isinstance(value, int):
        if not 200 <= value <= 599:
            raise ScriptError(f"{where}: reply code {value} is not 2xx-5xx")
        return value, [_DEFAULT_TEXT.get(value // 100, "")]
    if isinstance(value, dict):
        code = value.get("code")
        text = value.get("text", _DEFAULT_TEXT.get((code or 0) // 100, ""))
        if not isinstance(code, int) or not 200 <= code <= 599:
            raise ScriptError(f"{where}: 'code' must be an integer 200-599")
        lines = text if isinstance(text, list) else str(text).split("\n")
        return code, [str(x) for x in lines]
    if isinstance(value, list):
        value = "\n".join(str(x) for x in value)
    if not isinstance(value, str):
        raise ScriptError(f"{where}: cannot use {value!r} as a reply")
    lines = value.replace("\r\n", "\n").strip("\n").split("\n")
    m = _REPLY_CODE.match(lines[0])
    if not m:
        raise ScriptError(f"{where}: {value!r} does not start with a 3-digit code")
    code = int(m.group(1))
    out = []
    for line in lines:
        lm = _REPLY_CODE.match(line)
        out.append(line[4:] if lm else line)
    return code, out


_DEFAULT_TEXT = {2: "Ok", 3: "Go ahead", 4: "Temporary failure", 5: "Permanent failure"}


def format_reply(code, lines):
    """The wire form of a reply: CRLF-terminated lines with continuation marks."""
    lines = lines or [""]
    out = []
    for i, text in enumerate(lines):
        sep = " " if i == len(lines) - 1 else "-"
        out.append(f"{code}{sep}{text}" if text else f"{code}{sep}".rstrip(" "))
    return "\r\n".join(out) + "\r\n"


# ------------------------------------------------------------------ rules

class Rule:
    """One scripted behaviour: conditions, then a reply and/or an action.

    Conditions (all given must hold): command, match (regex searched in the
    command's subject, case-insensitive), from (regex on the transaction's
    MAIL FROM address), connection (session number or list), message (sink-wide
    MAIL number or list), session_message (MAIL number within the session, or
    list), nth (occurrence of this command within the session, or list), tls
    (true: only under TLS; false: only without), times (apply at most so many
    times, sink-wide).

    Effects: reply (replaces the default reply), action (reply, hang, drop,
    reset, garbage), delay (seconds before answering), close (close the
    connection after the reply).
    """

    KEYS = {"command", "match", "from", "connection", "message", "session_message", "nth",
            "tls", "times", "reply", "action", "delay", "close", "comment"}

    def __init__(self, spec, where="rule"):
        if not isinstance(spec, dict):
            raise ScriptError(f"{where}: a rule must be a JSON object")
        unknown = set(spec) - self.KEYS
        if unknown:
            raise ScriptError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        self.spec = spec
        command = spec.get("command", "*")
        if not isinstance(command, str):
            raise ScriptError(f"{where}: 'command' must be a string")
        self.commands = {c.strip().upper() for c in command.split(",")}
        for c in self.commands:
            if c != "*" and c not in COMMANDS:
                raise ScriptError(f"{where}: unknown command {c!r} (one of {', '.join(COMMANDS)} or *)")
        try:
            self.match = re.compile(spec["match"], re.I) if "match" in spec else None
            self.mail_from = re.compile(spec["from"], re.I) if "from" in spec else None
        except (re.error, TypeError) as e:
            raise ScriptError(f"{where}: bad regular expression: {e}") from None
        self.connection = self._numbers(spec, "connection", where)
        self.message = self._numbers(spec, "message", where)
        self.session_message = self._numbers(spec, "session_message", where)
        self.nth = self._numbers(spec, "nth", where)
        self.tls = spec.get("tls")
        if self.tls is not None and not isinstance(self.tls, bool):
            raise ScriptError(f"{where}: 'tls' must be true or false")
        self.times = spec.get("times")
        if self.times is not None and (not isinstance(self.times, int) or self.times < 0):
            raise ScriptError(f"{where}: 'times' must be a non-negative integer")
        self.reply = parse_reply(spec["reply"], where) if spec.get("reply") is not None else None
        self.action = spec.get("action", "reply")
        if self.action not in ACTIONS:
            raise ScriptError(f"{where}: unknown action {self.action!r} (one of {', '.join(ACTIONS)})")
        self.delay = spec.get("delay", 0)
        if not isinstance(self.delay, (int, float)) or self.delay < 0:
            raise ScriptError(f"{where}: 'delay' must be a number of seconds")
        self.close = bool(spec.get("close", False))

    @staticmethod
    def _numbers(spec, key, where):
        if key not in spec:
            return None
        value = spec[key]
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                 for v in values):
            raise ScriptError(f"{where}: '{key}' must be a positive integer or a list of them")
        return set(values)

    def matches(self, ctx):
        if "*" not in self.commands and ctx["command"] not in self.commands:
            return False
        if self.times is not None and self.times <= 0:
            return False
        if self.match is not None and not self.match.search(ctx.get("subject") or ""):
            return False
        if self.mail_from is not None:
            if ctx.get("mail_from") is None or not self.mail_from.search(ctx["mail_from"]):
                return False
        if self.connection is not None and ctx["connection"] not in self.connection:
            return False
        if self.message is not None and ctx.get("message") not in self.message:
            return False
        if self.session_message is not None and ctx.get("session_message") not in self.session_message:
            return False
        if self.nth is not None and ctx["nth"] not in self.nth:
            return False
        if self.tls is not None and ctx["tls"] != self.tls:
            return False
        return True

    def __repr__(self):
        return f"Rule({self.spec!r})"


def load_script(data, where="script"):
    """Settings and rules from a parsed script (a dict, see README.md)."""
    if not isinstance(data, dict):
        raise ScriptError(f"{where}: the script must be a JSON object")
    known = {"hostname", "greeting", "extensions", "replies", "rcpt", "rules", "comment"}
    unknown = set(data) - known
    if unknown:
        raise ScriptError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    out = {"rules": []}
    if "hostname" in data:
        out["hostname"] = str(data["hostname"])
    if "extensions" in data:
        if not isinstance(data["extensions"], list):
            raise ScriptError(f"{where}: 'extensions' must be a list of strings")
        out["extensions"] = [str(x) for x in data["extensions"]]
    for i, spec in enumerate(data.get("rules", [])):
        out["rules"].append(Rule(spec, f"{where}: rules[{i}]"))
    rcpt = data.get("rcpt", {})
    if not isinstance(rcpt, dict):
        raise ScriptError(f"{where}: 'rcpt' must map regular expressions to replies")
    for pattern, reply in rcpt.items():
        spec = {"command": "RCPT", "match": pattern}
        spec.update(_shortcut(reply))
        out["rules"].append(Rule(spec, f"{where}: rcpt[{pattern!r}]"))
    replies = data.get("replies", {})
    if not isinstance(replies, dict):
        raise ScriptError(f"{where}: 'replies' must map commands to replies")
    if "greeting" in data:
        out["rules"].append(Rule({"command": "CONNECT", **_shortcut(data["greeting"])},
                                 f"{where}: greeting"))
    for command, reply in replies.items():
        spec = {"command": command}
        spec.update(_shortcut(reply))
        out["rules"].append(Rule(spec, f"{where}: replies[{command!r}]"))
    return out


def _shortcut(value):
    """A reply shortcut: a reply, an action name, or a partial rule object."""
    if isinstance(value, dict) and "code" not in value:
        return value
    if isinstance(value, str) and value in ACTIONS:
        return {"action": value}
    return {"reply": value}


# ----------------------------------------------------------------- config

class Config:
    """Everything a Sink needs; defaults make a plain, permissive sink."""

    def __init__(self, **kw):
        self.host = "127.0.0.1"
        self.port = 0
        self.hostname = "sink.test"
        self.record = None            # path of the JSONL record
        self.record_commands = True
        self.maildir = None           # save messages as .eml files here
        self.no_data = False          # record neither data nor path
        self.rules = []               # Rule objects, first match wins
        self.extensions = list(DEFAULT_EXTENSIONS)
        self.max_size = 52428800
        self.max_rcpts = 0            # 0: no limit
        self.max_connections = 0      # 0: no limit
        self.timeout = 300.0          # idle timeout per command
        self.delay = 0.0              # before every reply
        self.starttls = True          # offered when a certificate is given
        self.implicit_tls = False
        self.tls_cert = None
        self.tls_key = None
        self.tls_key_password = None
        self.tls_ca = None
        self.client_cert = "none"     # none, optional, require
        self.tls_min_version = None
        self.tls_max_version = None
        self.tls_ciphers = None
        self.tls_handshake_timeout = 10.0
        self.keep_records = False     # also keep records in Sink.records
        self.verbose = False
        for key, value in kw.items():
            if not hasattr(self, key):
                raise TypeError(f"unknown setting {key!r}")
            setattr(self, key, value)

    def tls_context(self):
        """The server SSL context, or None without a certificate."""
        if not self.tls_cert:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        password = self.tls_key_password
        ctx.load_cert_chain(self.tls_cert, self.tls_key or None,
                            password=password.encode() if isinstance(password, str) else password)
        versions = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
                    "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
        if self.tls_min_version:
            ctx.minimum_version = versions[self.tls_min_version]
        if self.tls_max_version:
            ctx.maximum_version = versions[self.tls_max_version]
        if self.tls_ciphers:
            ctx.set_ciphers(self.tls_ciphers)
        if self.client_cert != "none":
            if not self.tls_ca:
                raise ScriptError("--client-cert optional/require needs --tls-ca")
            ctx.load_verify_locations(cafile=self.tls_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED if self.client_cert == "require" else ssl.CERT_OPTIONAL
        return ctx


# --------------------------------------------------------------- helpers

def _now_iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


_DN_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
             "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
             "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID",
             "emailAddress": "emailAddress", "serialNumber": "serialNumber"}


def format_dn(rdns):
    """An RFC 4514 string from the tuple form getpeercert() returns."""
    parts = []
    for rdn in reversed(rdns or ()):
        avas = []
        for key, value in rdn:
            value = re.sub(r'([,+"\\<>;=])', r"\\\1", value)
            if value.startswith((" ", "#")):
                value = "\\" + value
            if value.endswith(" "):
                value = value[:-1] + "\\ "
            avas.append(f"{_DN_SHORT.get(key, key)}={value}")
        parts.append("+".join(avas))
    return ",".join(parts)


def _text(data):
    return data.decode("utf-8", "backslashreplace")


_ADDR = re.compile(r"^\s*<([^<>]*)>(.*)$", re.S)
_ESMTP_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_XTEXT = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$")


def parse_path(arg, prefix):
    """Split "FROM:<addr> K=V ..." into (address, {K: V}); raise ValueError."""
    if not arg.upper().startswith(prefix):
        raise ValueError("syntax")
    rest = arg[len(prefix):]
    m = _ADDR.match(rest)
    if not m:
        # Be lenient about a missing pair of brackets, like many servers.
        fields = rest.strip().split()
        if not fields:
            raise ValueError("syntax")
        address, params_text = fields[0], " ".join(fields[1:])
    else:
        address, params_text = m.group(1), m.group(2)
    # A source route (@a,@b:user@c) is allowed and ignored.
    if address.startswith("@") and ":" in address:
        address = address.split(":", 1)[1]
    params = {}
    for token in params_text.split():
        key, eq, value = token.partition("=")
        if not _ESMTP_KEYWORD.match(key):
            raise ValueError(f"bad parameter {token!r}")
        params[key.upper()] = value if eq else None
    return address, params


# ---------------------------------------------------------------- session

class _Hang(Exception):
    pass


class _Drop(Exception):
    def __init__(self, how):
        super().__init__(how)
        self.how = how


class Session:
    """One SMTP connection."""

    def __init__(self, sink, number, reader, writer):
        self.sink = sink
        self.cfg = sink.cfg
        self.number = number
        self.reader = reader
        self.writer = writer
        self.tls_active = False
        self.helo = None
        self.esmtp = False
        self.over_limit = bool(sink.cfg.max_connections and sink.current > sink.cfg.max_connections)
        self.greeted_ok = True
        self.counts = {}
        self.txn = None
        self.session_messages = 0
        peer = writer.get_extra_info("peername") or ("", 0)
        local = writer.get_extra_info("sockname") or ("", 0)
        self.start = time.time()
        self.rec = {
            "type": "session", "session": number, "time": _now_iso(self.start),
            "ts": round(self.start, 6),
            "peer": {"ip": peer[0], "port": peer[1]}, "local": {"ip": local[0], "port": local[1]},
            "concurrent": sink.current, "max_concurrent": sink.max_concurrent,
            "greeting": None, "helo": None, "helo_verb": None, "tls": None,
            "commands": [], "messages": [], "end": None,
        }

    # -- I/O

    def log(self, direction, text):
        if self.cfg.verbose:
            for line in text.rstrip("\r\n").split("\r\n"):
                print(f"[{self.number}] {direction} {line}", file=sys.stderr, flush=True)

    async def readline(self):
        try:
            line = await asyncio.wait_for(self.reader.readline(), self.cfg.timeout)
        except asyncio.TimeoutError:
            await self.send(421, [f"4.4.2 {self.cfg.hostname} Error: timeout exceeded"])
            raise _Drop("timeout") from None
        except (asyncio.LimitOverrunError, ValueError):
            await self.send(500, ["5.5.0 Line too long"])
            raise _Drop("line-too-long") from None
        if not line:
            raise _Drop("client-closed")
        return line

    async def send(self, code, lines):
        text = format_reply(code, lines)
        self.log("S:", text)
        self.writer.write(text.encode("utf-8"))
        await self.writer.drain()
        return text.rstrip("\r\n").replace("\r\n", "\n")

    def input_pending(self):
        buf = getattr(self.reader, "_buffer", None)
        return bool(buf)

    # -- rules

    def find_rule(self, command, subject="", fallback=None):
        """The first rule for command, else the first for the fallback
        (command, subject) pair, or None.  Counts occurrences for "nth"."""
        tries = [(command, subject)] + ([fallback] if fallback else [])
        contexts = []
        for cmd, subj in tries:
            n = self.counts[cmd] = self.counts.get(cmd, 0) + 1
            contexts.append({"command": cmd, "subject": subj, "connection": self.number, "nth": n,
                             "tls": self.tls_active,
                             "mail_from": self.txn["mail_from"] if self.txn else None,
                             "message": self.txn["number"] if self.txn else None,
                             "session_message": self.txn["session_message"] if self.txn else None})
        for ctx in contexts:
            for rule in self.cfg.rules:
                if rule.matches(ctx):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    async def answer(self, entry, rule, code, lines):
        """Give the reply the rule makes of a default one; returns the code sent.

        Raises _Hang or _Drop when the rule says so.
        """
        delay = self.cfg.delay + (rule.delay if rule else 0)
        if delay:
            await asyncio.sleep(delay)
        action = rule.action if rule else "reply"
        if rule and rule.reply:
            code, lines = rule.reply
        elif "ENHANCEDSTATUSCODES" not in self.sink.ext_names and lines:
            lines = [_ENHANCED.sub("", lines[0], count=1)] + lines[1:]
        if action != "reply":
            if entry is not None:
                entry["action"] = action
            if action == "hang":
                raise _Hang()
            if action == "garbage":
                self.writer.write(GARBAGE)
                await self.writer.drain()
            raise _Drop(action)
        text = await self.send(code, lines)
        if entry is not None:
            entry["reply"] = text
        if code == 421 or (rule and rule.close):
            if entry is not None and rule and rule.close:
                entry["action"] = "close"
            raise _Drop("closed-by-sink")
        return code

    # -- main loop

    async def run(self):
        try:
            try:
                await self._run()
            except _Hang:
                self.rec["end"] = "hung"
                await self._hang()
        except _Drop as d:
            if d.how in ("drop", "garbage", "closed-by-sink", "timeout", "line-too-long",
                         "tls-failed", "too-many-connections"):
                self.rec["end"] = self.rec["end"] or ("dropped" if d.how == "drop" else d.how)
            elif d.how == "reset":
                self.rec["end"] = self.rec["end"] or "reset"
                self._reset()
            else:
                self.rec["end"] = self.rec["end"] or d.how
        except asyncio.CancelledError:
            self.rec["end"] = self.rec["end"] or "shutdown"
        except (ConnectionError, ssl.SSLError, OSError) as e:
            self.rec["end"] = self.rec["end"] or "client-closed"
            self.rec["error"] = f"{type(e).__name__}: {e}"
        except asyncio.IncompleteReadError:
            self.rec["end"] = self.rec["end"] or "client-closed"
        finally:
            if self.txn is not None:
                self._finish_txn("aborted")
            self.writer.close()
            end = time.time()
            self.rec["duration"] = round(end - self.start, 6)
            self.rec["max_concurrent"] = self.sink.max_concurrent

    def _reset(self):
        sock = self.writer.get_extra_info("socket")
        try:
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        transport = self.writer.transport
        transport.abort()

    async def _hang(self):
        """Answer nothing more; read and record input until the peer leaves."""
        while True:
            line = await self.reader.readline()
            if not line:
                return
            if self.cfg.record_commands and len(self.rec["commands"]) < 10000:
                self.rec["commands"].append({"t": self._t(), "verb": "-", "line": _text(line).rstrip("\r\n"),
                                             "reply": None, "ignored": True})

    def _t(self):
        return round(time.time() - self.start, 6)

    def entry(self, verb, line):
        e = {"t": self._t(), "verb": verb, "line": line, "reply": None}
        if self.input_pending():
            e["pipelined"] = True
        if self.cfg.record_commands:
            self.rec["commands"].append(e)
        return e

    async def _run(self):
        if self.over_limit:
            text = await self.send(421, [f"4.7.0 {self.cfg.hostname} Error: too many connections"])
            self.rec["greeting"] = text
            raise _Drop("too-many-connections")
        if self.cfg.implicit_tls:
            await self.start_tls("implicit")
        rule = self.find_rule("CONNECT", self.rec["peer"]["ip"])
        entry = {}
        try:
            code = await self.answer(entry, rule, 220, [f"{self.cfg.hostname} ESMTP tern-sink"])
        finally:
            self.rec["greeting"] = entry.get("reply")
            if "action" in entry:
                self.rec["greeting_action"] = entry["action"]
        if code != 220:
            self.greeted_ok = False
        while True:
            raw = await self.readline()
            line = _text(raw).rstrip("\r\n")
            self.log("C:", line)
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb not in COMMANDS or verb in ("CONNECT", "TLS", "EOD", "UNKNOWN"):
                key = "UNKNOWN"
            else:
                key = verb
            entry = self.entry(verb, line)
            if not self.greeted_ok and key != "QUIT":
                rule = self.find_rule(key, arg)
                await self.answer(entry, rule, 503, ["5.5.1 Error: no service"])
                continue
            handler = getattr(self, "do_" + key.lower())
            await handler(entry, arg)

    # -- commands

    async def do_helo(self, entry, arg):
        await self._hello(entry, arg, "HELO")

    async def do_ehlo(self, entry, arg):
        await self._hello(entry, arg, "EHLO")

    async def _hello(self, entry, arg, verb):
        name = arg.strip()
        rule = self.find_rule(verb, name)
        if not name and not (rule and rule.reply):
            await self.answer(entry, rule, 501, [f"5.5.4 Syntax: {verb} hostname"])
            return
        if verb == "EHLO":
            lines = [f"{self.cfg.hostname} greets {name}"] + self.sink.extensions(self.tls_active)
        else:
            lines = [self.cfg.hostname]
        code = await self.answer(entry, rule, 250, lines)
        if code == 250:
            self.helo = name
            self.rec["helo"] = name
            self.rec["helo_verb"] = verb
            self.esmtp = verb == "EHLO"
            if self.txn is not None:
                self._finish_txn("aborted")

    async def do_starttls(self, entry, arg):
        rule = self.find_rule("STARTTLS", arg)
        if not self.sink.tls_offered(self.tls_active):
            await self.answer(entry, rule, 502 if not self.tls_active else 503,
                              ["5.5.1 Error: STARTTLS not available" if not self.tls_active
                               else "5.5.1 Error: TLS already active"])
            return
        if arg.strip():
            await self.answer(entry, rule, 501, ["5.5.4 Syntax: STARTTLS"])
            return
        code = await self.answer(entry, rule, 220, ["2.0.0 Ready to start TLS"])
        if code != 220:
            return
        # RFC 3207: anything the client sent after STARTTLS in the clear is
        # discarded (and noted: it would be a command injection).
        buf = getattr(self.reader, "_buffer", None)
        if buf:
            entry["discarded"] = _text(bytes(buf))
            buf.clear()
        await self.start_tls("starttls")
        if self.txn is not None:
            self._finish_txn("aborted")
        self.helo = None
        self.counts.pop("EHLO", None)
        self.counts.pop("HELO", None)

    async def start_tls(self, mode):
        rule = self.find_rule("TLS", "")
        tls = {"mode": mode, "ok": False, "protocol": None, "cipher": None, "bits": None,
               "client_cert": None, "error": None}
        self.rec["tls"] = tls
        if rule and rule.delay:
            await asyncio.sleep(rule.delay)
        if rule and rule.action != "reply":
            tls["error"] = f"handshake broken on purpose ({rule.action})"
            tls["broken"] = {"drop": "close"}.get(rule.action, rule.action)
            self.rec["end"] = "tls-broken"
            if rule.action == "hang":
                # Swallow the ClientHello and whatever follows, say nothing.
                while await self.reader.read(65536):
                    pass
                raise _Drop("client-closed")
            if rule.action == "garbage":
                self.writer.write(GARBAGE)
                await self.writer.drain()
                await asyncio.sleep(0.05)
            raise _Drop(rule.action)
        try:
            await self.writer.start_tls(self.sink.ssl_context,
                                        ssl_handshake_timeout=self.cfg.tls_handshake_timeout)
        except (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError, EOFError) as e:
            tls["error"] = f"{type(e).__name__}: {e}"
            self.rec["end"] = "tls-failed"
            raise _Drop("tls-failed") from None
        obj = self.writer.get_extra_info("ssl_object")
        self.tls_active = True
        tls["ok"] = True
        tls["protocol"] = obj.version()
        cipher = obj.cipher()
        if cipher:
            tls["cipher"], _, tls["bits"] = cipher
        cert = obj.getpeercert()
        if cert:
            der = obj.getpeercert(binary_form=True)
            tls["client_cert"] = {
                "subject": format_dn(cert.get("subject")),
                "issuer": format_dn(cert.get("issuer")),
                "serial": cert.get("serialNumber"),
                "not_after": cert.get("notAfter"),
                "sha256": hashlib.sha256(der).hexdigest() if der else None,
            }
        self.log("--", f"TLS {tls['protocol']} {tls['cipher']}"
                 + (f" client {tls['client_cert']['subject']}" if cert else ""))

    async def do_mail(self, entry, arg):
        try:
            address, params = parse_path(arg, "FROM:")
        except ValueError:
            address, params = None, {}
        self.sink.mail_count += 1
        self.session_messages += 1
        if self.txn is not None:
            rule = self.find_rule("MAIL", address or "")
            await self.answer(entry, rule, 503, ["5.5.1 Error: nested MAIL command"])
            return
        txn = {"type": "message", "number": self.sink.mail_count, "session": self.number,
               "session_message": self.session_messages, "mail_from": address,
               "mail_params": params, "rcpts": [], "rejected_rcpts": [],
               "helo": self.helo, "tls": self.tls_active}
        self.txn = txn  # visible to the rule conditions
        rule = self.find_rule("MAIL", address or "")
        self.txn = None
        if self.helo is None:
            code, lines = 503, ["5.5.1 Error: send HELO/EHLO first"]
        elif address is None:
            code, lines = 501, ["5.5.4 Syntax: MAIL FROM:<address>"]
        else:
            code, lines = self._check_mail_params(params)
        code = await self.answer(entry, rule, code, lines)
        if 200 <= code < 300:
            self.txn = txn
            txn["data_mode"] = None
            txn["chunks"] = []
            txn["size"] = 0

    def _check_mail_params(self, params):
        exts = self.sink.ext_names if self.esmtp else set()
        for key, value in params.items():
            if key == "SIZE" and "SIZE" in exts:
                if value is None or not value.isdigit():
                    return 501, ["5.5.4 Bad SIZE parameter"]
                if self.cfg.max_size and int(value) > self.cfg.max_size:
                    return 552, ["5.3.4 Message size exceeds fixed limit"]
            elif key == "BODY" and "8BITMIME" in exts:
                body = (value or "").upper()
                if body not in ("7BIT", "8BITMIME") and not (body == "BINARYMIME" and "BINARYMIME" in exts):
                    return 501, ["5.5.4 Bad BODY parameter"]
            elif key == "SMTPUTF8" and "SMTPUTF8" in exts:
                if value is not None:
                    return 501, ["5.5.4 SMTPUTF8 takes no value"]
            elif key == "RET" and "DSN" in exts:
                if (value or "").upper() not in ("FULL", "HDRS"):
                    return 501, ["5.5.4 Bad RET parameter"]
            elif key == "ENVID" and "DSN" in exts:
                if not value or not _XTEXT.match(value) or len(value) > 100:
                    return 501, ["5.5.4 Bad ENVID parameter"]
            elif key == "AUTH" and "AUTH" in exts:
                pass
            else:
                return 555, [f"5.5.4 Unsupported option: {key}"]
        return 250, ["2.1.0 Ok"]

    async def do_rcpt(self, entry, arg):
        try:
            address, params = parse_path(arg, "TO:")
        except ValueError:
            address, params = None, {}
        rule = self.find_rule("RCPT", address or "")
        if self.txn is None:
            code, lines = 503, ["5.5.1 Error: need MAIL command"]
        elif address is None or address == "":
            code, lines = 501, ["5.5.4 Syntax: RCPT TO:<address>"]
        elif self.cfg.max_rcpts and len(self.txn["rcpts"]) >= self.cfg.max_rcpts:
            code, lines = 452, ["4.5.3 Error: too many recipients"]
        else:
            code, lines = self._check_rcpt_params(params)
        code = await self.answer(entry, rule, code, lines)
        if self.txn is not None and address is not None:
            item = {"address": address, "params": params}
            if 200 <= code < 300:
                self.txn["rcpts"].append(item)
            else:
                item["reply"] = entry.get("reply")
                self.txn["rejected_rcpts"].append(item)

    def _check_rcpt_params(self, params):
        exts = self.sink.ext_names if self.esmtp else set()
        for key, value in params.items():
            if key == "NOTIFY" and "DSN" in exts:
                words = (value or "").upper().split(",")
                if not value or (("NEVER" in words) and len(words) > 1) or \
                        not set(words) <= {"NEVER", "SUCCESS", "FAILURE", "DELAY"}:
                    return 501, ["5.5.4 Bad NOTIFY parameter"]
            elif key == "ORCPT" and "DSN" in exts:
                kind, semi, addr = (value or "").partition(";")
                if not semi or not kind or not addr:
                    return 501, ["5.5.4 Bad ORCPT parameter"]
            else:
                return 555, [f"5.5.4 Unsupported option: {key}"]
        return 250, ["2.1.5 Ok"]

    async def do_data(self, entry, arg):
        rule = self.find_rule("DATA", arg)
        if self.txn is None:
            code, lines = 503, ["5.5.1 Error: need MAIL command"]
        elif not self.txn["rcpts"]:
            code, lines = 554, ["5.5.1 Error: no valid recipients"]
        elif self.txn["data_mode"] == "BDAT":
            code, lines = 503, ["5.5.1 Error: DATA after BDAT"]
        elif arg.strip():
            code, lines = 501, ["5.5.4 Syntax: DATA"]
        else:
            code, lines = 354, ["End data with <CR><LF>.<CR><LF>"]
        code = await self.answer(entry, rule, code, lines)
        if code != 354:
            return
        if self.txn is None:  # a script made DATA succeed out of order
            self.txn = {"type": "message", "number": None, "session": self.number,
                        "session_message": None, "mail_from": None, "mail_params": {},
                        "rcpts": [], "rejected_rcpts": [], "helo": self.helo,
                        "tls": self.tls_active, "size": 0, "chunks": []}
        self.txn["data_mode"] = "DATA"
        chunks = []
        size = 0
        bare_lf = 0
        while True:
            line = await self.readline()
            if line == b".\r\n":
                break
            if not line.endswith(b"\r\n"):
                bare_lf += 1
            if line[:1] == b".":
                line = line[1:]
            chunks.append(line)
            size += len(line)
        data = b"".join(chunks)
        if bare_lf:
            self.txn["bare_lf"] = bare_lf
        await self._end_of_data(data, self.txn)

    async def do_bdat(self, entry, arg):
        fields = arg.split()
        size = None
        last = False
        if 1 <= len(fields) <= 2 and fields[0].isdigit() and \
                (len(fields) == 1 or fields[1].upper() == "LAST"):
            size = int(fields[0])
            last = len(fields) == 2
        if size is None:
            # Without a valid size the chunk cannot be skipped: reply and close.
            rule = self.find_rule("BDAT", arg)
            await self.answer(entry, rule, 501, ["5.5.4 Syntax: BDAT size [LAST]"])
            raise _Drop("closed-by-sink")
        try:
            chunk = await asyncio.wait_for(self.reader.readexactly(size), self.cfg.timeout)
        except asyncio.TimeoutError:
            await self.send(421, [f"4.4.2 {self.cfg.hostname} Error: timeout exceeded"])
            raise _Drop("timeout") from None
        entry["size"] = size
        if last:
            entry["last"] = True
        txn = self.txn
        problem = None
        if "CHUNKING" not in self.sink.ext_names:
            problem = (502, ["5.5.1 Error: BDAT not available"])
        elif txn is None:
            problem = (503, ["5.5.1 Error: need MAIL command"])
        elif not txn["rcpts"]:
            problem = (554, ["5.5.1 Error: no valid recipients"])
        elif txn["data_mode"] == "DATA":
            problem = (503, ["5.5.1 Error: BDAT after DATA"])
        elif txn.get("bdat_failed"):
            problem = (503, ["5.5.1 Error: earlier BDAT failed, send RSET"])
        if problem:
            rule = self.find_rule("BDAT", arg)
            await self.answer(entry, rule, *problem)
            return
        txn["data_mode"] = "BDAT"
        txn["chunks"].append(chunk)
        txn["size"] += size
        txn.setdefault("bdat_chunks", 0)
        txn["bdat_chunks"] += 1
        if last:
            # The reply to the last chunk is the end-of-data reply: EOD rules
            # apply to it, then BDAT rules.
            await self._end_of_data(b"".join(txn["chunks"]), txn, bdat=(entry, arg))
            return
        rule = self.find_rule("BDAT", arg)
        code = await self.answer(entry, rule, 250, [f"2.0.0 {size} octets received"])
        if not 200 <= code < 300:
            txn["bdat_failed"] = True

    async def _end_of_data(self, data, txn, bdat=None):
        txn["size"] = len(data)
        txn["method"] = txn["data_mode"]
        if bdat is not None:
            entry = bdat[0]
            rule = self.find_rule("EOD", data.decode("utf-8", "replace"), ("BDAT", bdat[1]))
        else:
            entry = self.entry("EOD", None)
            entry["size"] = len(data)
            rule = self.find_rule("EOD", data.decode("utf-8", "replace"))
        if self.cfg.max_size and len(data) > self.cfg.max_size:
            code, lines = 552, ["5.3.4 Message size exceeds fixed limit"]
        else:
            qid = f"S{self.number}M{txn['number']}"
            code, lines = 250, [f"2.0.0 Ok: queued as {qid}"]
            txn["queue_id"] = qid
        txn["data"] = data
        try:
            code = await self.answer(entry, rule, code, lines)
        except (_Hang, _Drop):
            self._finish_txn("no-reply", entry)
            raise
        self._finish_txn("accepted" if 200 <= code < 300 else
                         "tempfail" if 400 <= code < 500 else "rejected", entry)

    def _finish_txn(self, outcome, entry=None):
        txn, self.txn = self.txn, None
        if txn is None:
            return
        txn.pop("chunks", None)
        txn.pop("data_mode", None)
        txn.pop("bdat_failed", None)
        txn["outcome"] = outcome
        txn["reply"] = entry.get("reply") if entry else None
        data = txn.pop("data", None)
        if data is None:
            txn.pop("size", None)
        else:
            txn["time"] = _now_iso(time.time())
            if self.cfg.maildir:
                txn["path"] = self.sink.save_message(txn, data)
            elif not self.cfg.no_data:
                try:
                    txn["data"] = data.decode("utf-8")
                except UnicodeDecodeError:
                    txn["data_b64"] = base64.b64encode(data).decode("ascii")
            self.sink.messages += 1
            if outcome == "accepted":
                self.sink.accepted += 1
            self.sink.write(txn)
        summary = {k: v for k, v in txn.items() if k not in ("data", "data_b64", "type")}
        self.rec["messages"].append(summary)

    async def do_rset(self, entry, arg):
        rule = self.find_rule("RSET", arg)
        code = await self.answer(entry, rule, 250, ["2.0.0 Ok"])
        if 200 <= code < 300 and self.txn is not None:
            self._finish_txn("aborted")

    async def do_noop(self, entry, arg):
        await self.answer(entry, self.find_rule("NOOP", arg), 250, ["2.0.0 Ok"])

    async def do_quit(self, entry, arg):
        await self.answer(entry, self.find_rule("QUIT", arg), 221, ["2.0.0 Bye"])
        raise _Drop("quit")

    async def do_vrfy(self, entry, arg):
        await self.answer(entry, self.find_rule("VRFY", arg), 252, ["2.0.0 Cannot VRFY user"])

    async def do_expn(self, entry, arg):
        await self.answer(entry, self.find_rule("EXPN", arg), 502, ["5.5.1 Error: EXPN not available"])

    async def do_help(self, entry, arg):
        await self.answer(entry, self.find_rule("HELP", arg), 214,
                          ["2.0.0 tern-sink: see test/sink/README.md"])

    async def do_auth(self, entry, arg):
        await self.answer(entry, self.find_rule("AUTH", arg), 502, ["5.5.1 Error: AUTH not available"])

    async def do_unknown(self, entry, arg):
        await self.answer(entry, self.find_rule("UNKNOWN", entry["line"] or ""), 500,
                          ["5.5.2 Error: command not recognized"])


# ------------------------------------------------------------------- sink

class Sink:
    """The listener, the record file and the counters shared by sessions."""

    def __init__(self, cfg=None):
        self.cfg = cfg or Config()
        self.ssl_context = self.cfg.tls_context()
        self.ext_names = {e.split()[0].upper() for e in self.cfg.extensions if e.split()}
        self.sessions = 0
        self.current = 0
        self.max_concurrent = 0
        self.mail_count = 0
        self.messages = 0
        self.accepted = 0
        self.records = []
        self.server = None
        self.address = None
        self._tasks = set()
        self._file = None
        self._thread = None
        self._loop = None
        self._stopped = None
        self._started_at = time.time()
        if self.cfg.maildir:
            os.makedirs(self.cfg.maildir, exist_ok=True)
        if self.cfg.record:
            self._file = open(self.cfg.record, "a", encoding="utf-8")

    # -- extensions

    def extensions(self, tls_active):
        out = []
        for ext in self.cfg.extensions:
            if ext.upper() == "SIZE":
                ext = f"SIZE {self.cfg.max_size}" if self.cfg.max_size else "SIZE"
            if ext.split()[0].upper() == "STARTTLS":
                continue
            out.append(ext)
        if self.tls_offered(tls_active):
            out.insert(min(1, len(out)), "STARTTLS")
        return out

    def tls_offered(self, tls_active):
        return (self.ssl_context is not None and self.cfg.starttls and not tls_active
                and not self.cfg.implicit_tls)

    # -- records

    def write(self, record):
        if self._file is not None:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._file.flush()
        if self.cfg.keep_records:
            self.records.append(record)

    def save_message(self, txn, data):
        name = f"{int(time.time())}.S{txn['session']}M{txn['number']}.{os.getpid()}.eml"
        path = os.path.join(self.cfg.maildir, name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return os.path.abspath(path)

    # -- serving

    async def _client(self, reader, writer):
        self.sessions += 1
        number = self.sessions
        self.current += 1
        self.max_concurrent = max(self.max_concurrent, self.current)
        session = Session(self, number, reader, writer)
        self.write({"type": "connect", "session": number, "time": session.rec["time"],
                    "peer": session.rec["peer"], "local": session.rec["local"],
                    "concurrent": self.current, "max_concurrent": self.max_concurrent})
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await session.run()
        finally:
            self.current -= 1
            self._tasks.discard(task)
            self.write(session.rec)

    async def open(self):
        """Bind and listen; returns (host, port)."""
        self.server = await asyncio.start_server(
            self._client, self.cfg.host, self.cfg.port, limit=1 << 20, backlog=1024,
            reuse_address=True)
        sockname = self.server.sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])
        return self.address

    async def close(self):
        """Stop listening, end open sessions, write the summary."""
        if self.server is not None:
            self.server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass
        end = time.time()
        self.write({"type": "summary", "time": _now_iso(end), "sessions": self.sessions,
                    "messages": self.messages, "accepted": self.accepted,
                    "mail_commands": self.mail_count, "max_concurrent": self.max_concurrent,
                    "uptime": round(end - self._started_at, 3)})
        if self._file is not None:
            self._file.close()
            self._file = None

    async def serve(self, ready=None, stop=None):
        """Serve until the stop event is set (or forever)."""
        await self.open()
        if ready is not None:
            ready(self.address)
        stop = stop or asyncio.Event()
        self._stopped = stop
        try:
            await stop.wait()
        finally:
            await self.close()

    # -- in-process use from another thread

    def start(self, timeout=10):
        """Run in a background thread; returns (host, port) once listening."""
        self.cfg.keep_records = True
        started = threading.Event()
        failure = []

        def thread():
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.set_exception_handler(_quiet_exceptions(self.cfg.verbose))
            stop = asyncio.Event()
            self._stopped = stop
            try:
                loop.run_until_complete(self.serve(lambda a: started.set(), stop))
            except BaseException as e:  # noqa: BLE001 - reported to start()
                failure.append(e)
                started.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=thread, name="tern-sink", daemon=True)
        self._thread.start()
        started.wait(timeout)
        if failure:
            raise failure[0]
        return self.address

    def stop(self, timeout=10):
        """Stop a sink started with start(); waits for the records."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopped is not None:
            try:
                self._loop.call_soon_threadsafe(self._stopped.set)
            except RuntimeError:
                pass
        self._thread.join(timeout)
        self._thread = None


def _quiet_exceptions(verbose):
    def handler(loop, context):
        if verbose:
            msg = context.get("message", "")
            exc = context.get("exception")
            print(f"tern-sink: {msg}{': ' + repr(exc) if exc else ''}", file=sys.stderr, flush=True)
    return handler


def read_records(path, type=None):
    """The records of a JSONL file as dicts, optionally only of one type."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # a record being written
                rec = json.loads(line)
                if type is None or rec.get("type") == type:
                    out.append(rec)
    except FileNotFoundError:
        pass
    return out


# -------------------------------------------------------------------- CLI

HELP_EPILOG = """\
rules, in brief (see test/sink/README.md for the full script format):
  A rule says when (command, match regex, connection N, message N, nth
  occurrence, tls, times) and what (reply "CODE text", action reply|hang|drop|
  reset|garbage, delay seconds, close).  The first matching rule wins; rules
  from the command line come before those of --script, in the order given.
  Commands: CONNECT (the greeting), EHLO, HELO, STARTTLS, TLS (just before
  the handshake), MAIL, RCPT, DATA, BDAT, EOD (end of data, the final reply),
  RSET, NOOP, QUIT, VRFY, EXPN, HELP, AUTH, UNKNOWN, or * for any.
  The "match" regex is searched, case-insensitively, in: the peer IP for
  CONNECT, the name for EHLO/HELO, the address for MAIL/RCPT, the message
  (headers and body) for EOD, and the argument text otherwise.

records (--record FILE, JSON lines, flushed as written):
  {"type":"connect",...}   when a connection is accepted
  {"type":"message",...}   when a message's data is complete (any reply)
  {"type":"session",...}   when a connection ends: commands, replies, TLS
  {"type":"summary",...}   at shutdown: sessions, messages, max_concurrent

examples:
  tern-sink --port 2525 --record /tmp/sink.jsonl
  tern-sink --rcpt 'user4xx@=450 4.2.0 mailbox busy' --rcpt '^bad@=550 5.1.1 no such user'
  tern-sink --hang EOD                      # never answer the final dot
  tern-sink --drop RCPT                     # close the connection at RCPT
  tern-sink --tls-cert cert.pem --tls-key key.pem --break-tls garbage
  tern-sink --tls-cert cert.pem --tls-ca ca.pem --client-cert require
  tern-sink --rule '{"command":"EOD","message":2,"reply":"451 4.3.0 try later"}'
  swaks --server 127.0.0.1:2525 --to a@example.com
"""


def build_parser():
    p = argparse.ArgumentParser(
        prog="tern-sink",
        description="A scriptable ESMTP sink: accepts SMTP sessions, answers as scripted,\n"
                    "and records every session as JSON lines.  Once listening it prints\n"
                    "'listening IP PORT' on standard output.  SIGTERM or SIGINT end it\n"
                    "cleanly (open sessions are recorded, then a summary) with status 0.",
        epilog=HELP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("listening")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    g.add_argument("-p", "--port", type=int, default=0,
                   help="port to listen on; 0 (the default) picks a free one")
    g.add_argument("--port-file", metavar="FILE",
                   help="also write the chosen port to FILE (written atomically once listening)")
    g.add_argument("--hostname", default="sink.test",
                   help="name in the greeting and the EHLO reply (default sink.test)")
    g.add_argument("--max-connections", type=int, default=0, metavar="N",
                   help="greet connections beyond N concurrent ones with 421 and close (default: no limit)")
    g.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="idle time allowed per command before 421 and close (default 300)")
    g = p.add_argument_group("SMTP")
    g.add_argument("--extensions", metavar="LIST",
                   help="comma-separated EHLO extensions to advertise instead of the default "
                        f"({','.join(DEFAULT_EXTENSIONS)}); STARTTLS is added by the TLS options, "
                        "SIZE gets --max-size.  Parameters of extensions not advertised get 555")
    g.add_argument("--without", action="append", default=[], metavar="EXT",
                   help="do not advertise EXT (repeatable), e.g. --without PIPELINING")
    g.add_argument("--max-size", type=int, default=52428800, metavar="BYTES",
                   help="message size limit, advertised with SIZE (default 52428800; 0: none)")
    g.add_argument("--max-rcpts", type=int, default=0, metavar="N",
                   help="answer 452 to recipients beyond N per message (default: no limit)")
    g = p.add_argument_group("scripting")
    g.add_argument("--script", metavar="FILE", help="JSON script of replies and rules (see README.md)")
    g.add_argument("--rule", action="append", default=[], metavar="JSON",
                   help="one rule as a JSON object (repeatable)")
    g.add_argument("--greeting", metavar="REPLY", help='greeting reply, e.g. "554 5.7.1 go away"')
    g.add_argument("--reply", action="append", default=[], metavar="CMD=REPLY",
                   help='reply to CMD (a command or EOD) with REPLY, e.g. MAIL="451 4.3.0 later" '
                        "(repeatable)")
    g.add_argument("--rcpt", action="append", default=[], metavar="REGEX=REPLY",
                   help="reply to recipients matching REGEX with REPLY, e.g. 'user4xx@=450 busy' "
                        "(repeatable)")
    g.add_argument("--hang", action="append", default=[], metavar="CMD",
                   help="stop answering at CMD, e.g. --hang EOD (after the data): no reply, "
                        "input is still read and recorded until the client leaves (repeatable)")
    g.add_argument("--drop", action="append", default=[], metavar="CMD",
                   help="close the connection instead of answering CMD (repeatable)")
    g.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long before every reply")
    g = p.add_argument_group("TLS")
    g.add_argument("--tls-cert", metavar="FILE", help="server certificate chain (PEM); enables STARTTLS")
    g.add_argument("--tls-key", metavar="FILE", help="private key (PEM), if not in --tls-cert")
    g.add_argument("--tls-key-password", metavar="PASSWORD", help="password of an encrypted key")
    g.add_argument("--tls-key-password-file", metavar="FILE", help="read the key password from FILE")
    g.add_argument("--no-starttls", action="store_true", help="do not offer STARTTLS even with a certificate")
    g.add_argument("--implicit-tls", action="store_true",
                   help="TLS from the first byte (SMTPS, like port 465); needs --tls-cert")
    g.add_argument("--tls-ca", metavar="FILE", help="CA certificates (PEM) to verify client certificates")
    g.add_argument("--client-cert", choices=("none", "optional", "require"), default="none",
                   help="ask for a client certificate: none (default); optional (a missing one is "
                        "recorded as null, an unverifiable one fails the handshake, recorded); "
                        "require (no or bad certificate fails the handshake, recorded)")
    g.add_argument("--tls-min-version", choices=("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
                   help="lowest TLS version to accept (default: OpenSSL's)")
    g.add_argument("--tls-max-version", choices=("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
                   help="highest TLS version to accept (default: OpenSSL's)")
    g.add_argument("--tls-ciphers", metavar="LIST", help="OpenSSL cipher list for TLS 1.2 and older")
    g.add_argument("--break-tls", choices=("garbage", "close", "reset", "hang"),
                   help="after '220' to STARTTLS (or at the start of implicit TLS), instead of the "
                        "handshake: send garbage and close, close, reset (RST), or hang")
    g = p.add_argument_group("recording")
    g.add_argument("--record", metavar="FILE", help="append JSON-lines records to FILE")
    g.add_argument("--maildir", metavar="DIR",
                   help="save each message as DIR/*.eml and record its path instead of its data")
    g.add_argument("--no-data", action="store_true", help="record neither message data nor path")
    g.add_argument("--no-commands", action="store_true",
                   help="leave the command list out of session records (for load tests)")
    p.add_argument("-v", "--verbose", action="store_true", help="trace the SMTP dialogue on stderr")
    p.add_argument("--version", action="version", version=f"tern-sink {VERSION}")
    return p


def _split_assignment(text, option):
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise ScriptError(f"{option} {text!r}: expected KEY=VALUE")
    return key, value


def config_from_args(args):
    """A Config from parsed command-line arguments."""
    rules = []
    for i, text in enumerate(args.rule):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise ScriptError(f"--rule {text!r}: {e}") from None
        rules.append(Rule(spec, f"--rule #{i + 1}"))
    for text in args.rcpt:
        pattern, reply = _split_assignment(text, "--rcpt")
        rules.append(Rule({"command": "RCPT", "match": pattern, **_shortcut(reply)}, f"--rcpt {text!r}"))
    for text in args.reply:
        command, reply = _split_assignment(text, "--reply")
        rules.append(Rule({"command": command, **_shortcut(reply)}, f"--reply {text!r}"))
    for command in args.hang:
        rules.append(Rule({"command": command, "action": "hang"}, f"--hang {command}"))
    for command in args.drop:
        rules.append(Rule({"command": command, "action": "drop"}, f"--drop {command}"))
    if args.greeting:
        rules.append(Rule({"command": "CONNECT", "reply": args.greeting}, "--greeting"))
    if args.break_tls:
        action = {"close": "drop"}.get(args.break_tls, args.break_tls)
        rules.append(Rule({"command": "TLS", "action": action}, "--break-tls"))
    cfg = Config(host=args.host, port=args.port, hostname=args.hostname, record=args.record,
                 maildir=args.maildir, no_data=args.no_data, record_commands=not args.no_commands,
                 max_size=args.max_size, max_rcpts=args.max_rcpts,
                 max_connections=args.max_connections, timeout=args.timeout, delay=args.delay,
                 starttls=not args.no_starttls, implicit_tls=args.implicit_tls,
                 tls_cert=args.tls_cert, tls_key=args.tls_key, tls_ca=args.tls_ca,
                 client_cert=args.client_cert, tls_min_version=args.tls_min_version,
                 tls_max_version=args.tls_max_version, tls_ciphers=args.tls_ciphers,
                 verbose=args.verbose)
    cfg.tls_key_password = args.tls_key_password
    if args.tls_key_password_file:
        with open(args.tls_key_password_file, encoding="utf-8") as f:
            cfg.tls_key_password = f.readline().rstrip("\r\n")
    if args.script:
        try:
            with open(args.script, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ScriptError(f"{args.script}: {e}") from None
        script = load_script(data, args.script)
        if "hostname" in script:
            cfg.hostname = script["hostname"]
        if "extensions" in script:
            cfg.extensions = script["extensions"]
        rules.extend(script["rules"])
    if args.extensions is not None:
        cfg.extensions = [e.strip() for e in args.extensions.split(",") if e.strip()]
    if args.without:
        drop = {w.upper() for w in args.without}
        cfg.extensions = [e for e in cfg.extensions if e.split()[0].upper() not in drop]
    if args.implicit_tls and not args.tls_cert:
        raise ScriptError("--implicit-tls needs --tls-cert")
    if args.break_tls and not args.tls_cert:
        raise ScriptError("--break-tls needs --tls-cert")
    cfg.rules = rules
    return cfg


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        sink = Sink(cfg)
    except (ScriptError, OSError, ssl.SSLError) as e:
        print(f"tern-sink: {e}", file=sys.stderr)
        return 2

    async def run():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_exceptions(cfg.verbose))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def ready(address):
            host, port = address
            if args.port_file:
                tmp = args.port_file + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(f"{port}\n")
                os.replace(tmp, args.port_file)
            print(f"listening {host} {port}", flush=True)

        await sink.serve(ready, stop)

    try:
        asyncio.run(run())
    except OSError as e:
        print(f"tern-sink: {e}", file=sys.stderr)
        return 1
    if cfg.verbose:
        print(f"tern-sink: stopped after {sink.sessions} sessions, {sink.messages} messages, "
              f"at most {sink.max_concurrent} concurrent", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
