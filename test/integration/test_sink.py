"""Tests of the SMTP test sink (test/sink/tern-sink) itself: it is started as
a subprocess on a free loopback port and driven with smtplib, raw sockets and
swaks; what it recorded is then read back from its JSONL file."""
import json
import os
import pathlib
import select
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time

import pytest

TOP = pathlib.Path(__file__).resolve().parents[2]
SINK_DIR = TOP / "test" / "sink"
SINK = SINK_DIR / "tern-sink"
sys.path.insert(0, str(SINK_DIR))

import ternsink  # noqa: E402


# ------------------------------------------------------------------ helpers

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=30)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A self-signed server certificate (also with an encrypted key), a test
    CA and a client certificate it signed, and a client certificate it did not."""
    d = tmp_path_factory.mktemp("certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
    openssl("req", "-x509", *ec, "-keyout", "server.key", "-out", "server.pem",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", cwd=d)
    openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:s3cret",
            "-out", "server-enc.key", cwd=d)
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
            "-subj", "/O=Tern Tests/CN=Tern Test CA", cwd=d)
    openssl("req", *ec, "-keyout", "client.key", "-out", "client.csr",
            "-subj", "/O=Tern Tests/CN=client.tern.test", cwd=d)
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "client.pem", cwd=d)
    openssl("req", "-x509", *ec, "-keyout", "rogue.key", "-out", "rogue.pem",
            "-subj", "/CN=rogue.example", cwd=d)
    return d


class SinkProcess:
    """A running tern-sink and its record file."""

    def __init__(self, args, tmp_path, name):
        self.record = tmp_path / f"{name}.jsonl"
        self.proc = subprocess.Popen([str(SINK), "--record", str(self.record), *map(str, args)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self._first_line(10)
        fields = line.split()
        assert len(fields) == 3 and fields[0] == "listening", (line, self.proc.stderr.read())
        self.host, self.port = fields[1], int(fields[2])

    def _first_line(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.stop()
            raise AssertionError("tern-sink did not start listening")
        return self.proc.stdout.readline()

    def records(self, type=None):
        return ternsink.read_records(self.record, type)

    def wait(self, type, count=1, timeout=5):
        """The records of a type once there are at least count of them."""
        deadline = time.monotonic() + timeout
        while True:
            recs = self.records(type)
            if len(recs) >= count or time.monotonic() > deadline:
                assert len(recs) >= count, f"{len(recs)} {type} records, wanted {count}"
                return recs
            time.sleep(0.02)

    def stop(self, sig=signal.SIGTERM):
        """Signal the sink by PID, wait for it, return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture
def sink(tmp_path):
    """Starts tern-sink with the given arguments; stops every one it started."""
    started = []

    def start(*args, name=None):
        s = SinkProcess(args, tmp_path, name or f"sink{len(started) + 1}")
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def verbs(session):
    return [c["verb"] for c in session["commands"]]


