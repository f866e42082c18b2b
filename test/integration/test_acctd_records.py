"""acctd with the real daemon driven over its socket: the CSV it writes
(header, union of columns, quoting, times, several files), the record
protocol (resume, resends, gaps) and configuration errors.  The Acctd and
Feeder helpers here are shared by the other test_acctd_*.py files."""
import csv
import os
import signal
import socket
import subprocess
import time

import pytest

import ternipc
from conftest import TOP, HERE, ensure_tern_user, wait_for, wait_for_log

ACCTD = TOP / "acctd" / "acctd"
DBT = ("type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,srcType,"
       "srcMta,dlvType,dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,envId,queue,"
       "vmtaPool").split(",")
T0 = 1795880000  # a Saturday afternoon in November 2026


def iso(t):
    return time.strftime("%Y-%m-%d %H:%M:%S+0000", time.gmtime(t))


class Acctd:
    """acctd in its own directory (config, spool, log/), run in the foreground."""

    def __init__(self, base, blocks, extra=""):
        self.base = base
        self.spool = base / "spool"
        self.logdir = base / "log"
        self.config = base / "tern.conf"
        self.output = base / "acctd.log"
        self.proc = None
        self.write_config(blocks, extra)

    def write_config(self, blocks, extra=""):
        text = f"spool {self.spool}\n{extra}\n" + blocks.replace("LOG/", f"{self.logdir}/")
        self.config.write_text(text, encoding="utf-8")

    @property
    def socket(self):
        return self.spool / "private" / "acctd"

    def start(self, check=True, args=(), service_socket=None):
        ensure_tern_user()
        log = open(self.output, "ab")
        env = dict(os.environ, TZ="UTC")
        fds = ()
        if service_socket is not None:  # as master hands it over
            env["TERN_SERVICE_FD"] = str(service_socket.fileno())
            fds = (service_socket.fileno(),)
        self.proc = subprocess.Popen([str(ACCTD), "-f", *args, "-c", str(self.config)], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, env=env, pass_fds=fds)
        log.close()
        if check:
            wait_for(self.ready, 10, what="acctd's socket")
        return self

    def ready(self):
        assert self.proc.poll() is None, self.log_text()
        try:
            with ternipc.Connection(self.socket, timeout=2) as c:
                c.send({"request": "status"})
                return c.receive()["status"] == 0
        except OSError:
            return False

    def log_text(self):
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)

    def stop(self):
        self.kill(signal.SIGTERM)

    def request(self, verb, **attrs):
        with ternipc.Connection(self.socket, timeout=10) as c:
            c.send({"request": verb, **attrs})
            return c.receive()

    def rows(self, name="acct.csv"):
        """Header and rows of a file, parsed by Python's csv module."""
        with open(self.logdir / name, newline="", encoding="utf-8") as f:
            data = list(csv.reader(f))
        return data[0], data[1:]

    def raw(self, name="acct.csv"):
        return (self.logdir / name).read_bytes()


class Feeder:
    """What qmgr does: hello, then records in order; acks tell what is written."""

    def __init__(self, acctd, **hello):
        self.conn = ternipc.Connection(acctd.socket, timeout=10)
        self.conn.send({"request": "hello", **hello})
        reply = self.conn.receive()
        assert reply["request"] == "resume", reply
        self.resume = reply["seq"]
        self.header_names = reply["header_names"]

    def send(self, seq, rtype, **fields):
        self.conn.send([("request", "record"), ("seq", seq), ("record_type", rtype)] + list(fields.items()))

    def wait_ack(self, seq):
        while True:
            reply = self.conn.receive()
            assert reply["request"] == "ack", reply
            if reply["seq"] >= seq:
                return reply["seq"]

    def close(self):
        self.conn.close()


@pytest.fixture
def acctd_factory(tern_dir):
    made = []

    def make(blocks, extra=""):
        a = Acctd(tern_dir, blocks, extra)
        made.append(a)
        return a

    yield make
    for a in made:
        a.stop()
    for a in made:
        log = a.log_text()
        for word in ("AddressSanitizer", "LeakSanitizer", "runtime error", "panic"):
            assert word not in log, log


