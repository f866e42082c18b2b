"""Integration tests of smtpd, the inbound SMTP server: the real daemon on
loopback ports, driven by smtplib, swaks, openssl s_client and raw sockets.

qmgr is stood in for by a small fake in this file that speaks the enqueue
protocol of smtpd/smtpd_enqueue.c on <spool>/private/qmgr and records what
it receives, so the tests can look at the envelope and the message as
queued.  Certificates are made with the openssl command once per run."""
import base64
import os
import pathlib
import resource
import select
import shutil
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import warnings

import pytest

import ternipc
from conftest import call_failed, wait_for

TOP = pathlib.Path(__file__).resolve().parents[2]
SMTPD = TOP / "smtpd" / "smtpd"
QMGR = TOP / "qmgr" / "qmgr"
PASSWORD = "key pass phrase"


# ---- certificates -------------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


CA_CNF = """[ca]
default_ca = d
[d]
database = db/index
new_certs_dir = db
serial = db/serial
default_md = sha256
policy = p
unique_subject = no
copy_extensions = copy
[p]
commonName = supplied
"""


def make_ca(d, name, cn):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.pem", "-subj", f"/CN={cn}/O=tern tests", "-days", "30", cwd=d)


def make_cert(d, ca, name, cn, start=None, end=None):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={cn}/O=tern tests", "-addext", f"subjectAltName=DNS:{cn}", cwd=d)
    dates = ["-startdate", start, "-enddate", end] if start else ["-days", "30"]
    openssl("ca", "-batch", "-config", "ca.cnf", "-cert", f"{ca}.pem", "-keyfile", f"{ca}.key", "-in",
            f"{name}.csr", "-out", f"{name}.pem", "-notext", *dates, cwd=d)


@pytest.fixture(scope="session")
def certs():
    """A CA, a server certificate with an encrypted key, client certificates
    (valid, expired, from another CA), in a directory the daemon can read
    after dropping privileges."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="tern-smtpd-certs-"))
    os.chmod(d, 0o755)
    (d / "ca.cnf").write_text(CA_CNF)
    (d / "db").mkdir()
    (d / "db" / "index").write_text("")
    (d / "db" / "serial").write_text("01\n")
    make_ca(d, "ca", "tern test CA")
    make_ca(d, "otherca", "other CA")
    make_cert(d, "ca", "server", "mx.test")
    make_cert(d, "ca", "client", "client.test")
    make_cert(d, "ca", "expired", "expired.test", "20200101000000Z", "20210101000000Z")
    make_cert(d, "otherca", "stranger", "stranger.test")
    # the server file: certificate, chain and an encrypted key, as in DESIGN.md
    openssl("pkey", "-in", "server.key", "-aes256", "-passout", f"pass:{PASSWORD}", "-out", "server.enc.key",
            cwd=d)
    bundle = "".join((d / f).read_text() for f in ("server.pem", "ca.pem", "server.enc.key"))
    (d / "smtp-cert.pem").write_text(bundle)
    for f in d.iterdir():
        if f.is_file():
            os.chmod(f, 0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---- the fake qmgr ---------------------------------------------------------------

# What qmgr accepts in each frame (doc/queue.md); anything else closes the
# connection there too, so a protocol slip fails these tests.
FRAME_ATTRS = {
    "enqueue": {"sender", "envid", "ret", "size", "body_type", "smtputf8", "client_ip", "client_name", "helo",
                "src_type", "listener", "auth_user", "vmta", "mail_job"},
    "rcpt": {"recipient", "orcpt", "notify"},
    "data": {"data"},
    "end": set(),
}


class FakeQmgr:
    """Accepts messages on <spool>/private/qmgr; answer is "accept", or a
    (status, reason) pair to refuse them."""

    def __init__(self, spool):
        self.path = str(spool / "private" / "qmgr")
        self.messages = []
        self.answer = "accept"
        self.errors = []
        self.slow = False  # read slowly, so that smtpd must pause its client
        self.reply_delay = 0.0  # seconds before answering a message's end
        self.count = 0
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)
        self.sock.listen(512)
        self.stop_r, self.stop_w = os.pipe()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            r, _, _ = select.select([self.sock, self.stop_r], [], [])
            if self.stop_r in r:
                return
            conn, _ = self.sock.accept()
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn, self.connections), daemon=True).start()

    def handle(self, conn, number):
        msg = {"recipients": [], "data": b"", "connection": number}
        buf = b""
        with conn:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                if self.slow:
                    time.sleep(0.01)
                buf += chunk
                while len(buf) >= 4:
                    (n,) = struct.unpack(">I", buf[:4])
                    if len(buf) < 4 + n:
                        break
                    attrs = ternipc.decode(buf[4:4 + n])
                    buf = buf[4 + n:]
                    req = attrs.pop("request")
                    if req not in FRAME_ATTRS or set(attrs) - FRAME_ATTRS[req]:
                        self.errors.append(f"bad frame {req}: {sorted(attrs)}")
                        return
                    if req == "enqueue":
                        msg["envelope"] = attrs
                    elif req == "rcpt":
                        if "@" not in attrs["recipient"] or "envelope" not in msg:
                            self.errors.append(f"bad rcpt {attrs}")
                            return
                        msg["recipients"].append(attrs)
                    elif req == "data":
                        if self.answer == "drop":  # qmgr dies in the middle of a message
                            return
                        msg["data"] += attrs["data"]
                    elif req == "end":
                        msg["end"] = attrs
                        time.sleep(self.reply_delay)
                        if self.answer == "accept":
                            self.count += 1
                            qid = f"Q{self.count:05d}"
                            msg["queue_id"] = qid
                            self.messages.append(msg)
                            conn.sendall(ternipc.encode({"status": 250, "queue_id": qid}))
                        else:
                            status, reason = self.answer
                            conn.sendall(ternipc.encode({"status": status, "reason": reason}))
                        msg = {"recipients": [], "data": b"", "connection": number}

    def close(self):
        os.write(self.stop_w, b"x")
        self.thread.join(5)
        self.sock.close()


# ---- the daemon -----------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Smtpd:
    """smtpd started in standalone mode (it opens its own listeners)."""

    def __init__(self, workdir, certs, body, qmgr=True, globals_="", inherit=False, whole=None, env=None):
        self.dir = workdir
        self.port = free_port()
        self.tls_port = free_port()
        self.spool = workdir / "spool"
        (self.spool / "private").mkdir(parents=True)
        os.chmod(self.spool, 0o755)
        os.chmod(self.spool / "private", 0o755)
        self.qmgr = FakeQmgr(self.spool) if qmgr else None
        self.conf = workdir / "tern.conf"
        self.conf.write_text(f"""host-name mx.test
smtp-listener 127.0.0.1:{self.port}
<smtp-listener 127.0.0.1:{self.tls_port}>
    immediate-tls yes
</smtp-listener>
smtp-server-tls-certificate {certs}/smtp-cert.pem "{PASSWORD}"
spool {self.spool}
relay-domain example.com
relay-domain [*.]example.net
<smtp-user alice>
    password "alice secret"
