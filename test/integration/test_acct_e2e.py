"""Accounting end to end under master: mail sent with smtplib to smtpd goes
through qmgr and smtp to tern-sink, and acctd writes the d rows of the
DESIGN.md <acct-file> block.

Covers the TLS columns of a delivery over STARTTLS and of one in clear, and
the exactly-once promise of doc/accounting.md while acctd and qmgr are
killed with SIGKILL in turn under a stream of incoming mail."""
import collections
import csv
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time

import pytest

from conftest import TOP, wait_for

sys.path.insert(0, str(TOP / "test" / "sink"))
import ternsink  # noqa: E402

SINK = TOP / "test" / "sink" / "tern-sink"
BODY = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: acct e2e\r\n\r\nbody\r\n"

HEADER = ("type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,"
          "srcType,srcMta,dlvType,dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,"
          "envId,queue,vmtaPool,dlvTlsProtocol,dlvTlsCipher").split(",")

ACCT_BLOCK = """<acct-file {path}>
    records d, b
    record-fields d *, dlvTlsProtocol, dlvTlsCipher
    record-fields b *, dlvTlsProtocol, dlvTlsCipher
</acct-file>
<source 127.0.0.1>
    always-allow-relaying yes
</source>
"""


class Sink:
    """tern-sink on a free port of 127.0.0.1, recording to a JSON lines file."""

    def __init__(self, directory, *args):
        self.record = directory / f"sink{time.monotonic_ns()}.jsonl"
        self.proc = subprocess.Popen([sys.executable, str(SINK), "--record", str(self.record), *map(str, args)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        fields = self.proc.stdout.readline().split()
        assert fields[:1] == ["listening"], fields
        self.port = int(fields[2])

    def delivered(self):
        """Every recipient address of every message the sink accepted."""
        if not self.record.exists():
            return []
        return [r["address"] for m in ternsink.read_records(self.record, "message")
                if m.get("outcome") == "accepted" for r in m.get("rcpts", [])]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def sinks(tern):
    """Starts sinks in tern's directory; each is stopped by its pid at teardown."""
    started = []

    def make(*args):
        sink = Sink(tern.base, *args)
        started.append(sink)
        return sink

    yield make
    for sink in started:
        sink.stop()


@pytest.fixture
def cert(tern):
    """A self-signed certificate and its key for the TLS sink."""
    crt, key = tern.base / "sink-cert.pem", tern.base / "sink-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True, timeout=60)
    return crt, key


def route(domain, port):
    return f"<domain {domain}>\n    smtp-hosts [127.0.0.1]:{port}\n</domain>\n"


def configure(tern, routes):
    acct = tern.base / "acct" / "acct.csv"  # acctd makes the directory for its user
    tern.write_config(ACCT_BLOCK.format(path=acct) + routes + "<domain *>\n    retry-after 1s\n</domain>\n")
    return acct


def read_csv(acct):
    """The header and the rows of the accounting file (None, [] before it exists)."""
    if not acct.exists():
        return None, []
    with open(acct, newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    if not lines:
        return None, []
    return lines[0], [dict(zip(lines[0], row)) for row in lines[1:]]


def d_rows(acct):
    return [r for r in read_csv(acct)[1] if r.get("type") == "d"]


def test_design_acct_file_over_tls_and_plain(tern, sinks, cert):
    crt, key = cert
    tls = sinks("--tls-cert", crt, "--tls-key", key)
    plain = sinks("--no-starttls")
    acct = configure(tern, route("tls.example", tls.port) + route("plain.example", plain.port))
    tern.start()
    with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as s:
        refused = s.sendmail("a@example.org", ["u1@tls.example", "u2@plain.example"], BODY)
    assert refused == {}
    wait_for(lambda: "u1@tls.example" in tls.delivered() and "u2@plain.example" in plain.delivered(), 20,
             what="delivery at both sinks")
    rows = wait_for(lambda: len(d_rows(acct)) >= 2 and d_rows(acct), 20, what="two d rows")
    header, _ = read_csv(acct)
    assert header == HEADER
    assert len(rows) == 2, rows
    by_rcpt = {r["rcpt"]: r for r in rows}
    assert set(by_rcpt) == {"u1@tls.example", "u2@plain.example"}
    secure, clear = by_rcpt["u1@tls.example"], by_rcpt["u2@plain.example"]
    assert secure["dlvTlsProtocol"] == "TLSv1.3", secure
    assert secure["dlvTlsCipher"] != "", secure
    assert clear["dlvTlsProtocol"] == "" and clear["dlvTlsCipher"] == "", clear
    for row in rows:
        assert row["orig"] == "a@example.org"
        assert row["dsnAction"] == "relayed", row
        # PowerMTA's "name (ip)": the remote MTA, and the client by its EHLO name
        assert row["dsnMta"] == "127.0.0.1 (127.0.0.1)", row
        assert row["srcMta"].endswith(" (127.0.0.1)") and len(row["srcMta"]) > len(" (127.0.0.1)"), row


MAX_MESSAGES = 800
PACE = 0.02  # seconds between messages: a few hundred over the kill rounds
ROUNDS = 20
MIN_UPTIME = 1.3  # master counts a death within 1 s of starting as a failed start (crash throttle)


class Sender(threading.Thread):
    """Sends messages through smtpd, one recipient each, until stopped (or
    MAX_MESSAGES).  A message refused with 4xx (or cut off) is tried again
    under a new address, so an address is used once and only a 250 makes it
    accepted."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.accepted = []
        self.attempts = []
        self.temporary = 0
        self.failures = {}  # address: what its attempt ended with
        self.errors = []
        self.stop = threading.Event()

    def run(self):
        conn = None
        try:
            for i in range(MAX_MESSAGES):
                attempt = 0
                while not self.stop.is_set():
                    rcpt = f"m{i}a{attempt}@plain.example"
                    attempt += 1
                    self.attempts.append(rcpt)
                    try:
                        if conn is None:
                            conn = smtplib.SMTP("127.0.0.1", self.port, timeout=15)
                        refused = conn.sendmail("a@example.org", [rcpt], BODY)
                        assert refused == {}
                        self.accepted.append(rcpt)
                        time.sleep(PACE)
                        break
                    except (smtplib.SMTPException, OSError) as e:
                        code = getattr(e, "smtp_code", None)
                        if isinstance(e, smtplib.SMTPRecipientsRefused):
                            code = next(iter(e.recipients.values()))[0]
                        if code is not None and code >= 500:
                            raise
                        self.temporary += 1
                        self.failures[rcpt] = repr(e)
                        try:
                            if conn is not None:
                                conn.close()
                        except Exception:
                            pass
                        conn = None
                        time.sleep(0.05)
                if self.stop.is_set():
                    break
        except Exception as e:  # reported by the test
            self.errors.append(repr(e))
        finally:
            if conn is not None:
                try:
                    conn.quit()
                except Exception:
                    pass


def test_kill_9_acctd_and_qmgr_in_turn_under_load(tern, sinks):
    sink = sinks("--no-starttls")
    acct = configure(tern, route("plain.example", sink.port))
    tern.start()
    started = time.monotonic()
    up_since = {name: time.monotonic() for name in ("acctd", "qmgr")}
    sender = Sender(tern.port)
    sender.start()
    kills = collections.Counter()
    try:
        for n in range(ROUNDS):
            name = ("acctd", "qmgr")[n % 2]
            time.sleep(max(0.0, MIN_UPTIME - (time.monotonic() - up_since[name])))
            old = tern.service(name)["pids"]
            assert len(old) == 1, old
            os.kill(old[0], signal.SIGKILL)
            kills[name] += 1

            def restarted():
                s = tern.service(name)
                return s["ready"] == 1 and s["pids"] and s["pids"][0] != old[0]
            wait_for(restarted, 15, what=f"master restarting {name} (round {n + 1})")
            up_since[name] = time.monotonic()
            time.sleep(0.3)
    finally:
        sender.stop.set()
        sender.join(30)
    assert not sender.is_alive(), "the sender did not finish"
    assert not sender.errors, sender.errors
    assert kills == {"acctd": ROUNDS // 2, "qmgr": ROUNDS // 2}
    accepted = sender.accepted
    assert len(accepted) >= 100, len(accepted)
    assert len(set(accepted)) == len(accepted)

    wanted = set(accepted)
    wait_for(lambda: wanted <= set(sink.delivered()), 60, interval=0.5, what="every accepted recipient at the sink")
    wait_for(lambda: wanted <= {r["rcpt"] for r in d_rows(acct)}, 60, interval=0.5,
             what="a d row for every accepted recipient")
    time.sleep(1.0)  # a late duplicate row would show up now

    header, _ = read_csv(acct)
    assert header == HEADER
    rows = d_rows(acct)
    per_rcpt = collections.Counter(r["rcpt"] for r in rows)
    at_sink = collections.Counter(sink.delivered())
    missing = sorted(r for r in accepted if per_rcpt[r] == 0)
    duplicated = {r: c for r, c in per_rcpt.items() if c > 1}
    sink_dups = sum(c - 1 for r, c in at_sink.items() if r in wanted and c > 1)
    print(f"\naccepted {len(accepted)} messages ({len(sender.attempts)} attempts, {sender.temporary} "
          f"temporary failures), {sum(kills.values())} kills {dict(kills)}, {len(rows)} d rows, "
          f"{sink_dups} duplicate deliveries at the sink, {time.monotonic() - started:.1f}s, "
          f"{tern.log_text().count('replayed by smtp')} results replayed by smtp")
    assert not missing, f"{len(missing)} accepted recipients without a d row: {missing[:10]}"
    assert not duplicated, f"{len(duplicated)} recipients with several d rows: {list(duplicated.items())[:10]}"
    # Exactly once at the sink too: smtp replays what a killed qmgr never
    # committed, and qmgr holds those recipients until it has.
    twice = {r: at_sink[r] for r in accepted if at_sink[r] != 1}
    assert not twice, f"{len(twice)} recipients not delivered exactly once: {list(twice.items())[:10]}"
    assert sink_dups == 0
    # Only attempts smtpd may have taken without our seeing the 250 can add rows.
    stray = set(per_rcpt) - wanted
    for r in sorted(stray):
        print(f"row for an attempt not acknowledged with 250: {r}: {sender.failures.get(r)}")
    assert stray <= set(sender.attempts), sorted(stray - set(sender.attempts))[:10]
    for r in rows:
        assert r["dsnAction"] == "relayed", r


def test_a_burst_of_records_leaves_the_outbox(tern, sinks):
    """Four hundred deliveries in a burst: acctd confirms their records in
    batches of hundreds, every recipient gets one d row and qmgr's outbox
    empties."""
    sink = sinks("--no-starttls")
    acct = configure(tern, route("plain.example", sink.port))
    tern.start()
    rcpts = [f"r{i}@plain.example" for i in range(400)]
    with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
        for n in range(0, len(rcpts), 100):
            s.sendmail("a@example.org", rcpts[n:n + 100], BODY)
    wait_for(lambda: set(rcpts) <= set(sink.delivered()), 60, interval=0.5, what="every recipient at the sink")
    wait_for(lambda: len(d_rows(acct)) >= len(rcpts), 30, interval=0.2, what="a d row for every recipient")
    per_rcpt = collections.Counter(r["rcpt"] for r in d_rows(acct))
    assert per_rcpt == collections.Counter(rcpts)
    wait_for(lambda: tern.ctl("show", "status", "--json").json()["accounting"]["pending"] == 0, 10,
             what="the outbox to drain")