def delivery(i, tls=True, **over):
    """A delivery record's fields, numbered i."""
    rec = {
        "timeLogged": T0 + i, "timeQueued": T0, "orig": "sender@tern.test", "rcpt": f"user{i}@example.com",
        "dsnAction": "relayed", "dsnStatus": "2.0.0 (success)", "dsnDiag": "smtp;250 2.0.0 ok, \"queued\"",
        "dsnMta": "mx.example.com (192.0.2.7)", "srcType": "smtp", "srcMta": "client.test (198.51.100.1)",
        "dlvType": "smtp", "dlvSourceIp": "192.0.2.1", "dlvDestinationIp": "192.0.2.7",
        "dlvEsmtpAvailable": "PIPELINING,SIZE,STARTTLS", "dlvSize": 1234 + i, "vmta": "{default}",
        "jobId": f"job{i}", "envId": "", "queue": "example.com/{default}", "vmtaPool": "",
    }
    if tls:
        rec.update(dlvTlsProtocol="TLSv1.3", dlvTlsCipher="TLS_AES_256_GCM_SHA384")
    rec.update(over)
    return rec


def expected_row(header, rtype, rec, columns_of_type=None):
    row = []
    for col in header:
        if col == "type":
            row.append(rtype)
        elif columns_of_type is not None and col not in columns_of_type:
            row.append("")
        elif col.startswith("time") and col in rec:
            row.append(iso(rec[col]))
        else:
            row.append(str(rec.get(col, "")))
    return row


DESIGN_BLOCK = """<acct-file LOG/acct.csv>
    records d, b
    record-fields d *, dlvTlsProtocol, dlvTlsCipher
    record-fields b *, dlvTlsProtocol, dlvTlsCipher
</acct-file>
"""


def test_design_config_header_and_tls_columns(acctd_factory):
    """The <acct-file> of DESIGN.md, with TLS values only on TLS deliveries."""
    block = (HERE / "design.conf").read_text(encoding="utf-8")
    start = block.index("<acct-file")
    end = block.index("</acct-file>") + len("</acct-file>")
    a = acctd_factory(block[start:end].replace("/var/log/tern/", "LOG/") + "\n").start()
    f = Feeder(a)
    assert f.resume == 0
    records = [("d", delivery(1)), ("d", delivery(2, tls=False)),
               ("b", delivery(3, dsnAction="failed", dsnStatus="5.1.1 (bad destination mailbox address)",
                              dsnDiag="smtp;550 5.1.1 no such user", bounceCat="bad-mailbox"))]
    for seq, (rtype, rec) in enumerate(records, 1):
        f.send(seq, rtype, **rec)
    assert f.wait_ack(3) == 3
    header, rows = a.rows()
    assert header == DBT + ["dlvTlsProtocol", "dlvTlsCipher"]
    assert a.raw().startswith(b"type,timeLogged,timeQueued,orig,rcpt,")
    assert a.raw().count(b"\r\n") == 4, "CRLF line ends"
    assert rows == [expected_row(header, t, r) for t, r in records]
    assert rows[0][-2:] == ["TLSv1.3", "TLS_AES_256_GCM_SHA384"]
    assert rows[1][-2:] == ["", ""]
    assert rows[0][8] == 'smtp;250 2.0.0 ok, "queued"'


def test_scripted_deliveries_deferrals_and_bounces(acctd_factory):
    """Every row equals its record, field by field, for the three outcomes."""
    a = acctd_factory("<acct-file LOG/acct.csv>\n    records d, b, t\n</acct-file>\n").start()
    f = Feeder(a)
    script = []
    for i in range(1, 31):
        if i % 5 == 0:
            script.append(("b", delivery(i, tls=False, dsnAction="failed", dsnStatus="5.1.1 (bad mailbox)",
                                         dsnDiag="smtp;550 5.1.1 <x>: no, \"such\" user", bounceCat="bad-mailbox")))
        elif i % 3 == 0:
            script.append(("t", delivery(i, tls=False, dsnAction="delayed", dsnStatus="4.4.1 (no answer)",
                                         dsnDiag="smtp;421 4.4.1 try\r\nlater")))
        else:
            script.append(("d", delivery(i, tls=False)))
    for seq, (rtype, rec) in enumerate(script, 1):
        f.send(seq, rtype, **rec)
    f.wait_ack(len(script))
    header, rows = a.rows()
    assert header == DBT
    assert rows == [expected_row(header, t, r) for t, r in script]