</smtp-user>
{globals_}
{body}
""")
        if whole is not None:
            self.conf.write_text(whole(self))
        self.log = workdir / "smtpd.log"
        self.logf = open(self.log, "wb")
        env, fds, socks = dict(os.environ, **(env or {})), [], []
        if inherit:
            # as master does: listening sockets passed by descriptor, named
            # after their smtp-listener
            for port in (self.port, self.tls_port):
                ls = socket.socket()
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                ls.bind(("127.0.0.1", port))
                ls.listen(64)
                socks.append(ls)
            fds = [ls.fileno() for ls in socks]
            env["TERN_LISTEN_FDS"] = f"{fds[0]}=127.0.0.1:{self.port},{fds[1]}=127.0.0.1:{self.tls_port}"
        self.proc = subprocess.Popen([str(SMTPD), "-f", "-c", str(self.conf)], stdout=self.logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, pass_fds=fds)
        for ls in socks:
            ls.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("smtpd exited: " + self.log.read_text())
            if "started" in self.log.read_text():
                break
            time.sleep(0.02)
        else:
            raise AssertionError("smtpd did not start: " + self.log.read_text())

    def stop(self, timeout=40):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.logf.close()
        if self.qmgr:
            self.qmgr.close()
            assert self.qmgr.errors == []
        return self.proc.returncode

    def logtext(self):
        return self.log.read_text(errors="replace")

    def smtp(self, source="127.0.0.1", port=None, **kw):
        return smtplib.SMTP("127.0.0.1", port or self.port, source_address=(source, 0), timeout=10, **kw)


@pytest.fixture
def workdir():
    d = pathlib.Path(tempfile.mkdtemp(prefix="tern-smtpd-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start(workdir, certs, request):
    started = []

    def run(body="", **kw):
        sub = workdir / f"d{len(started)}"
        sub.mkdir()
        os.chmod(sub, 0o755)
        d = Smtpd(sub, certs, body, **kw)
        started.append(d)
        return d

    yield run
    for d in started:
        rc = d.stop()
        text = d.logtext()
        if call_failed(request):
            print(f"smtpd log ({d.log}):\n{text[-4000:]}")
        assert "ERROR: AddressSanitizer" not in text and "runtime error" not in text, text
        assert "LeakSanitizer" not in text, text
        assert rc == 0, text


MESSAGE = "From: a@x.org\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nbody line\r\n.leading dot\r\n"


class Raw:
    """A raw client socket, for what smtplib will not send."""

    def __init__(self, port, source="127.0.0.1"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def reply(self):
        """One complete (possibly multi-line) reply, as text."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("closed; got " + repr(self.buf))
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    def closed(self):
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


def greet(raw, name="client.test"):
    assert raw.reply().startswith("220 ")
    raw.send(f"EHLO {name}\r\n")
    return raw.reply()


# ---- sessions ---------------------------------------------------------------------------

def test_plain_message_is_queued_with_received_header(start):
    d = start()
    with d.smtp() as c:
        code, caps = c.ehlo("client.test")
        assert code == 250
        for ext in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN", "SMTPUTF8", "CHUNKING"):
            assert ext in caps.decode()
        assert "STARTTLS" not in caps.decode()  # allow-starttls defaults to no
        assert "AUTH" not in caps.decode()  # PLAIN/LOGIN need TLS by default
        c.mail("a@x.org")
        c.rcpt("b@example.com")
        code, text = c.data(MESSAGE)
        assert code == 250
        assert text.decode().startswith("2.0.0 Ok: queued as Q00001")
    msg = d.qmgr.messages[0]
    assert msg["envelope"]["sender"] == "a@x.org"
    assert msg["envelope"]["client_ip"] == "127.0.0.1"
    assert msg["envelope"]["helo"] == "client.test"
    assert [r["recipient"] for r in msg["recipients"]] == ["b@example.com"]
    data = msg["data"].decode()
    assert data.startswith("Received: from client.test ([127.0.0.1])\r\n\tby mx.test (tern) with ESMTP")
    assert "(source none)" in data and "for <b@example.com>" in data
    assert data.endswith("\r\n\r\nbody line\r\n.leading dot\r\n")  # smtplib stuffs, we unstuff
    assert msg["end"] == {}
    # log lines reach the file a few milliseconds after the reply
    wait_for(lambda: "Q00001: from=<a@x.org> to=<b@example.com>" in d.logtext(), what="the message's log line")