def client_tls(cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


MESSAGE = ("From: a@example.org\r\nTo: b@example.net\r\nSubject: hello\r\n\r\n"
           "first line\r\n.leading dot\r\n..two dots\r\nlast line\r\n")


# -------------------------------------------------------------------- tests

def test_help_documents_options_and_readme_exists():
    out = subprocess.run([str(SINK), "--help"], capture_output=True, text=True, timeout=10,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0
    for option in ("--port-file", "--record", "--maildir", "--script", "--rule", "--rcpt",
                   "--hang", "--drop", "--delay", "--tls-cert", "--tls-key-password",
                   "--client-cert", "--break-tls", "--implicit-tls", "--extensions",
                   "--max-connections"):
        assert option in out.stdout, option
    readme = (SINK_DIR / "README.md").read_text(encoding="utf-8")
    assert "swaks --server" in readme and '"type": "session"' in readme


def test_plain_delivery_is_recorded(sink, tmp_path):
    s = sink("--port-file", tmp_path / "port")
    assert int((tmp_path / "port").read_text()) == s.port
    with smtplib.SMTP(s.host, s.port, local_hostname="client.test", timeout=5) as c:
        refused = c.sendmail("a@example.org", ["b@example.net", "c@example.net"], MESSAGE,
                             mail_options=["BODY=8BITMIME", "RET=HDRS", "ENVID=env+2B1"],
                             rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b@example.net"])
        assert refused == {}
        client_port = c.sock.getsockname()[1]
    session = s.wait("session")[0]
    message = s.records("message")[0]
    assert session["peer"] == {"ip": "127.0.0.1", "port": client_port}
    assert session["local"] == {"ip": "127.0.0.1", "port": s.port}
    assert session["helo"] == "client.test" and session["helo_verb"] == "EHLO"
    assert session["tls"] is None
    assert verbs(session) == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "EOD", "QUIT"]
    assert session["commands"][1]["reply"] == "250 2.1.0 Ok"
    assert session["commands"][-1]["reply"] == "221 2.0.0 Bye"
    assert session["end"] == "quit"
    assert message["mail_from"] == "a@example.org"
    assert message["mail_params"] == {"SIZE": str(len(MESSAGE)), "BODY": "8BITMIME",
                                      "RET": "HDRS", "ENVID": "env+2B1"}
    assert [r["address"] for r in message["rcpts"]] == ["b@example.net", "c@example.net"]
    assert message["rcpts"][0]["params"] == {"NOTIFY": "SUCCESS,FAILURE",
                                             "ORCPT": "rfc822;b@example.net"}
    assert message["data"] == MESSAGE  # dot-unstuffed, CRLF kept
    assert message["outcome"] == "accepted" and message["reply"].startswith("250 2.0.0 Ok")
    assert session["messages"][0]["number"] == message["number"] == 1
    assert "data" not in session["messages"][0]


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_by_hand_example(sink, certs):
    # swaks does TLS only with Net::SSLeay (Debian: libnet-ssleay-perl, which
    # it recommends); without it, test the plain session.
    support = subprocess.run(["swaks", "--support"], capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
    tls = "=== TLS supported" in support.stdout + support.stderr
    s = sink("--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key")
    out = subprocess.run(["swaks", "--server", f"{s.host}:{s.port}", "--to", "a@b.example",
                          "--from", "swaks@example.org", "--pipeline", "--helo", "swaks.test",
                          *(["--tls"] if tls else [])],
                         capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    session = s.wait("session")[0]
    assert session["helo"] == "swaks.test"
    if tls:
        assert session["tls"]["ok"] and session["tls"]["protocol"].startswith("TLSv1.")
    assert session["messages"][0]["rcpts"] == [{"address": "a@b.example", "params": {}}]
    assert any(c.get("pipelined") for c in session["commands"])


def test_starttls_self_signed_records_tls13_and_cipher(sink, certs):
    s = sink("--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key")
    with smtplib.SMTP(s.host, s.port, timeout=5) as c:
        c.ehlo()
        assert c.has_extn("starttls")
        c.starttls(context=client_tls())
        cipher = c.sock.cipher()[0]
        c.ehlo()
        assert not c.has_extn("starttls")
        c.sendmail("a@example.org", ["b@example.net"], MESSAGE)
    session = s.wait("session")[0]
    tls = session["tls"]
    assert tls["ok"] and tls["mode"] == "starttls"
    assert tls["protocol"] == "TLSv1.3" and tls["cipher"] == cipher
    assert tls["client_cert"] is None
    assert verbs(session)[:3] == ["EHLO", "STARTTLS", "EHLO"]
    assert session["messages"][0]["tls"] is True


def test_encrypted_key_and_tls12(sink, certs):
    s = sink("--tls-cert", certs / "server.pem", "--tls-key", certs / "server-enc.key",
             "--tls-key-password", "s3cret", "--tls-max-version", "TLSv1.2")
    with smtplib.SMTP(s.host, s.port, timeout=5) as c:
        c.starttls(context=client_tls())
        cipher = c.sock.cipher()[0]
        c.noop()
    tls = s.wait("session")[0]["tls"]
    assert tls["protocol"] == "TLSv1.2" and tls["cipher"] == cipher


def test_client_certificate_demanded_and_recorded(sink, certs):
    s = sink("--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key",
             "--tls-ca", certs / "ca.pem", "--client-cert", "require")
    with smtplib.SMTP(s.host, s.port, timeout=5) as c:
        c.starttls(context=client_tls(certs / "client.pem", certs / "client.key"))
        c.ehlo()
        c.sendmail("a@example.org", ["b@example.net"], MESSAGE)
    # Without a certificate the handshake fails (with TLS 1.3 the client may
    # only notice on its next read).
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        with smtplib.SMTP(s.host, s.port, timeout=5) as c:
            c.starttls(context=client_tls())
            c.ehlo()
    sessions = sorted(s.wait("session", 2), key=lambda r: r["session"])
    cert = sessions[0]["tls"]["client_cert"]
    assert cert["subject"] == "CN=client.tern.test,O=Tern Tests"
    assert cert["issuer"] == "CN=Tern Test CA,O=Tern Tests"
    assert len(cert["sha256"]) == 64
    failed = sessions[1]["tls"]
    assert failed["ok"] is False and "certificate" in failed["error"].lower()
    assert sessions[1]["end"] == "tls-failed"


def test_optional_client_certificate(sink, certs):
    s = sink("--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key",
             "--tls-ca", certs / "ca.pem", "--client-cert", "optional")
    with smtplib.SMTP(s.host, s.port, timeout=5) as c:
        c.starttls(context=client_tls())
        c.noop()
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        with smtplib.SMTP(s.host, s.port, timeout=5) as c:
            c.starttls(context=client_tls(certs / "rogue.pem", certs / "rogue.key"))
            c.ehlo()
    sessions = sorted(s.wait("session", 2), key=lambda r: r["session"])
    assert sessions[0]["tls"]["ok"] and sessions[0]["tls"]["client_cert"] is None
    assert sessions[1]["tls"]["ok"] is False and sessions[1]["tls"]["error"]


def test_scripted_replies_per_recipient(sink, tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rcpt": {"^bad@": "550 5.1.1 no such user"},
                                  "rules": [{"command": "RCPT", "match": "slow@",
                                             "delay": 0.3}]}))
    s = sink("--script", script, "--rcpt", "user4xx@=450 4.2.0 mailbox busy")
    with smtplib.SMTP(s.host, s.port, timeout=5) as c:
        t0 = time.monotonic()
        refused = c.sendmail("a@example.org", ["user4xx@example.net", "bad@example.net",
                                               "good@example.net", "slow@example.net"], MESSAGE)
        assert time.monotonic() - t0 >= 0.3
        assert refused == {"user4xx@example.net": (450, b"4.2.0 mailbox busy"),
                           "bad@example.net": (550, b"5.1.1 no such user")}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            c.sendmail("a@example.org", ["bad@example.net"], MESSAGE)
    session = s.wait("session")[0]
    message = s.records("message")[0]
    assert [r["address"] for r in message["rcpts"]] == ["good@example.net", "slow@example.net"]
    assert [(r["address"], r["reply"]) for r in message["rejected_rcpts"]] == [
        ("user4xx@example.net", "450 4.2.0 mailbox busy"),
        ("bad@example.net", "550 5.1.1 no such user")]
    assert session["messages"][1]["outcome"] == "aborted"


def test_nth_message_and_nth_connection(sink, tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"rules": [
        {"command": "EOD", "message": 2, "reply": "451 4.3.0 try again later"},
        {"command": "CONNECT", "connection": 3, "reply": "421 4.7.0 not now"}]}))
    s = sink("--script", script)
    with smtplib.SMTP(s.host, s.port, timeout=5) as c:
        c.sendmail("a@example.org", ["b@example.net"], MESSAGE)
        with pytest.raises(smtplib.SMTPDataError) as e:
            c.sendmail("a@example.org", ["b@example.net"], MESSAGE)
        assert e.value.smtp_code == 451
        c.sendmail("a@example.org", ["b@example.net"], MESSAGE)
    with smtplib.SMTP(s.host, s.port, timeout=5) as c:
        c.noop()
    with pytest.raises((smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected)):
        smtplib.SMTP(s.host, s.port, timeout=5)
    messages = s.wait("message", 3)
    assert [m["outcome"] for m in messages] == ["accepted", "tempfail", "accepted"]
    third = [r for r in s.wait("session", 3) if r["session"] == 3][0]
    assert third["greeting"] == "421 4.7.0 not now" and third["commands"] == []