def test_union_of_columns_removal_headers_and_options(acctd_factory):
    """The guide's union example, !field, header_*, userString, Unix times,
    and a second file holding other types with its own selection."""
    a = acctd_factory("""<acct-file LOG/acct.csv>
    records d, b
    record-fields delivery timeLogged,orig,rcpt,dlvSourceIp
    record-fields bounce timeLogged,orig,rcpt,bounceCat
</acct-file>
<acct-file LOG/other.csv>
    records r, tq, t
    record-fields r *, !orcpt, header_Subject, header_X-Job, userString
    record-fields t jobId, DSNDIAG
    iso-times no
    user-string "box 7"
    world-readable yes
</acct-file>
""").start()
    f = Feeder(a)
    d = delivery(1, bounceCat="should-not-show")
    b = delivery(2, dsnAction="failed", bounceCat="bad-mailbox")
    r = {"timeLogged": T0 + 3, "orig": "s@tern.test", "rcpt": "r@example.com", "orcpt": "rfc822;r@example.com",
         "srcType": "smtp", "srcMta": "c.test (198.51.100.1)", "rcvSourceIp": "198.51.100.1",
         "rcvSmtpUser": "alice", "vmta": "v1", "jobId": "j1", "envId": "e1",
         "headers": "Subject: Hello,\r\n world\r\nX-Job: 42\r\nX-Other: 1\r\n"}
    tq = {"timeLogged": T0 + 4, "queue": "example.com/v1", "vmta": "v1", "dsnStatus": "4.4.1",
          "dsnDiag": "smtp;421 busy", "dsnMta": "mx.example.com", "dlvSourceIp": "192.0.2.1",
          "dlvDestinationIp": "192.0.2.7"}
    t = delivery(5, dsnDiag="smtp;451 later")
    for seq, (rtype, rec) in enumerate([("d", d), ("b", b), ("r", r), ("tq", tq), ("t", t)], 1):
        f.send(seq, rtype, **rec)
    f.wait_ack(5)
    header, rows = a.rows()
    assert header == ["type", "timeLogged", "orig", "rcpt", "dlvSourceIp", "bounceCat"]
    assert rows == [["d", iso(T0 + 1), "sender@tern.test", "user1@example.com", "192.0.2.1", ""],
                    ["b", iso(T0 + 2), "sender@tern.test", "user2@example.com", "", "bad-mailbox"]]
    header, rows = a.rows("other.csv")
    r_cols = ["type", "timeLogged", "orig", "rcpt", "srcType", "srcMta", "rcvSourceIp", "rcvSmtpUser", "vmta",
              "jobId", "envId", "header_Subject", "header_X-Job", "userString"]
    tq_cols = ["type", "timeLogged", "dsnStatus", "dsnDiag", "dsnMta", "dlvSourceIp", "dlvDestinationIp", "vmta",
               "queue"]
    assert header == r_cols + ["dsnStatus", "dsnDiag", "dsnMta", "dlvSourceIp", "dlvDestinationIp", "queue"]
    by_col = [dict(zip(header, row)) for row in rows]
    assert by_col[0]["header_Subject"] == "Hello, world" and by_col[0]["header_X-Job"] == "42"
    assert by_col[0]["userString"] == "box 7" and by_col[0]["timeLogged"] == str(T0 + 3)
    assert by_col[0]["dsnStatus"] == ""
    assert [by_col[1][c] for c in tq_cols] == ["tq", str(T0 + 4), "4.4.1", "smtp;421 busy", "mx.example.com",
                                               "192.0.2.1", "192.0.2.7", "v1", "example.com/v1"]
    assert by_col[1]["rcpt"] == "" and by_col[1]["userString"] == ""
    assert by_col[2]["type"] == "t" and by_col[2]["jobId"] == "job5" and by_col[2]["dsnDiag"] == "smtp;451 later"
    assert by_col[2]["timeLogged"] == "" and by_col[2]["rcpt"] == ""
    assert (a.logdir / "other.csv").stat().st_mode & 0o777 == 0o644
    assert (a.logdir / "acct.csv").stat().st_mode & 0o777 == 0o640