@pytest.mark.skipif(not QMGR.exists(), reason="qmgr is not built")
def test_with_the_real_qmgr(start):
    d = start(qmgr=False)
    log = open(d.dir / "qmgr.log", "wb")
    qmgr = subprocess.Popen([str(QMGR), "-f", "-c", str(d.conf)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while not (d.spool / "private" / "qmgr").exists() and time.time() < deadline:
            time.sleep(0.05)
        with d.smtp() as c:
            c.ehlo("client.test")
            c.mail("a@x.org")
            c.rcpt("b@example.com")
            c.rcpt("Postmaster")
            code, text = c.data(MESSAGE)
            assert code == 250, text
            queue_id = text.decode().rsplit(" ", 1)[1]
    finally:
        os.kill(qmgr.pid, signal.SIGTERM)
        qmgr.wait(20)
        log.close()
    listing = subprocess.run([str(QMGR), "-L", "-c", str(d.conf)], capture_output=True, text=True, timeout=30)
    assert f"message\t{queue_id}\ta@x.org" in listing.stdout, listing.stdout + listing.stderr
    assert "b@example.com" in listing.stdout and "Postmaster@mx.test" in listing.stdout


def test_qmgr_unreachable_gives_451(start):
    d = start(qmgr=False)
    with d.smtp() as c:
        c.ehlo("client.test")
        c.mail("a@x.org")
        c.rcpt("b@example.com")
        code, text = c.docmd("DATA")
        assert code == 451 and text.startswith(b"4.3.0")


@pytest.mark.parametrize("answer,code", [((451, "db error"), 451), ((452, "disk full"), 452),
                                         ((552, "too big"), 552)])
def test_qmgr_refusal_is_never_a_250(start, answer, code):
    d = start()
    d.qmgr.answer = answer
    with d.smtp() as c:
        c.ehlo("client.test")
        c.mail("a@x.org")
        c.rcpt("b@example.com")
        got, _ = c.data(MESSAGE)
        assert got == code
        c.rset()  # the session goes on


def test_qmgr_lost_in_the_middle_gives_451(start):
    d = start()
    d.qmgr.answer = "drop"
    with d.smtp() as c:
        c.ehlo("client.test")
        c.mail("a@x.org")
        c.rcpt("b@example.com")
        code, text = c.data(MESSAGE + "x" * 70 + "\r\n")
        assert code == 451 and text.startswith(b"4.3.0")
        assert c.noop()[0] == 250


def test_small_messages_of_many_sessions_share_one_qmgr_connection(start):
    """Messages that end before any of their frames left go on one shared
    connection (smtpd's pipe), behind one another, and each session gets
    the answer to its own message; a message larger than a chunk streams
    on a connection of its own."""
    d = start()
    d.qmgr.reply_delay = 0.05
    results = {}

    def send(i):
        with d.smtp() as c:
            c.ehlo("client.test")
            c.mail("a@x.org")
            c.rcpt("b@example.com")
            code, text = c.data(f"Subject: m{i}\r\n\r\nbody {i}\r\n")
            results[i] = (code, text.decode().rsplit(" ", 1)[-1])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(code for code, _ in results.values()) == [250] * 12
    by_qid = {m["queue_id"]: m for m in d.qmgr.messages}
    for i, (_, qid) in results.items():
        assert f"Subject: m{i}\r\n".encode() in by_qid[qid]["data"], (i, qid)
    assert len({m["connection"] for m in d.qmgr.messages}) == 1
    with d.smtp() as c:
        c.sendmail("a@x.org", ["b@example.com"], "Subject: big\r\n\r\n" + ("y" * 70 + "\r\n") * 2000)
    assert d.qmgr.messages[-1]["connection"] != d.qmgr.messages[0]["connection"]


def test_swaks_plain(start):
    d = start()
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{d.port}", "--from", "a@x.org", "--to",
                          "b@example.com", "--helo", "swaks.test"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "queued as Q00001" in out.stdout


def test_commands_and_sequence(start):
    d = start()
    r = Raw(d.port)
    assert r.reply() == "220 mx.test ESMTP tern"
    for cmd, want in [("MAIL FROM:<a@x.org>", "503 5.5.1"), ("NOOP", "250 2.0.0"), ("VRFY bob", "252 2.5.0"),
                      ("HELP", "214"), ("FOO", "500 5.5.2"), ("EHLO", "501 5.5.4"), ("HELO c.test", "250 mx.test"),
                      ("RCPT TO:<b@example.com>", "503 5.5.1"), ("DATA", "503 5.5.1"),
                      ("MAIL FROM:<a@x.org>", "250 2.1.0"), ("MAIL FROM:<a@x.org>", "503 5.5.1"),
                      ("DATA", "554 5.5.1"), ("RSET", "250 2.0.0"), ("QUIT", "221 2.0.0")]:
        r.send(cmd + "\r\n")
        assert r.reply().startswith(want), cmd
    assert r.closed()


def test_pipelining(start):
    d = start()
    r = Raw(d.port)
    greet(r)
    r.send("MAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
    assert [r.reply()[:3] for _ in range(4)] == ["250", "250", "250", "354"]
    r.send("Subject: p\r\n\r\nx\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<d@example.com>\r\nDATA\r\n")
    assert r.reply().startswith("250 2.0.0 Ok: queued as")
    assert [r.reply()[:3] for _ in range(3)] == ["250", "250", "354"]
    r.send("Subject: q\r\n\r\ny\r\n.\r\nQUIT\r\n")
    assert r.reply().startswith("250 2.0.0 Ok: queued as")
    assert r.reply().startswith("221")
    assert len(d.qmgr.messages) == 2
    assert d.qmgr.messages[1]["envelope"]["sender"] == ""


def test_size_limit(start):
    d = start("<source 0/0>\n max-message-size 1k\n</source>")
    with d.smtp() as c:
        code, caps = c.ehlo("client.test")
        assert "SIZE 1024" in caps.decode()
        assert c.docmd("MAIL FROM:<a@x.org> SIZE=2000")[0] == 552
        assert c.docmd("MAIL FROM:<a@x.org> SIZE=500")[0] == 250
        c.rcpt("b@example.com")
        code, text = c.data("Subject: big\r\n\r\n" + "x" * 70 + "\r\n" * 1 + ("y" * 70 + "\r\n") * 20)
        assert code == 552 and text.startswith(b"5.3.4")
    assert d.qmgr.messages == []


def test_recipient_limit(start):
    d = start("<source 0/0>\n max-rcpt-per-message 2\n</source>")
    with d.smtp() as c:
        c.ehlo("client.test")
        c.mail("a@x.org")
        assert c.rcpt("b@example.com")[0] == 250
        assert c.rcpt("c@example.com")[0] == 250
        code, text = c.rcpt("d@example.com")
        assert code == 452 and text.startswith(b"4.5.3")


def test_line_limits(start):
    d = start()
    r = Raw(d.port)
    greet(r)
    r.send("NOOP " + "x" * 600 + "\r\n")
    assert r.reply().startswith("500 5.5.2")
    r.send("NOOP\r\n")  # the session continues after the long line
    assert r.reply().startswith("250")
    r.send("MAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert [r.reply()[:3] for _ in range(3)] == ["250", "250", "354"]
    r.send("Subject: long\r\n\r\n" + "z" * 1200 + "\r\n.\r\n")
    assert r.reply().startswith("554 5.6.0")
    r.send("NOOP\r\n")
    assert r.reply().startswith("250")
    assert d.qmgr.messages == []


def test_command_must_end_in_crlf(start):
    d = start()
    r = Raw(d.port)
    greet(r)
    r.send("NOOP\n")
    assert r.reply().startswith("500 5.5.2")


@pytest.mark.parametrize("attempt", [
    "body\n.\n",            # bare LF end
    "body\r\n.\n",          # LF after the dot
    "body\n.\r\n",          # bare LF before the dot
    "body\r.\r",            # bare CR
    "body\r\n.\r",          # CR without LF after the dot
    "body\rMAIL\r\n",       # bare CR inside a line
])
def test_smuggling_attempts_end_the_session(start, attempt):
    d = start()
    r = Raw(d.port)
    greet(r)
    r.send("MAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert [r.reply()[:3] for _ in range(3)] == ["250", "250", "354"]
    r.send("Subject: s\r\n\r\n" + attempt + "MAIL FROM:<evil@x.org>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
           "Subject: smuggled\r\n\r\nx\r\n.\r\n")
    assert r.reply().startswith("521 5.5.2")
    assert r.closed()
    time.sleep(0.1)
    assert d.qmgr.messages == []


def test_dot_unstuffing_and_only_crlf_dot_crlf_ends(start):
    d = start()
    r = Raw(d.port)
    greet(r)
    r.send("MAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert [r.reply()[:3] for _ in range(3)] == ["250", "250", "354"]
    # split the terminator and a stuffed dot across writes
    for part in ["Subject: d\r\n\r\n..one\r\n", ".", ".two\r\n.x\r\n\r", "\n.", "\r", "\n"]:
        r.send(part)
        time.sleep(0.02)
    assert r.reply().startswith("250 2.0.0")
    assert d.qmgr.messages[0]["data"].endswith(b"\r\n\r\n.one\r\n.two\r\nx\r\n\r\n")


@pytest.mark.parametrize("cmd,code", [
    ("MAIL FROM:a@x.org", "501"), ("MAIL FROM:<a@@x.org>", "501"), ("MAIL FROM:<a@x..org>", "501"),
    ("MAIL FROM:<a b@x.org>", "501"), ("MAIL FROM:<.a@x.org>", "501"), ("MAIL FROM:<a@-x.org>", "501"),
    ("MAIL FROM:<a@x.org> SIZE=abc", "501"), ("MAIL FROM:<a@x.org> BODY=BINARYMIME", "501"),
    ("MAIL FROM:<a@x.org> FOO=1", "555"), ("MAIL FROM:<a@x.org> RET=FULL RET=HDRS", "501"),
    ("MAIL FROM:<a@x.org> ENVID=a=b", "501"), ("MAIL FROM:<a@[300.1.1.1]>", "501"),
    ("MAIL FROM:<\"a b\"@x.org> RET=HDRS ENVID=x+2By BODY=8BITMIME SIZE=10", "250"),
    ("MAIL FROM:<a@[127.0.0.1]>", "250"), ("MAIL FROM:<a@[IPv6:::1]>", "250"), ("MAIL FROM:<>", "250"),
    ("MAIL FROM: <a@x.org>", "250"), ("mail from:<a@x.org>", "250"),
    ("MAIL FROM:<j\u00f6rg@x.org>", "553"), ("MAIL FROM:<j\u00f6rg@x.org> SMTPUTF8", "250"),
])
def test_mail_syntax(start, cmd, code):
    d = start()
    r = Raw(d.port)
    greet(r)
    r.send(cmd.encode() + b"\r\n")
    assert r.reply()[:3] == code, cmd


def test_dsn_parameters_reach_qmgr(start):
    d = start()
    r = Raw(d.port)
    greet(r)
    for cmd, code in [("MAIL FROM:<a@x.org> RET=HDRS ENVID=QQ+2B1", "250"),
                      ("RCPT TO:<b@example.com> NOTIFY=NEVER,SUCCESS", "501"),
                      ("RCPT TO:<b@example.com> NOTIFY=BOGUS", "501"),
                      ("RCPT TO:<b@example.com> ORCPT=x400;abc", "501"),
                      ("RCPT TO:<b@example.com> NOTIFY=success,DELAY ORCPT=rfc822;b+40example.com", "250"),
                      ("RCPT TO:<Postmaster>", "250"), ("DATA", "354")]:
        r.send(cmd + "\r\n")
        assert r.reply()[:3] == code, cmd
    r.send("Subject: dsn\r\n\r\nx\r\n.\r\n")
    assert r.reply().startswith("250")
    msg = d.qmgr.messages[0]
    assert msg["envelope"]["ret"] == "HDRS" and msg["envelope"]["envid"] == "QQ+1"
    assert msg["recipients"][0] == {"recipient": "b@example.com", "notify": "SUCCESS,DELAY",
                                    "orcpt": "rfc822;b+40example.com"}
    assert msg["recipients"][1] == {"recipient": "Postmaster@mx.test"}


# ---- relaying and per-source rules ----------------------------------------------------------

@pytest.mark.parametrize("rcpt", [
    "b@elsewhere.org", "b%elsewhere.org@example.com", "elsewhere.org!b@example.com",
    "\"b@elsewhere.org\"@example.com", "@example.com:b@elsewhere.org", "@example.com,@x.org:b@example.com",
    "b@example.com.", "b@[192.0.2.1]", "b@sub.example.com",
])
def test_relay_denied_forms(start, rcpt):
    d = start()
    with d.smtp() as c:
        c.ehlo("client.test")
        c.mail("a@x.org")
        code, text = c.docmd(f"RCPT TO:<{rcpt}>")
        assert code == 550 and text.startswith(b"5.7.1"), rcpt


@pytest.mark.parametrize("rcpt", ["b@example.com", "b@EXAMPLE.COM", "b@example.net", "b@deep.sub.example.net"])
def test_relay_domains_accepted(start, rcpt):
    d = start()
    with d.smtp() as c:
        c.ehlo("client.test")
        c.mail("a@x.org")
        assert c.rcpt(rcpt)[0] == 250


def test_per_source_rules(start):
    d = start("""<source 127.0.0.2>
    smtp-service no
</source>
<source 127.0.0.3>
    always-allow-relaying yes
    max-rcpt-per-message 1
    hide-message-source yes
</source>""")
    r = Raw(d.port, source="127.0.0.2")
    assert r.reply().startswith("521 5.3.2")
    assert r.closed()
    with d.smtp(source="127.0.0.3") as c:
        c.ehlo("three.test")
        c.mail("a@x.org")
        assert c.rcpt("b@elsewhere.org")[0] == 250  # relaying allowed
        assert c.rcpt("c@elsewhere.org")[0] == 452
        assert c.data(MESSAGE)[0] == 250
    data = d.qmgr.messages[0]["data"].decode()
    assert data.startswith("Received: by mx.test (tern) with ESMTP;")
    assert "127.0.0.3" not in data and "three.test" not in data
    with d.smtp(source="127.0.0.1") as c:
        c.ehlo("one.test")
        c.mail("a@x.org")
        assert c.rcpt("b@elsewhere.org")[0] == 550


def test_source_header_directives(start):
    d = start("""<source 0/0>
    add-message-id-header yes
    add-date-header yes
    process-x-virtual-mta yes
    process-x-job yes
    process-x-envid yes
    remove-header X-Secret
    default-virtual-mta pool1
</source>
<virtual-mta vmta7>
</virtual-mta>
<virtual-mta-pool pool1>
    virtual-mta vmta7
</virtual-mta-pool>""")
    with d.smtp() as c:
        c.ehlo("client.test")
        c.sendmail("a@x.org", ["b@example.com"], "X-Virtual-MTA: vmta7\r\nX-Job: job42\r\nX-Envid: env9\r\n"
                   "X-Secret: s\r\nSubject: h\r\n\r\nbody\r\n")
        c.sendmail("a@x.org", ["b@example.com"], "Subject: h2\r\nMessage-Id: <keep@x>\r\n\r\nbody\r\n")
    m1, m2 = d.qmgr.messages
    data = m1["data"].decode()
    for gone in ("X-Virtual-MTA", "X-Job", "X-Envid", "X-Secret"):
        assert gone not in data
    assert "\r\nMessage-Id: <" in data and "\r\nDate: " in data and "Subject: h\r\n" in data
    assert m1["envelope"]["vmta"] == "vmta7" and m1["envelope"]["mail_job"] == "job42"
    assert m1["envelope"]["envid"] == "env9"
    assert m2["envelope"]["vmta"] == "pool1"
    assert m2["data"].decode().count("Message-Id") == 1


def test_jobid_header_and_date_override(start):
    d = start("""<source 0/0>
    process-x-job yes
    retain-x-job yes
    jobid-header X-Campaign
    add-date-header override
    add-received-header no
</source>""")
    with d.smtp() as c:
        c.ehlo("client.test")
        c.sendmail("a@x.org", ["b@example.com"], "Date: Mon, 1 Jan 2001 00:00:00 +0000\r\nX-Job: not-this\r\n"
                   "X-Campaign:  spring-sale \r\nSubject: j\r\n\r\nbody\r\n")
    msg = d.qmgr.messages[0]
    data = msg["data"].decode()
    assert msg["envelope"]["mail_job"] == "spring-sale"
    assert "X-Campaign:  spring-sale" in data and "X-Job: not-this" in data  # retained
    assert "2001" not in data and data.count("\r\nDate: ") == 1
    assert not data.startswith("Received:")


def test_total_max_smtp_in(start):
    d = start(globals_="total-max-smtp-in 2")
    a, b = Raw(d.port), Raw(d.port)
    assert a.reply().startswith("220") and b.reply().startswith("220")
    c = Raw(d.port)
    assert c.reply().startswith("421 4.7.0")
    assert c.closed()
    a.close()
    time.sleep(0.2)
    e = Raw(d.port)
    assert e.reply().startswith("220")


def test_await_slot_keeps_clients_waiting(start):
    d = start(globals_="total-max-smtp-in 1\nsmtp-await-slot yes")
    a = Raw(d.port)
    assert a.reply().startswith("220")
    b = Raw(d.port)  # accepted by the kernel, not yet by smtpd
    b.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        b.sock.recv(10)
    b.sock.settimeout(10)
    a.send("QUIT\r\n")
    assert a.reply().startswith("221")
    assert b.reply().startswith("220")


def test_timeouts(start):
    d = start("<source 0/0>\n smtp-command-timeout 1s\n smtp-data-timeout 2s\n allow-starttls yes\n</source>")
    r = Raw(d.port)
    greet(r)
    t0 = time.time()
    assert r.reply().startswith("421 4.4.2")
    assert r.closed() and 0.8 < time.time() - t0 < 1.8
    # a TLS handshake that never starts
    r = Raw(d.port)
    greet(r)
    r.send("STARTTLS\r\n")
    assert r.reply().startswith("220")
    t0 = time.time()
    assert r.closed() and time.time() - t0 < 1.8
    # the data phase has its own timeout
    r = Raw(d.port)
    greet(r)
    r.send("MAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert [r.reply()[:3] for _ in range(3)] == ["250", "250", "354"]
    t0 = time.time()
    assert r.reply().startswith("421 4.4.2")
    assert 1.8 < time.time() - t0 < 2.8


def test_log_commands_masks_auth(start):
    d = start("<source 0/0>\n log-commands yes\n allow-unencrypted-plain-auth yes\n</source>")
    with d.smtp() as c:
        c.ehlo("client.test")
        secret = base64.b64encode(b"\0alice\0alice secret").decode()
        assert c.docmd("AUTH PLAIN " + secret)[0] == 235
    log = wait_for(lambda: (lambda log: log if "< AUTH PLAIN ********" in log else None)(d.logtext()),
                   what="the masked AUTH command in the log")
    assert secret not in log and "alice secret" not in log


# ---- TLS ------------------------------------------------------------------------------

def client_ctx(certs, cert=None):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(str(certs / f"{cert}.pem"), str(certs / f"{cert}.key"))
    return ctx


STARTTLS_SOURCE = "<source 0/0>\n allow-starttls yes\n</source>"


def test_starttls(start, certs):
    d = start(STARTTLS_SOURCE)
    with d.smtp() as c:
        code, caps = c.ehlo("client.test")
        assert "STARTTLS" in caps.decode()
        c.starttls(context=client_ctx(certs))
        code, caps = c.ehlo("client.test")
        assert "STARTTLS" not in caps.decode() and "AUTH PLAIN LOGIN" in caps.decode()
        c.sendmail("a@x.org", ["b@example.com"], MESSAGE)
    data = d.qmgr.messages[0]["data"].decode()
    assert "with ESMTPS" in data and "TLSv1.3 TLS_" in data


def test_starttls_not_offered_without_allow(start):
    d = start()
    with d.smtp() as c:
        c.ehlo("client.test")
        assert c.docmd("STARTTLS")[0] == 502


def test_mail_requires_new_ehlo_after_starttls(start, certs):
    d = start(STARTTLS_SOURCE)
    with d.smtp() as c:
        c.ehlo("client.test")
        c.starttls(context=client_ctx(certs))
        assert c.docmd("MAIL FROM:<a@x.org>")[0] == 503


def tls_ehlo(sock, certs):
    """The TLS handshake on sock after a 220 to STARTTLS, then EHLO: the
    TLS socket and a reader past the 250."""
    tls = client_ctx(certs).wrap_socket(sock, server_hostname="mx.test")
    tls.sendall(b"EHLO client.test\r\n")
    f = tls.makefile("rb")
    line = f.readline()
    while line[3:4] == b"-":
        line = f.readline()
    assert line.startswith(b"250 ")
    return tls, f


def test_plaintext_injection_before_starttls_is_discarded(start, certs):
    d = start(STARTTLS_SOURCE)
    r = Raw(d.port)
    greet(r)
    # the injected commands arrive in the same packet as STARTTLS
    r.send("STARTTLS\r\nMAIL FROM:<evil@x.org>\r\nRCPT TO:<b@example.com>\r\n")
    assert r.reply().startswith("220 2.0.0")
    tls, f = tls_ehlo(r.sock, certs)
    tls.sendall(b"RCPT TO:<b@example.com>\r\n")
    assert f.readline().startswith(b"503 5.5.1")  # no MAIL survived the handshake
    tls.close()


def test_starttls_while_earlier_replies_wait(start, certs):
    """STARTTLS after thousands of replies the client has not read yet:
    the 220 still comes after them, in clear, and the handshake after
    it.  (When the socket cannot take the 220 at once, smtpd starts TLS
    only once everything before it has left.)"""
    d = start(STARTTLS_SOURCE)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", d.port))
    r = Raw.__new__(Raw)
    r.sock, r.buf = sock, b""
    greet(r)
    noops = 4400  # about 60 KB of replies, just under smtpd's output limit
    r.send("NOOP\r\n" * noops + "STARTTLS\r\n")
    time.sleep(0.5)  # smtpd has read it all and answered what it could
    for _ in range(noops):
        assert r.reply().startswith("250")
    assert r.reply().startswith("220 2.0.0")
    assert r.buf == b""
    tls, f = tls_ehlo(sock, certs)
    tls.sendall(b"QUIT\r\n")
    assert f.readline().startswith(b"221")
    tls.close()


def test_openssl_s_client_starttls(start, certs):
    d = start(STARTTLS_SOURCE)
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{d.port}", "-starttls", "smtp",
                          "-CAfile", str(certs / "ca.pem"), "-verify_return_error", "-brief", "-ign_eof"],
                         input="EHLO x.test\r\nQUIT\r\n", capture_output=True, text=True, timeout=20)
    assert "Verification: OK" in out.stderr, out.stderr
    assert "221 2.0.0" in out.stdout + out.stderr


def test_implicit_tls(start, certs):
    d = start()
    with smtplib.SMTP_SSL("127.0.0.1", d.tls_port, context=client_ctx(certs), timeout=10) as c:
        code, caps = c.ehlo("client.test")
        assert "STARTTLS" not in caps.decode()
        c.sendmail("a@x.org", ["b@example.com"], MESSAGE)
    assert "with ESMTPS" in d.qmgr.messages[0]["data"].decode()


class RecordSocket:
    """TLS done by hand over a plain socket (ssl.MemoryBIO), so that a test
    decides how records travel: send_records() makes one TLS record of
    each part and puts them all on the wire in one write.  recv() is a
    socket's, for Raw."""

    def __init__(self, port, certs):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = client_ctx(certs).wrap_bio(self.incoming, self.outgoing, server_hostname="mx.test")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()

    def _flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("closed during TLS")
        self.incoming.write(data)

    def send_records(self, *parts):
        for part in parts:
            self.tls.write(part.encode())
        self._flush()

    def recv(self, n):
        while True:
            try:
                return self.tls.read(n)
            except ssl.SSLWantReadError:
                self._fill()

    def close(self):
        self.sock.close()


def test_tls_records_arriving_together_are_all_read(start, certs):
    """Pipelined commands and a body, one TLS record each, reaching smtpd
    in one segment: OpenSSL takes them all from the socket in one read,
    and every one is answered (none waits for more input that will never
    come)."""
    d = start()
    r = Raw.__new__(Raw)
    r.sock, r.buf = RecordSocket(d.tls_port, certs), b""
    assert r.reply().startswith("220 ")
    r.sock.send_records("EHLO client.test\r\n")
    assert r.reply().startswith("250")
    r.sock.send_records("MAIL FROM:<a@x.org>\r\n", "RCPT TO:<b@example.com>\r\n",
                        "RCPT TO:<c@example.com>\r\n", "DATA\r\n")
    assert [r.reply()[:3] for _ in range(4)] == ["250", "250", "250", "354"]
    r.sock.send_records("Subject: records\r\n", "\r\n", "line one\r\n", "line two\r\n", ".\r\n")
    assert r.reply().startswith("250 2.0.0 Ok: queued as")
    r.sock.send_records("NOOP\r\n", "NOOP\r\n", "QUIT\r\n")
    assert [r.reply()[:3] for _ in range(3)] == ["250", "250", "221"]
    r.sock.close()
    assert d.qmgr.messages[0]["data"].decode().endswith("line one\r\nline two\r\n")


def test_implicit_tls_with_swaks(start, certs):
    d = start()
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{d.tls_port}", "--tlsc", "--from", "a@x.org",
                          "--to", "b@example.com"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "queued as" in out.stdout


def test_tls_cipher_settings_apply(start, certs):
    d = start(globals_="smtp-server-tls-v1.3-ciphersuites TLS_CHACHA20_POLY1305_SHA256\n"
                       "smtp-server-tls-ciphers ECDHE-RSA-AES128-GCM-SHA256\n")
    with smtplib.SMTP_SSL("127.0.0.1", d.tls_port, context=client_ctx(certs), timeout=10) as c:
        c.ehlo("client.test")
        c.sendmail("a@x.org", ["b@example.com"], MESSAGE)
    ctx = client_ctx(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with smtplib.SMTP_SSL("127.0.0.1", d.tls_port, context=ctx, timeout=10) as c:
        c.ehlo("client.test")
        c.sendmail("a@x.org", ["b@example.com"], MESSAGE)
    assert "TLSv1.3 TLS_CHACHA20_POLY1305_SHA256" in d.qmgr.messages[0]["data"].decode()
    assert "TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256" in d.qmgr.messages[1]["data"].decode()


def test_tls_1_3_can_be_switched_off(start, certs):
    d = start(globals_="smtp-server-tls-allow-tlsv1.3 no\n")
    with smtplib.SMTP_SSL("127.0.0.1", d.tls_port, context=client_ctx(certs), timeout=10) as c:
        c.ehlo("client.test")
        c.sendmail("a@x.org", ["b@example.com"], MESSAGE)
    assert "TLSv1.2 " in d.qmgr.messages[0]["data"].decode()


def test_tls_versions_below_1_2_refused(start, certs):
    d = start()
    ctx = client_ctx(certs)
    with warnings.catch_warnings():  # old versions are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        smtplib.SMTP_SSL("127.0.0.1", d.tls_port, context=ctx, timeout=10).ehlo()


# ---- AUTH ------------------------------------------------------------------------------

def plain(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@pytest.mark.parametrize("allow_starttls", ["yes", "no"])
@pytest.mark.parametrize("before_auth", ["yes", "no"])
@pytest.mark.parametrize("unencrypted_plain", ["yes", "no"])
def test_auth_combinations(start, certs, allow_starttls, before_auth, unencrypted_plain):
    d = start(f"""<source 0/0>
    allow-starttls {allow_starttls}
    require-starttls-before-auth {before_auth}
    allow-unencrypted-plain-auth {unencrypted_plain}
</source>""")
    with d.smtp() as c:
        code, caps = c.ehlo("client.test")
        caps = caps.decode()
        clear_ok = before_auth == "no" and unencrypted_plain == "yes"
        assert ("AUTH PLAIN LOGIN" in caps) == clear_ok
        code, text = c.docmd("AUTH PLAIN " + plain("alice", "alice secret"))
        if before_auth == "yes":
            assert (code, text[:5]) == (530, b"5.7.0")
        elif unencrypted_plain == "no":
            assert (code, text[:6]) == (538, b"5.7.11")
        else:
            assert code == 235
        if allow_starttls == "yes" and code != 235:
            c.starttls(context=client_ctx(certs))
            code, caps = c.ehlo("client.test")
            assert "AUTH PLAIN LOGIN" in caps.decode()
            assert c.docmd("AUTH PLAIN " + plain("alice", "wrong"))[0] == 535
            c.user, c.password = "alice", "alice secret"
            assert c.auth("LOGIN", c.auth_login)[0] == 235
        if code == 235 or allow_starttls == "yes":
            c.mail("a@x.org")
            assert c.rcpt("b@elsewhere.org")[0] == 250  # authenticated users relay


def test_require_auth_and_failure_throttle(start, certs):
    d = start("""<source 0/0>
    require-auth yes
    allow-unencrypted-plain-auth yes
    smtp-max-auth-failure-rate 2/h
</source>""")
    with d.smtp() as c:
        c.ehlo("client.test")
        code, text = c.docmd("MAIL FROM:<a@x.org>")
        assert (code, text[:5]) == (530, b"5.7.0")
        assert c.docmd("AUTH PLAIN " + plain("alice", "x"))[0] == 535
        assert c.docmd("AUTH PLAIN " + plain("nobody", "x"))[0] == 535
        assert c.docmd("AUTH PLAIN " + plain("alice", "alice secret"))[0] == 454  # throttled
    # the session's last line: every line of its commands is in the file
    log = wait_for(lambda: (lambda log: log if "disconnect from" in log else None)(d.logtext()),
                   what="the session's end in the log")
    assert "alice secret" not in log


def test_auth_exchange_details(start):
    d = start("<source 0/0>\n allow-unencrypted-plain-auth yes\n</source>")
    r = Raw(d.port)
    greet(r)
    for line, want in [("AUTH CRAM-MD5", "504 5.5.4"), ("AUTH PLAIN", "334 "), ("*", "501 5.7.0"),
                       ("AUTH PLAIN", "334 "), ("not base64!", "501 5.5.2"),
                       ("AUTH LOGIN", "334 VXNlcm5hbWU6"), (base64.b64encode(b"alice").decode(), "334 UGFzc3dvcmQ6"),
                       ("A" * 13000, "500 5.5.6"), ("AUTH PLAIN =", "501 5.5.2"),
                       ("AUTH PLAIN " + base64.b64encode(b"bob\0alice\0alice secret").decode(), "535 5.7.8"),
                       ("AUTH PLAIN " + base64.b64encode(b"alice\0alice\0alice secret").decode(), "235 2.7.0"),
                       ("AUTH PLAIN =", "503 5.5.1"), ("MAIL FROM:<a@x.org>", "250"), ("AUTH PLAIN =", "503 5.5.1")]:
        r.send(line + "\r\n")
        assert r.reply().startswith(want), line


def test_auth_user_source_applies(start):
    d = start("""<source 0/0>
    allow-unencrypted-plain-auth yes
</source>
<source relayers>
    max-rcpt-per-message 1
</source>
<smtp-user bob>
    password bobpw
    source relayers
</smtp-user>""")
    with d.smtp() as c:
        c.ehlo("client.test")
        assert c.docmd("AUTH PLAIN " + plain("bob", "bobpw"))[0] == 235
        c.mail("a@x.org")
        assert c.rcpt("b@elsewhere.org")[0] == 250
        assert c.rcpt("c@elsewhere.org")[0] == 452


# ---- client certificates -------------------------------------------------------------------

CERT_SOURCE = """smtp-server-tls-ca-file {ca}
<source 0/0>
    allow-starttls yes
    require-client-certificate {require}
</source>
<smtp-user certuser>
    authentication-method certificate
    tls-certificate {client}
</smtp-user>"""


@pytest.mark.parametrize("require", ["yes", "no"])
@pytest.mark.parametrize("cert,verified", [("client", True), ("stranger", False), ("expired", False),
                                           (None, False)])
def test_client_certificates(start, certs, require, cert, verified):
    d = start(CERT_SOURCE.format(ca=certs / "ca.pem", client=certs / "client.pem", require=require))
    with smtplib.SMTP_SSL("127.0.0.1", d.tls_port, context=client_ctx(certs, cert), timeout=10) as c:
        c.ehlo("client.test")
        code, text = c.docmd("MAIL FROM:<a@x.org>")
        if require == "yes" and not verified:
            assert (code, text[:5]) == (530, b"5.7.0")
            return
        assert code == 250
        c.rcpt("b@example.com")
        assert c.data(MESSAGE)[0] == 250
    data = d.qmgr.messages[0]["data"].decode()
    if cert:
        assert f"client certificate subject=\"CN = {cert}.test\" issuer=\"CN = " in data
        assert ("\" verified)" in data) == verified
    else:
        assert "client certificate" not in data


def test_certificate_auth(start, certs):
    d = start(CERT_SOURCE.format(ca=certs / "ca.pem", client=certs / "client.pem", require="no"))
    with smtplib.SMTP_SSL("127.0.0.1", d.tls_port, context=client_ctx(certs, "client"), timeout=10) as c:
        code, caps = c.ehlo("client.test")
        assert "EXTERNAL" in caps.decode()
        assert c.docmd("AUTH EXTERNAL =")[0] == 235
        c.mail("a@x.org")
        assert c.rcpt("b@elsewhere.org")[0] == 250
    with smtplib.SMTP_SSL("127.0.0.1", d.tls_port, context=client_ctx(certs, "stranger"), timeout=10) as c:
        code, caps = c.ehlo("client.test")
        assert "EXTERNAL" not in caps.decode()
        assert c.docmd("AUTH EXTERNAL =")[0] == 535


# ---- BDAT --------------------------------------------------------------------------------

def test_bdat(start):
    d = start()
    r = Raw(d.port)
    greet(r)
    body1 = b"Subject: chunks\r\n\r\nfirst "
    body2 = b"second\r\n.not stuffed\r\n"
    r.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\n")
    assert [r.reply()[:3] for _ in range(2)] == ["250", "250"]
    r.send(b"BDAT %d\r\n" % len(body1) + body1 + b"BDAT %d LAST\r\n" % len(body2) + body2)
    assert r.reply().startswith("250 2.0.0 Ok: %d octets" % len(body1))
    assert r.reply().startswith("250 2.0.0 Ok: queued as")
    r.send(b"DATA\r\n")
    assert r.reply().startswith("503")
    r.send(b"BDAT 5 LAST\r\nhello")  # no transaction: refused, the chunk skipped
    assert r.reply().startswith("503 5.5.1")
    r.send(b"NOOP\r\n")
    assert r.reply().startswith("250")
    assert d.qmgr.messages[0]["data"].endswith(b"\r\n\r\nfirst second\r\n.not stuffed\r\n")


def test_design_md_inbound_configuration(start, certs):
    """The inbound lines of DESIGN.md, verbatim but for addresses and file
    names (and the password pasted with curly quotes)."""
    design = (pathlib.Path(__file__).parent / "design.conf").read_text()

    def config(d):
        text = design.replace("0/0:25", f"127.0.0.1:{d.port}").replace("1.2.3.4:465", f"127.0.0.1:{d.tls_port}")
        text = text.replace("/etc/tern/smtp-cert.pem", str(certs / "smtp-cert.pem"))
        text = text.replace('"YourPasswordHere"', f"\u201c{PASSWORD}\u201d")
        text = text.replace("/etc/tern/client-ca.pem", str(certs / "ca.pem"))
        return text + f"host-name mx.test\nspool {d.spool}\nrelay-domain example.com\n" \
            "<smtp-user alice>\n password \"alice secret\"\n</smtp-user>\n"

    d = start(whole=config)
    with d.smtp() as c:
        code, caps = c.ehlo("client.test")
        assert "STARTTLS" in caps.decode() and "AUTH" not in caps.decode()
        assert c.docmd("AUTH PLAIN " + plain("alice", "alice secret"))[0] == 530
        c.starttls(context=client_ctx(certs, "client"))
        code, caps = c.ehlo("client.test")
        assert "AUTH PLAIN LOGIN" in caps.decode()
        assert c.docmd("AUTH PLAIN " + plain("alice", "alice secret"))[0] == 235
        c.sendmail("a@x.org", ["b@elsewhere.org"], MESSAGE)
    with smtplib.SMTP_SSL("127.0.0.1", d.tls_port, context=client_ctx(certs), timeout=10) as c:
        c.ehlo("client.test")
        c.sendmail("a@x.org", ["b@example.com"], MESSAGE)
    first = d.qmgr.messages[0]
    assert "with ESMTPSA" in first["data"].decode()
    assert 'client certificate subject="CN = client.test"' in first["data"].decode()
    assert first["envelope"]["auth_user"] == "alice"
    assert "with ESMTPS" in d.qmgr.messages[1]["data"].decode()


def test_listeners_inherited_from_master(start, certs):
    d = start(inherit=True)
    assert "implicit TLS" in d.logtext()
    with d.smtp() as c:
        c.ehlo("client.test")
        c.sendmail("a@x.org", ["b@example.com"], MESSAGE)
    with smtplib.SMTP_SSL("127.0.0.1", d.tls_port, context=client_ctx(certs), timeout=10) as c:
        c.ehlo("client.test")
        c.sendmail("a@x.org", ["b@example.com"], MESSAGE)
    assert len(d.qmgr.messages) == 2


def test_total_max_smtp_in_is_shared_by_the_workers(start):
    # under master, each of the smtpd-processes workers takes its share
    d = start(inherit=True, globals_="smtpd-processes 2\ntotal-max-smtp-in 4")
    a, b = Raw(d.port), Raw(d.port)
    assert a.reply().startswith("220") and b.reply().startswith("220")
    c = Raw(d.port)
    assert c.reply().startswith("421 4.7.0")


def test_large_message_streams_to_qmgr(start):
    d = start()
    d.qmgr.slow = True
    body = "".join(f"line {i:06d} " + "x" * 60 + "\r\n" for i in range(60000))  # about 4.4 MB
    with d.smtp() as c:
        c.ehlo("client.test")
        c.sendmail("a@x.org", ["b@example.com"], "Subject: big\r\n\r\n" + body)
    data = d.qmgr.messages[0]["data"]
    assert data.endswith(body.encode())


def test_reload_applies_to_new_sessions(start):
    d = start()
    text = d.conf.read_text()
    d.conf.write_text(text + "<source 127.0.0.1>\n smtp-service no\n</source>\n")
    os.kill(d.proc.pid, signal.SIGHUP)
    deadline = time.time() + 5
    while "configuration reloaded" not in d.logtext() and time.time() < deadline:
        time.sleep(0.05)
    r = Raw(d.port)
    assert r.reply().startswith("521")
    d.conf.write_text(text + "<source\n")  # broken: refused, the last good one stays
    os.kill(d.proc.pid, signal.SIGHUP)
    deadline = time.time() + 5
    while "reload refused" not in d.logtext() and time.time() < deadline:
        time.sleep(0.05)
    assert "reload refused" in d.logtext()
    r = Raw(d.port)
    assert r.reply().startswith("521")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])


def test_client_that_does_not_read_replies_cannot_grow_the_server(start):
    # AddressSanitizer's quarantine would hide reuse of freed memory
    d = start(env={"ASAN_OPTIONS": "quarantine_size_mb=0"})
    r = Raw(d.port)
    greet(r)
    before = rss_kb(d.proc.pid)
    r.sock.setblocking(False)
    # whole lines only: what one send leaves unsent goes first in the next
    chunk, sent, deadline = b"NOOP\r\n" * 10000, 0, time.time() + 1.5
    unsent = chunk
    while sent < 8 * 1024 * 1024 and time.time() < deadline:
        try:
            n = r.sock.send(unsent)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        sent += n
        unsent = unsent[n:] or chunk
    time.sleep(0.3)
    grown = rss_kb(d.proc.pid) - before
    # without the limit, the replies to 8 MB of NOOPs take about 20 MB
    assert sent < 8 * 1024 * 1024 and grown < 6000, (sent, grown)
    r.sock.setblocking(True)
    r.sock.settimeout(10)
    # the session still works once the client reads
    received = b""
    want = sent // 6
    while received.count(b"\r\n") < want:
        received += r.sock.recv(1 << 20)
    # the line a send cut short is finished before QUIT
    r.sock.sendall(unsent[:len(unsent) % 6])
    r.send("QUIT\r\n")
    rest = b""
    while not rest.endswith(b"\r\n") or b"221 " not in rest:
        more = r.sock.recv(1 << 16)
        assert more, rest
        rest += more


def test_garbage_does_not_hurt(start):
    """Random and hostile input in every state: the daemon answers or
    closes, never crashes (the sanitizers watch), and still serves."""
    import random
    rng = random.Random(5321)
    d = start("<source 0/0>\n allow-unencrypted-plain-auth yes\n allow-starttls yes\n</source>")
    prefixes = [b"", b"EHLO g\r\n", b"EHLO g\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
                b"EHLO g\r\nAUTH LOGIN\r\n", b"EHLO g\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nBDAT 100\r\n",
                b"EHLO g\r\nSTARTTLS\r\n"]
    alphabet = b"\r\n.:<>@ \"\\%!=+AZaz09\x00\xff" + bytes(range(256))
    for i in range(120):
        raw = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        junk = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 3000)))
        try:
            raw.sendall(prefixes[i % len(prefixes)] + junk)
            raw.shutdown(socket.SHUT_WR)
            while raw.recv(65536):
                pass
        except OSError:
            pass
        raw.close()
    with d.smtp() as c:
        c.ehlo("after.test")
        assert c.noop()[0] == 250


# ---- load and stop --------------------------------------------------------------------------

def test_thousand_concurrent_sessions_on_one_process(start):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < 2300:
        pytest.skip("RLIMIT_NOFILE too low")
    d = start(globals_="total-max-smtp-in 2000")
    socks = []
    for i in range(1000):
        s = socket.create_connection(("127.0.0.1", d.port), timeout=20)
        socks.append(s)
    for s in socks:
        assert s.recv(100).startswith(b"220 ")
    rss_before = None
    with open(f"/proc/{d.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                rss_before = int(line.split()[1])
    # every session is alive and served by the same process
    for s in socks:
        s.sendall(b"EHLO load.test\r\n")
    for s in socks:
        data = b""
        while not data.endswith(b"250 HELP\r\n"):
            data += s.recv(4096)
    for s in socks:
        s.sendall(b"QUIT\r\n")
    for s in socks:
        s.recv(100)
        s.close()
    print(f"smtpd RSS with 1000 idle sessions: {rss_before} kB")


def in_data_with_a_slow_qmgr(start):
    """A session at DATA's 354, with a qmgr that takes 0.5 s to answer."""
    d = start()
    d.qmgr.reply_delay = 0.5
    r = Raw(d.port)
    greet(r)
    r.send("MAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert [r.reply()[:3] for _ in range(3)] == ["250", "250", "354"]
    return d, r


def test_commands_sent_while_qmgr_answers_wait_for_its_reply(start):
    """Reading stays on while qmgr has the message: what the client
    pipelines after the final dot is answered after the 250, in order."""
    d, r = in_data_with_a_slow_qmgr(start)
    r.send("Subject: x\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    assert r.reply().startswith("250 2.0.0 Ok: queued as Q00001")
    assert [r.reply()[:3] for _ in range(3)] == ["250", "250", "221"]
    assert len(d.qmgr.messages) == 1


def test_a_client_gone_while_qmgr_answers_still_gets_its_message_queued(start):
    """The end of the stream after the final dot is seen once qmgr has
    answered: the message is queued, its reply sent, and the session ends."""
    d, r = in_data_with_a_slow_qmgr(start)
    r.send("Subject: x\r\n\r\nbody\r\n.\r\n")
    r.sock.shutdown(socket.SHUT_WR)
    assert r.reply().startswith("250 2.0.0 Ok: queued as Q00001")
    assert r.sock.recv(100) == b""
    assert len(d.qmgr.messages) == 1
    deadline = time.time() + 5
    while "disconnect from" not in d.logtext() and time.time() < deadline:
        time.sleep(0.05)
    assert "messages=1" in d.logtext()


def test_sigterm_lets_a_session_in_flight_finish(start):
    d = start()
    busy = Raw(d.port)
    greet(busy)
    busy.send("MAIL FROM:<a@x.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert [busy.reply()[:3] for _ in range(3)] == ["250", "250", "354"]
    idle = Raw(d.port)
    greet(idle)
    os.kill(d.proc.pid, signal.SIGTERM)
    assert idle.reply().startswith("421 4.3.2")
    time.sleep(0.2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", d.port), timeout=2).recv(10) or (_ for _ in ()).throw(OSError())
    busy.send("Subject: late\r\n\r\nx\r\n.\r\n")
    assert busy.reply().startswith("250 2.0.0 Ok: queued as")
    assert busy.reply().startswith("421 4.3.2")
    assert d.proc.wait(10) == 0