def test_hang_after_data(sink):
    s = sink("--hang", "EOD")
    c = smtplib.SMTP(s.host, s.port, timeout=5)
    c.ehlo()
    c.mail("a@example.org")
    c.rcpt("b@example.net")
    c.sock.settimeout(0.5)
    with pytest.raises((TimeoutError, smtplib.SMTPServerDisconnected)) as e:
        c.data(MESSAGE)
    assert "timed out" in str(e.value)
    c.close()
    session = s.wait("session")[0]
    assert session["end"] == "hung"
    assert verbs(session)[-2:] == ["DATA", "EOD"]
    assert session["commands"][-1]["reply"] is None
    assert session["commands"][-1]["action"] == "hang"
    message = s.records("message")[0]
    assert message["outcome"] == "no-reply" and message["data"] == MESSAGE


def test_dropped_connection(sink):
    s = sink("--drop", "RCPT")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        with smtplib.SMTP(s.host, s.port, timeout=5) as c:
            c.sendmail("a@example.org", ["b@example.net"], MESSAGE)
    session = s.wait("session")[0]
    assert session["end"] == "dropped"
    assert verbs(session) == ["EHLO", "MAIL", "RCPT"]
    assert session["commands"][-1]["action"] == "drop"
    assert session["messages"][0]["outcome"] == "aborted"