def test_resume_resend_and_gap(acctd_factory):
    a = acctd_factory(DESIGN_BLOCK).start()
    f = Feeder(a)
    for seq in range(1, 6):
        f.send(seq, "d", **delivery(seq))
    f.wait_ack(5)
    f.close()
    f = Feeder(a)
    assert f.resume == 5
    # A client that lost the ack sends again: written once, confirmed again.
    for seq in range(3, 8):
        f.send(seq, "d", **delivery(seq))
    assert f.wait_ack(7) == 7
    _, rows = a.rows()
    assert [r[4] for r in rows] == [f"user{i}@example.com" for i in range(1, 8)]
    f.send(9, "d", **delivery(9))
    reply = f.conn.receive()
    assert reply["request"] == "error" and "no gaps" in reply["reason"]
    a.stop()
    a.start()
    assert Feeder(a).resume == 7


def test_hello_agrees_on_the_sequence_after_a_reset(acctd_factory):
    a = acctd_factory(DESIGN_BLOCK).start()
    f = Feeder(a, seq=0, next_seq=6)
    assert f.resume == 0
    for seq in range(1, 6):
        f.send(seq, "d", **delivery(seq))
    f.wait_ack(5)
    # The usual case: the client lost an ack; acctd knows better.
    assert Feeder(a, seq=3, next_seq=6).resume == 5
    # A new queue numbers from 1 again: its records must not be skipped.
    f = Feeder(a, seq=0, next_seq=3)
    assert f.resume == 0
    f.send(1, "b", **delivery(101))
    f.send(2, "b", **delivery(102))
    f.wait_ack(2)
    # acctd's state was removed: the client's confirmed point wins.
    a.stop()
    (a.spool / "acctd" / "state").unlink()
    a.start()
    f = Feeder(a, seq=40, next_seq=42)
    assert f.resume == 40
    f.send(41, "d", **delivery(41))
    f.wait_ack(41)
    _, rows = a.rows()
    assert [r[4].split("@")[0] for r in rows] == [f"user{i}" for i in (1, 2, 3, 4, 5, 101, 102, 41)]
    wait_for_log(a, "do not follow ours", count=2)


def test_disable_acct_records_per_domain(acctd_factory):
    a = acctd_factory(DESIGN_BLOCK, extra="<domain quiet.example>\n    disable-acct-records d\n</domain>\n")
    a.start()
    f = Feeder(a)
    f.send(1, "d", **delivery(1, rcpt="a@quiet.example"))
    f.send(2, "b", **delivery(2, rcpt="b@quiet.example"))
    f.send(3, "d", **delivery(3, rcpt="c@loud.example"))
    f.wait_ack(3)
    _, rows = a.rows()
    assert [(r[0], r[4]) for r in rows] == [("b", "b@quiet.example"), ("d", "c@loud.example")]


@pytest.mark.parametrize("block, message", [
    ("<acct-file LOG/a.csv>\n    record-fields d *, dlvTlsProtocl\n</acct-file>\n", "tern.conf:4:"),
    ("<acct-file |/usr/bin/logger>\n</acct-file>\n", "not supported"),
])
def test_configuration_errors_stop_acctd(acctd_factory, block, message):
    a = acctd_factory(block).start(check=False)
    assert a.proc.wait(timeout=10) != 0
    assert message in a.log_text()


