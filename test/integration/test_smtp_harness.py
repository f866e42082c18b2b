"""The test harness of the smtp delivery agent: until qmgr schedules
deliveries, the tests play qmgr.  They start smtp/smtp standalone (it then
creates <spool>/private/smtp itself), hand it jobs over the IPC protocol of
doc/delivery.md with ternipc, and read back one result per recipient and a
"done" per job; remote servers are tern-sink processes on 127.0.0.1.

Other test_smtp_*.py files import their fixtures from here."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from conftest import TOP, ensure_tern_user, wait_for
import ternipc

sys.path.insert(0, str(TOP / "test" / "sink"))
import ternsink  # noqa: E402

SMTP = TOP / "smtp" / "smtp"
SINK = TOP / "test" / "sink" / "tern-sink"

BODY = (b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hello\r\n\r\n"
        b"first line\n.leading dot\r\nlast line\r\n")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=30)


@pytest.fixture(scope="session")
def smtp_certs(tmp_path_factory):
    """A server certificate for the sinks, a CA, a client certificate it
    signed (also as one PEM file with an AES-encrypted key, as tern reads
    it), all readable by the tern user."""
    d = tmp_path_factory.mktemp("smtp-certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
            "-subj", "/O=Tern Tests/CN=Tern Test CA", cwd=d)
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:mx1.tls.test\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "server.ext", "-out", "server.pem", cwd=d)
    openssl("req", *ec, "-keyout", "client.key", "-out", "client.csr",
            "-subj", "/O=Tern Tests/CN=client.tern.test", cwd=d)
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "client.pem", cwd=d)
    openssl("pkey", "-in", "client.key", "-aes256", "-passout", "pass:key password",
            "-out", "client-enc.key", cwd=d)
    (d / "client-bundle.pem").write_text((d / "client.pem").read_text() + (d / "client-enc.key").read_text())
    for p in d.iterdir():
        p.chmod(0o644)
    d.chmod(0o755)
    d.parent.chmod(0o755)
    return d


class Sink:
    """A tern-sink subprocess and its JSONL record."""

    def __init__(self, args, directory, name):
        self.record = directory / f"{name}.jsonl"
        self.proc = subprocess.Popen([sys.executable, str(SINK), "--record", str(self.record),
                                      *map(str, args)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        fields = self.proc.stdout.readline().split()
        assert len(fields) == 3 and fields[0] == "listening", fields
        self.port = int(fields[2])

    def records(self, type=None):
        return ternsink.read_records(self.record, type)

    def messages(self, count=1, timeout=5):
        """The message records once there are count of them (the sink
        writes a record just after its reply)."""
        return wait_for(lambda: len(self.records("message")) >= count and self.records("message"),
                        timeout, what=f"{count} sink messages")

    def sessions(self, count=1, timeout=5):
        return wait_for(lambda: len(self.records("session")) >= count and self.records("session"),
                        timeout, what=f"{count} sink sessions")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()


class Agent:
    """smtp/smtp run standalone on a configuration of our own."""

    def __init__(self, base):
        self.base = base
        self.spool = base / "spool"
        self.config = base / "tern.conf"
        self.log = base / "smtp.log"
        self.proc = None
        self.jobs = 0

    def start(self, text):
        self.spool.mkdir(exist_ok=True)
        self.config.write_text(f"spool {self.spool}\nhost-name client.tern.test\n" + text, encoding="utf-8")
        socket_path = self.spool / "private" / "smtp"
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([str(SMTP), "-f", "-c", str(self.config)], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()
        wait_for(lambda: socket_path.exists() or self.proc.poll() is not None, 10, what="smtp socket")
        assert self.proc.poll() is None, self.log_text()
        self.socket = socket_path
        return self

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def connect(self):
        return ternipc.Connection(self.socket, timeout=30)

    def send_job(self, conn, queue, messages):
        """Sends one job; returns its id."""
        self.jobs += 1
        job_id = self.jobs
        conn.send([("request", "job"), ("job_id", job_id), ("queue", queue)])
        for m in messages:
            frame = [("request", "message"), ("job_id", job_id), ("queue_id", m.get("queue_id", "Q1")),
                     ("sender", m.get("sender", "a@example.org"))]
            for key in ("envid", "ret", "body_type"):
                if key in m:
                    frame.append((key, m[key]))
            if m.get("smtputf8"):
                frame.append(("smtputf8", 1))
            conn.send(frame)
            for i, r in enumerate(m["rcpts"]):
                r = r if isinstance(r, dict) else {"address": r}
                frame = [("request", "recipient"), ("job_id", job_id), ("rcpt_index", i),
                         ("recipient", r["address"])]
                for key in ("orcpt", "notify"):
                    if key in r:
                        frame.append((key, r[key]))
                conn.send(frame)
            body = m.get("body", BODY)
            for off in range(0, len(body), 65536):
                conn.send([("request", "data"), ("job_id", job_id), ("data", body[off:off + 65536])])
        conn.send([("request", "run"), ("job_id", job_id)])
        return job_id

    @staticmethod
    def collect(conn, job_ids):
        """Results and done frames until every job in job_ids is done."""
        results, done = {j: [] for j in job_ids}, {}
        while len(done) < len(job_ids):
            frame = conn.receive()
            assert frame["request"] in ("result", "done"), frame
            if frame["request"] == "result":
                results[frame["job_id"]].append(frame)
            else:
                done[frame["job_id"]] = frame
        return results, done

    def deliver(self, queue, messages):
        """One job on its own connection: (results, done)."""
        with self.connect() as conn:
            job = self.send_job(conn, queue, messages)
            results, done = self.collect(conn, [job])
            return results[job], done[job]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode if self.proc else None


@pytest.fixture
def sinks(tern_dir):
    """Starts tern-sinks with the given arguments; stops them all."""
    started = []

    def start(*args):
        s = Sink(args, tern_dir, f"sink{len(started) + 1}")
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def agent(tern_dir):
    """An smtp agent, not started; stopped (and checked for a clean exit,
    which under the sanitizers means no leak) at teardown."""
    ensure_tern_user()
    a = Agent(tern_dir)
    yield a
    rc = a.stop()
    assert rc in (0, None), a.log_text()


def test_harness_rejects_a_bad_frame(agent):
    """A frame smtp cannot decode is answered with "error" and the
    connection is closed (the protocol is strict)."""
    agent.start("")
    with agent.connect() as conn:
        conn.send([("request", "job"), ("job_id", 1)])  # no queue
        frame = conn.receive()
        assert frame["request"] == "error"
        assert "queue" in frame["reason"]
        with pytest.raises(ConnectionError):
            conn.receive()
    # smtp goes on serving other connections
    with agent.connect() as conn:
        conn.send([("request", "run"), ("job_id", 7)])
        assert "no open job 7" in conn.receive()["reason"]