@pytest.mark.parametrize("mode", ["garbage", "close"])
def test_broken_tls_handshake(sink, certs, mode):
    s = sink("--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key",
             "--break-tls", mode)
    with smtplib.SMTP(s.host, s.port, timeout=5) as c:
        c.ehlo()
        assert c.has_extn("starttls")
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            c.starttls(context=client_tls())
    session = s.wait("session")[0]
    assert session["tls"]["ok"] is False
    assert session["tls"]["broken"] == mode
    assert verbs(session) == ["EHLO", "STARTTLS"]
    assert session["commands"][-1]["reply"].startswith("220")
    assert "MAIL" not in verbs(session)


def test_no_starttls_and_cleartext_after_starttls_discarded(sink, certs):
    s = sink("--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key")
    with socket.create_connection((s.host, s.port), timeout=5) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO inject.test\r\n")
        while f.readline()[3:4] != b" ":
            pass
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
        assert f.readline().startswith(b"220 ")
        with client_tls().wrap_socket(sock) as tls:
            tls.sendall(b"QUIT\r\n")
            assert tls.recv(100).startswith(b"221 ")
    session = s.wait("session")[0]
    assert verbs(session) == ["EHLO", "STARTTLS", "QUIT"]
    assert session["commands"][1]["discarded"] == "MAIL FROM:<evil@example.org>\r\n"

    plain = sink("--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key",
                 "--no-starttls")
    with smtplib.SMTP(plain.host, plain.port, timeout=5) as c:
        c.ehlo()
        assert not c.has_extn("starttls")
        assert c.docmd("STARTTLS")[0] == 502


def test_idle_timeout(sink):
    s = sink("--timeout", "0.3")
    with socket.create_connection((s.host, s.port), timeout=5) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        assert f.readline().startswith(b"421 4.4.2 ")
        assert f.readline() == b""
    assert s.wait("session")[0]["end"] == "timeout"


def test_implicit_tls(sink, certs):
    s = sink("--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key",
             "--implicit-tls")
    with smtplib.SMTP_SSL(s.host, s.port, timeout=5, context=client_tls()) as c:
        assert not c.has_extn("starttls")
        c.sendmail("a@example.org", ["b@example.net"], MESSAGE)
    session = s.wait("session")[0]
    assert session["tls"]["mode"] == "implicit" and session["tls"]["protocol"] == "TLSv1.3"
    assert session["messages"][0]["tls"] is True


def test_max_concurrent_connections_counted(sink):
    s = sink()
    clients = [smtplib.SMTP(s.host, s.port, timeout=5) for _ in range(4)]
    for c in clients:
        c.ehlo()
    for c in clients:
        c.quit()
    with smtplib.SMTP(s.host, s.port, timeout=5) as c:
        c.noop()
    s.wait("session", 5)
    assert max(r["concurrent"] for r in s.records("connect")) == 4
    assert s.stop() == 0
    summary = s.records("summary")[0]
    assert summary["max_concurrent"] == 4 and summary["sessions"] == 5


def test_max_connections_refused_with_421(sink):
    s = sink("--max-connections", "2")
    a = smtplib.SMTP(s.host, s.port, timeout=5)
    b = smtplib.SMTP(s.host, s.port, timeout=5)
    with pytest.raises((smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected)):
        smtplib.SMTP(s.host, s.port, timeout=5)
    a.quit()
    b.quit()
    refused = [r for r in s.wait("session", 3) if r["end"] == "too-many-connections"]
    assert len(refused) == 1 and refused[0]["greeting"].startswith("421")