def test_one_acctd_per_spool(acctd_factory, tern_dir):
    a = acctd_factory(DESIGN_BLOCK).start()
    assert int((a.spool / "acctd" / "acctd.pid").read_text()) == a.proc.pid
    second = Acctd(tern_dir, DESIGN_BLOCK)
    second.output = tern_dir / "second.log"
    second.start(check=False)
    assert second.proc.wait(timeout=10) != 0
    assert f"another acctd (pid {a.proc.pid})" in second.log_text()
    assert a.ready(), "the first one keeps its socket"


def test_requests_relayed_by_master_with_the_callers_role(acctd_factory):
    """What master passes on for ternctl: acctd.VERB plus role; replies end
    with an "end" frame; a reader may look but not change anything."""
    a = acctd_factory(DESIGN_BLOCK).start()

    def relayed(verb, role, **attrs):
        with ternipc.Connection(a.socket, timeout=10) as c:
            c.send({"request": f"acctd.{verb}", "role": role, **attrs})
            reply, end = c.receive(), c.receive()
            assert reply["request"] == "reply" and end == {"request": "end"}
            return reply

    assert relayed("status", "reader") == {"request": "reply", "status": 0, "reason": "writing", "seq": 0}
    refused = relayed("rotate", "reader")
    assert refused["status"] == 2 and "permission denied" in refused["reason"]
    assert relayed("reopen", "reader")["status"] == 2
    assert relayed("reopen", "admin")["status"] == 0
    assert relayed("rotate", "admin", acct_file=str(a.logdir / "acct.csv"))["status"] == 0
    assert relayed("hello", "admin") == {"request": "reply", "status": 1, "reason": "unknown request"}
    with ternipc.Connection(a.socket, timeout=10) as tail:
        tail.send({"request": "acctd.tail", "role": "reader"})
        assert tail.receive()["reason"] == "following"
        f = Feeder(a)
        f.send(1, "d", **delivery(1))
        assert tail.receive()["seq"] == 1


def test_socket_handed_over_by_master(acctd_factory):
    a = acctd_factory(DESIGN_BLOCK)
    (a.spool / "private").mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(a.socket))
    listener.listen(16)
    a.start(service_socket=listener)
    listener.close()
    f = Feeder(a)
    f.send(1, "d", **delivery(1))
    assert f.wait_ack(1) == 1
    a.stop()
    assert a.socket.exists(), "the socket is master's to remove"


def test_unknown_attribute_drops_the_client(acctd_factory):
    a = acctd_factory(DESIGN_BLOCK).start()
    f = Feeder(a)
    f.send(1, "d", rcpt="x@example.com", favouriteColour="blue")
    reply = f.conn.receive()
    assert reply["request"] == "error" and "favouriteColour" in reply["reason"]
    assert a.ready()


def test_live_stream_follows_written_records_and_resumes(acctd_factory):
    a = acctd_factory(DESIGN_BLOCK).start()
    f = Feeder(a)
    for seq in range(1, 6):
        f.send(seq, "d", **delivery(seq))
    f.wait_ack(5)
    tail = ternipc.Connection(a.socket, timeout=10)
    tail.send({"request": "tail", "seq": 2})
    reply = tail.receive()
    assert reply["status"] == 0 and reply["seq"] == 5
    got = [tail.receive() for _ in range(3)]
    assert [r["seq"] for r in got] == [3, 4, 5]
    assert got[0]["request"] == "record" and got[0]["record_type"] == "d"
    assert got[0]["rcpt"] == "user3@example.com" and got[0]["dlvTlsCipher"] == "TLS_AES_256_GCM_SHA384"
    for seq in range(6, 8):
        f.send(seq, "b", **delivery(seq))
    f.wait_ack(7)
    assert [tail.receive()["seq"] for _ in range(2)] == [6, 7]
    tail.close()
    # After a restart the ring is empty: the consumer is told what it missed.
    a.stop()
    a.start()
    with ternipc.Connection(a.socket, timeout=10) as tail:
        tail.send({"request": "tail", "seq": 4})
        reply = tail.receive()
        assert reply["status"] == 0 and "5 to 7 are no longer kept" in reply["reason"]
        f = Feeder(a)
        f.send(8, "d", **delivery(8))
        assert tail.receive()["seq"] == 8