def test_pipelined_bdat_over_raw_socket(sink):
    s = sink()
    with socket.create_connection((s.host, s.port), timeout=5) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        sock.sendall(b"EHLO raw.test\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\n"
                     b"RCPT TO:<b@example.net>\r\nBDAT 7\r\nSubjectBDAT 13 LAST\r\n: x\r\n\r\nbody\r\n")
        replies = []
        while len(replies) < 5:
            line = f.readline()
            assert line, replies
            if line[3:4] == b" ":
                replies.append(line)
        assert [r[:3] for r in replies] == [b"250"] * 5
        sock.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"221")
    session = s.wait("session")[0]
    message = s.records("message")[0]
    assert message["method"] == "BDAT" and message["data"] == "Subject: x\r\n\r\nbody\r\n"
    assert message["bdat_chunks"] == 2 and message["size"] == 20
    assert verbs(session) == ["EHLO", "MAIL", "RCPT", "BDAT", "BDAT", "QUIT"]
    assert [c.get("pipelined", False) for c in session["commands"][:4]] == [True, True, True, True]


def test_unadvertised_parameters_rejected(sink):
    s = sink("--without", "DSN", "--extensions", "PIPELINING,SIZE,8BITMIME,DSN")
    with smtplib.SMTP(s.host, s.port, timeout=5) as c:
        c.ehlo()
        assert not c.has_extn("dsn") and not c.has_extn("enhancedstatuscodes")
        code, _ = c.mail("a@example.org", ["RET=HDRS"])
        assert code == 555
        code, text = c.mail("a@example.org", ["SIZE=999999999999"])
        assert code == 552 and not text.startswith(b"5.")  # no enhanced codes


def test_sigterm_records_open_session_and_exits_zero(sink):
    s = sink()
    c = smtplib.SMTP(s.host, s.port, timeout=5)
    c.ehlo("open.test")
    s.wait("connect")
    assert s.stop(signal.SIGTERM) == 0
    c.close()
    session = s.records("session")[0]
    assert session["end"] == "shutdown" and session["helo"] == "open.test"
    assert s.records()[-1]["type"] == "summary"


def test_maildir_and_greeting_option(sink, tmp_path):
    s = sink("--maildir", tmp_path / "mail", "--greeting", "220-first line\n220 sink ready")
    with smtplib.SMTP(s.host, s.port, timeout=5) as c:
        c.sendmail("a@example.org", ["b@example.net"], MESSAGE.encode())
    message = s.wait("message")[0]
    assert "data" not in message
    assert pathlib.Path(message["path"]).read_bytes() == MESSAGE.encode()
    assert s.wait("session")[0]["greeting"] == "220-first line\n220 sink ready"


def test_bad_script_is_refused(tmp_path):
    script = tmp_path / "bad.json"
    script.write_text(json.dumps({"rules": [{"command": "MALE", "reply": "250 ok"}]}))
    out = subprocess.run([str(SINK), "--script", str(script)], capture_output=True, text=True,
                         timeout=10, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "MALE" in out.stderr


def test_in_process_sink(tmp_path):
    sink = ternsink.Sink(ternsink.Config(record=str(tmp_path / "rec.jsonl"), rules=[
        ternsink.Rule({"command": "MAIL", "from": "^blocked@", "reply": "550 5.7.1 blocked"})]))
    host, port = sink.start()
    try:
        with smtplib.SMTP(host, port, timeout=5) as c:
            with pytest.raises(smtplib.SMTPSenderRefused):
                c.sendmail("blocked@example.org", ["b@example.net"], MESSAGE)
            c.sendmail("ok@example.org", ["b@example.net"], MESSAGE)
    finally:
        sink.stop()
    assert [r["type"] for r in sink.records] == ["connect", "message", "session", "summary"]
    assert sink.records[1]["mail_from"] == "ok@example.org"
    assert ternsink.read_records(tmp_path / "rec.jsonl") == sink.records


def test_many_messages_over_few_connections(sink):
    """200 messages over four connections all arrive (the rate is a figure
    for the benchmarks, not something a test asserts)."""
    s = sink("--no-commands")
    count = 0
    t0 = time.monotonic()
    clients = [smtplib.SMTP(s.host, s.port, timeout=5) for _ in range(4)]
    for _ in range(50):
        for c in clients:
            c.sendmail("a@example.org", ["b@example.net"], MESSAGE)
            count += 1
    for c in clients:
        c.quit()
    elapsed = time.monotonic() - t0
    assert len(s.wait("message", count)) == count
    print(f"sink: {count / elapsed:.0f} messages/s over 4 connections")
