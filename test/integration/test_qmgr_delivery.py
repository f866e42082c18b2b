"""Integration tests of qmgr's scheduler: the real qmgr and smtp daemons
standalone on one spool, tern-sink as the remote side (static routes to
127.0.0.1), messages handed to qmgr over its enqueue socket.

Covers: delivery and its accounting records, per-recipient 4xx and 5xx,
connection failures retried per retry-after, bounce-after expiry and its
RFC 3464 DSN (none for <> or NOTIFY=NEVER), the outbox reaching acctd,
kill -9 of qmgr and of smtp while deliveries run (every recipient ends
delivered or bounced), a reload, and the whole path under master."""
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import TOP, ensure_tern_user, wait_for
import ternqmgr
from test_qmgr_enqueue import QMGR, Qmgr

sys.path.insert(0, str(TOP / "test" / "sink"))
import ternsink  # noqa: E402

SMTP = pathlib.Path(os.environ.get("TERN_SMTP", TOP / "smtp" / "smtp"))
SINK = TOP / "test" / "sink" / "tern-sink"
BODY = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hello\r\n\r\nbody\r\n"

pytestmark = pytest.mark.skipif(not SMTP.exists(), reason="the smtp delivery agent is not built")


class Sink:
    def __init__(self, directory, *args):
        self.record = directory / f"sink{time.monotonic_ns()}.jsonl"
        self.proc = subprocess.Popen([sys.executable, str(SINK), "--record", str(self.record), *map(str, args)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        fields = self.proc.stdout.readline().split()
        assert fields[:1] == ["listening"], fields
        self.port = int(fields[2])

    def records(self, type=None):
        return ternsink.read_records(self.record, type)

    def delivered(self):
        """Every recipient address the sink accepted a message for."""
        return [r["address"] for m in self.records("message") if m.get("outcome") == "accepted"
                for r in m.get("rcpts", [])]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc.stdout.close()


class Queue(Qmgr):
    """qmgr plus smtp on one spool, with our own configuration."""

    def __init__(self, base, text):
        super().__init__(base / "spool", log_dir=base)
        self.base = base
        self.text = text
        self.smtp = None

    def write_config(self):
        # qmgr makes only the record types some accounting file holds: unless
        # a test names its own, one file holds every type qmgr makes.
        every_type = "" if "<acct-file" in self.text else \
            f"<acct-file {self.base}/log/all.csv>\n  records r, d, b, t, tq\n</acct-file>\n"
        self.config.write_text(f"spool {self.spool}\nsync-msg-create yes\nhost-name client.tern.test\n"
                               + self.text + every_type)

    def start(self, timeout=20):
        super().start(timeout)
        if self.smtp is None:
            self.start_smtp()

    def start_smtp(self):
        log = open(self.base / "smtp.log", "ab")
        args = [str(SMTP), "-f", "-c", str(self.config)]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        self.smtp = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        # qmgr tries smtp's socket once a second: a test whose recipients
        # expire within seconds must not lose one of those tries to smtp's
        # start-up (slow under the sanitizers).
        wait_for(self.smtp_accepts, 20, what="smtp listening")

    def smtp_accepts(self):
        assert self.smtp.poll() is None, f"smtp exited with {self.smtp.returncode}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.spool / "private" / "smtp"))
            except OSError:
                return False
        return True

    def enqueue(self, sender, rcpts, body=BODY, **env):
        with ternqmgr.EnqueueClient(self.socket) as c:
            reply = c.enqueue(sender, rcpts, body, **env)
        assert reply["status"] == 250, reply
        return reply["queue_id"]

    def stop_all(self):
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        if self.smtp and self.smtp.poll() is None:
            self.smtp.send_signal(signal.SIGTERM)
            self.smtp.wait(10)


@pytest.fixture
def base(tmp_path_factory):
    import shutil
    import tempfile
    path = pathlib.Path(tempfile.mkdtemp(prefix="tern-qmgr-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def setup(base):
    started = []

    def make(domain_text, *sink_args):
        sink = Sink(base, *sink_args)
        q = Queue(base, domain_text.replace("PORT", str(sink.port)) + "</domain>\n")
        started.append((q, sink))
        q.start()
        return q, sink

    yield make
    for q, sink in started:
        q.stop_all()
        sink.stop()


def outbox(q):
    """The outbox lines of `qmgr -L`, split: outbox, seq, type, qid, index."""
    return [line.split("\t") for line in q.offline("-L").decode().splitlines() if line.startswith("outbox\t")]


ROUTE = "<domain example.net>\n  smtp-hosts [127.0.0.1]:PORT\n"


def test_delivery_writes_d_records_and_empties_the_queue(setup):
    q, sink = setup(ROUTE)
    qid = q.enqueue("a@example.org", ["one@example.net", "two@example.net"])
    wait_for(lambda: sorted(sink.delivered()) == ["one@example.net", "two@example.net"], 15,
             what="delivery")
    wait_for(lambda: "delivered" in q.log() and q.log().count(f"{qid}: recipient") >= 2, 10, what="results")
    q.stop()
    listing = q.offline("-L").decode()
    assert f"message\t{qid}" not in listing  # done: nothing of it stays
    types = [line.split("\t")[2] for line in listing.splitlines() if line.startswith("outbox\t")]
    assert sorted(types) == ["d", "d", "r", "r"]


def delivered_and_stopped(q, sink, rcpts):
    """Enqueues one message, waits for its delivery and results, stops qmgr;
    the message's outbox record types, sorted."""
    qid = q.enqueue("a@example.org", rcpts)
    wait_for(lambda: set(rcpts) <= set(sink.delivered()), 15, what="delivery")
    wait_for(lambda: q.log().count(f"{qid}: recipient") >= len(rcpts), 10, what="results")
    q.stop()
    return sorted(f[2] for f in outbox(q) if f[3] == qid)


def test_only_record_types_an_accounting_file_holds_are_made(setup, base):
    """records d: no r record goes into the outbox; a reload that adds r
    to the file makes them for the next message."""
    acct = "</domain>\n<acct-file " + str(base / "log" / "acct.csv") + ">\n  records RECORDS\n</acct-file>\n" \
        "<domain example.net>\n"
    q, sink = setup(ROUTE + acct.replace("RECORDS", "d"))
    assert delivered_and_stopped(q, sink, ["one@example.net", "two@example.net"]) == ["d", "d"]
    q.start()
    q.text = q.text.replace("records d\n", "records receipt, d\n")
    q.write_config()
    q.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in q.log(), 10, what="the reload")
    assert delivered_and_stopped(q, sink, ["three@example.net"]) == ["d", "r"]


def test_a_stop_waits_for_the_result_of_a_running_job(setup):
    """SIGTERM while smtp is mid-transaction: qmgr starts nothing new, takes
    the result when it comes and only then exits, so the delivery is on
    record and nothing goes twice after the restart."""
    q, sink = setup(ROUTE, "--rule", '{"command": "EOD", "delay": 1.5}')
    qid = q.enqueue("a@example.org", ["one@example.net"])
    wait_for(lambda: sink.records("connect"), 15, what="the job's connection")
    q.stop()
    assert sink.delivered() == ["one@example.net"]
    listing = q.offline("-L").decode()
    assert f"message\t{qid}" not in listing
    assert sorted(f[2] for f in outbox(q) if f[3] == qid) == ["d", "r"]


def test_a_stop_waits_for_a_hung_job_only_so_long(setup):
    """A job that never ends holds a stop for a few seconds, not for ever;
    its recipient stays queued for the next start."""
    q, sink = setup(ROUTE, "--rule", '{"command": "EOD", "action": "hang"}')
    qid = q.enqueue("a@example.org", ["one@example.net"])
    wait_for(lambda: sink.records("connect"), 15, what="the job's connection")
    q.stop()
    assert "stopping with 1 jobs" in q.log()
    listing = q.offline("-L").decode()
    assert f"message\t{qid}" in listing
    assert "one@example.net" not in sink.delivered()


def test_4xx_is_retried_and_5xx_bounced(setup):
    q, sink = setup(ROUTE + "  retry-recipients-after 1s\n",
                    "--rcpt", "^bad@=550 5.1.1 no such user",
                    "--rule", '{"command": "RCPT", "times": 1, "match": "^busy@", "reply": "450 4.2.0 busy"}')
    qid = q.enqueue("a@example.org", ["busy@example.net", "bad@example.net"])
    wait_for(lambda: "busy@example.net" in sink.delivered(), 20, what="the retry")
    assert "bad@example.net" not in sink.delivered()
    q.stop()
    types = sorted(f[2] for f in outbox(q) if f[3] == qid)
    assert types == ["b", "d", "r", "r", "t"]


def test_a_message_whose_body_cannot_be_read_waits_and_holds_up_no_other(setup):
    # The victim's body is the first thing in the queue's only segment;
    # after its first (4xx) attempt one of its bytes is flipped, with qmgr
    # stopped: a running qmgr reads what it just wrote from memory.
    q, sink = setup(ROUTE + "  retry-recipients-after 2s\n  bounce-after 7s\n",
                    "--rule", '{"command": "RCPT", "match": "^victim@", "reply": "450 4.2.0 later"}')
    victim = q.enqueue("", ["victim@example.net"])  # null sender: no DSN
    wait_for(lambda: f"{victim}: recipient 0, queue example.net/{{default}}: deferred" in q.log(), 15,
             what="the first attempt")
    q.stop()
    [segment] = [p for p in (q.spool / "queue" / "bodies").iterdir() if not p.name.startswith("spare-")]
    with open(segment, "r+b") as f:
        f.seek(10)
        byte = f.read(1)
        f.seek(10)
        f.write(bytes([byte[0] ^ 0xFF]))
    q.start()
    q.enqueue("a@example.org", ["ok@example.net"])
    wait_for(lambda: "ok@example.net" in sink.delivered(), 15, what="the other message")
    wait_for(lambda: f"{victim}: recipient 0, queue example.net/{{default}}: bounced" in q.log(), 20,
             what="the expiry")
    log = q.log()
    unreadable = log.count(f"{victim}: the body cannot be read")
    assert 1 <= unreadable <= 4, unreadable  # once per retry-recipients-after, not per pass
    assert "checksum mismatch" in log
    assert "victim@example.net" not in sink.delivered()


def test_connection_failures_follow_retry_after_then_expire(setup, base):
    # Nothing listens on the route's port: every attempt is a queue-level
    # failure; bounce-after ends it.
    q, sink = setup("<domain example.net>\n  smtp-hosts [127.0.0.1]:1\n"
                    "  retry-after 1s, 2s\n  bounce-after 5s\n")
    qid = q.enqueue("", ["x@example.net"])  # null sender: no DSN
    wait_for(lambda: f"{qid}: recipient 0, queue example.net/{{default}}: bounced" in q.log(), 20,
             what="the expiry")
    log = q.log()
    assert "DSN" not in log  # never one for a null sender
    assert log.count("queue example.net/{default}: connect-failed") >= 2
    assert "next retry in 1s" in log and "next retry in 2s" in log
    q.stop()
    listing = q.offline("-L").decode()
    types = [line.split("\t")[2] for line in listing.splitlines() if line.startswith("outbox\t")]
    assert types[0] == "r" and types[-1] == "b" and "tq" in types


def test_kill_9_during_deliveries_loses_nothing(setup):
    q, sink = setup(ROUTE + "  max-smtp-out 4\n", "--delay", "0.05")
    rcpts = [f"r{i}@example.net" for i in range(60)]
    for i in range(0, 60, 3):
        q.enqueue("a@example.org", rcpts[i:i + 3])
    wait_for(lambda: len(sink.delivered()) >= 3, 10, what="deliveries under way")
    q.kill()
    before = len(sink.delivered())
    q.proc = None
    q.start()
    wait_for(lambda: set(sink.delivered()) == set(rcpts), 30, what="every recipient delivered")
    q.stop()
    listing = q.offline("-L").decode()
    assert "message\t" not in listing
    delivered = sink.delivered()
    # smtp goes on without qmgr and replays the results the kill cut off:
    # nothing is sent twice.
    twice = len(delivered) - len(set(delivered))
    print(f"\nkill -9 during delivery ({before} delivered before it): {len(set(delivered))} recipients "
          f"delivered, {twice} sent again")
    assert twice == 0


def test_expiry_sends_an_rfc3464_dsn_unless_notify_never(setup):
    import email
    q, sink = setup("<domain example.net>\n  smtp-hosts [127.0.0.1]:PORT\n  bounce-after 2s\n"
                    "  retry-recipients-after 1s\n</domain>\n<domain example.org>\n"
                    "  smtp-hosts [127.0.0.1]:PORT\n",
                    "--rcpt", "^(late|quiet)@=450 4.2.0 try later")
    qid = q.enqueue("sender@example.org", [("late@example.net", {"orcpt": "rfc822;Late@example.net"}),
                                           ("quiet@example.net", {"notify": "NEVER"})],
                    envid="ENV-1", ret="HDRS")
    dsns = wait_for(lambda: [m for m in sink.records("message") if m["mail_from"] == ""], 20, what="the DSN")
    time.sleep(1.5)
    assert len([m for m in sink.records("message") if m["mail_from"] == ""]) == 1  # none for NEVER
    assert [r["address"] for r in dsns[0]["rcpts"]] == ["sender@example.org"]
    msg = email.message_from_string(dsns[0]["data"])
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    human, status, original = msg.get_payload()
    assert human.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_rcpt = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; client.tern.test"
    assert per_message["Original-Envelope-Id"] == "ENV-1"
    assert per_rcpt["Final-Recipient"] == "rfc822; late@example.net"
    assert per_rcpt["Original-Recipient"] == "rfc822; Late@example.net"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "4.4.7"
    assert "4.2.0 try later" in per_rcpt["Diagnostic-Code"]
    assert original.get_content_type() == "text/rfc822-headers"
    assert "Subject: hello" in original.get_payload()
    assert qid in q.log()


ACCTD = pathlib.Path(os.environ.get("TERN_ACCTD", TOP / "acctd" / "acctd"))


@pytest.mark.skipif(not ACCTD.exists(), reason="acctd is not built")
def test_outbox_reaches_acctd_once_it_is_up_and_is_emptied(setup, base):
    import csv
    q, sink = setup(ROUTE + "</domain>\n<acct-file " + str(base / "log" / "acct.csv") + ">\n"
                    "  records r, d\n</acct-file>\n<domain example.net>\n")
    qid = q.enqueue("a@example.org", ["one@example.net", "two@example.net"])
    wait_for(lambda: len(sink.delivered()) == 2, 15, what="delivery")
    # acctd was down all along: the records waited; now it comes up.
    log = open(base / "acctd.log", "ab")
    args = [str(ACCTD), "-f", "-c", str(q.config)] + (["-u", "nobody"] if os.geteuid() == 0 else [])
    acctd = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=dict(os.environ, TZ="UTC"))
    log.close()
    try:
        path = base / "log" / "acct.csv"

        def rows():
            if not path.exists():
                return []
            return list(csv.DictReader(path.read_text().splitlines()))
        got = wait_for(lambda: len(rows()) == 4 and rows(), 20, what="4 accounting rows")
        assert sorted(r["type"] for r in got) == ["d", "d", "r", "r"]
        d = [r for r in got if r["type"] == "d"]
        assert {r["rcpt"] for r in d} == {"one@example.net", "two@example.net"}
        assert all(r["orig"] == "a@example.org" and r["dsnAction"] == "relayed" and r["dsnStatus"].startswith("2.")
                   and r["dlvDestinationIp"] == "127.0.0.1" for r in d)
        q.stop()
        assert outbox(q) == []
    finally:
        acctd.send_signal(signal.SIGTERM)
        acctd.wait(10)


def test_smtplib_to_sink_through_every_daemon_under_master(tern, base):
    """A user's session: a message sent with smtplib to smtpd comes out of
    smtp at the sink, and acctd writes its r and d lines."""
    import csv
    import smtplib
    sink = Sink(base)
    try:
        acct = tern.base / "acct" / "acct.csv"  # acctd makes the directory for its user
        tern.write_config(f"<domain example.net>\n  smtp-hosts [127.0.0.1]:{sink.port}\n</domain>\n"
                          f"<acct-file {acct}>\n  records r, d\n</acct-file>\n"
                          "<source 127.0.0.1>\n  always-allow-relaying yes\n</source>\n")
        tern.start()
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as s:
            s.sendmail("a@example.org", ["u1@example.net", "u2@example.net"], BODY)
        wait_for(lambda: sorted(sink.delivered()) == ["u1@example.net", "u2@example.net"], 15, what="delivery")

        def rows():
            return list(csv.DictReader(acct.read_text().splitlines())) if acct.exists() else []
        got = wait_for(lambda: len(rows()) == 4 and rows(), 15, what="accounting")
        assert sorted(r["type"] for r in got) == ["d", "d", "r", "r"]
        status = tern.ctl("show", "status", "--json").json()
        assert status["traffic"]["total"]["out"]["rcp"] == 2
    finally:
        sink.stop()


def test_reload_applies_new_queue_settings(setup):
    """max-smtp-out 0 holds the queue; after SIGHUP with the hold gone the
    message goes out."""
    q, sink = setup(ROUTE + "  max-smtp-out 0\n")
    q.enqueue("a@example.org", ["held@example.net"])
    time.sleep(1.5)
    assert sink.delivered() == []
    q.text = q.text.replace("  max-smtp-out 0\n", "")
    q.write_config()
    q.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: sink.delivered() == ["held@example.net"], 10, what="delivery after the reload")
    wait_for(lambda: "configuration reloaded" in q.log(), what="the reload in the log")


def fresh_and_marked(log):
    """The (jobs, recipients) qmgr reports at its stop for fresh jobs and
    for jobs marked in flight by a scheduling pass."""
    counts = []
    for what in ("fresh jobs", "in-flight marks"):
        m = re.search(what + r": (\d+) jobs, (\d+) recipients", log)
        counts.append((int(m.group(1)), int(m.group(2))) if m else (0, 0))
    return counts


def test_new_messages_for_a_queue_with_room_go_out_in_fresh_jobs(setup):
    """Once the queue exists, a new message for it, with a connection to
    spare and nothing older due, is written in flight by its own commit
    and handed to smtp from memory: no scheduling pass reads it back or
    marks it.  Nothing stays in the queue."""
    q, sink = setup(ROUTE)
    q.enqueue("a@example.org", ["first@example.net"])  # makes the queue
    wait_for(lambda: sink.delivered() == ["first@example.net"], 15, what="the first delivery")
    rcpts = [f"f{i}@example.net" for i in range(6)]
    for i in range(0, 6, 2):
        q.enqueue("a@example.org", rcpts[i:i + 2])
        wait_for(lambda: set(rcpts[:i + 2]) <= set(sink.delivered()), 15, what="a delivery")
    done = re.compile(r"^.*?(\w{16}): recipient (\d+), queue [^:]*: delivered", re.M)
    wait_for(lambda: len(done.findall(q.log())) == 7, 10, what="every result recorded")
    q.stop()
    fresh, marked = fresh_and_marked(q.log())
    assert fresh == (3, 6) and marked == (1, 1)
    assert sorted(sink.delivered()) == sorted(["first@example.net"] + rcpts)  # each once
    assert "message\t" not in q.offline("-L").decode()


def test_a_queue_without_room_takes_new_messages_in_its_turn(setup):
    """With its one connection busy, a queue's new messages are due at
    once, not held for a job: the scheduling pass sends them when the
    connection is free, each once."""
    q, sink = setup(ROUTE + "  max-smtp-out 1\n", "--delay", "0.3")
    q.enqueue("a@example.org", ["first@example.net"])
    wait_for(lambda: sink.delivered() == ["first@example.net"], 15, what="the first delivery")
    rcpts = [f"w{i}@example.net" for i in range(5)]
    for r in rcpts:
        q.enqueue("a@example.org", [r])
    wait_for(lambda: set(rcpts) <= set(sink.delivered()), 30, what="every delivery")
    done = re.compile(r"^.*?(\w{16}): recipient (\d+), queue [^:]*: delivered", re.M)
    wait_for(lambda: len(done.findall(q.log())) == 6, 10, what="every result recorded")
    q.stop()
    fresh, marked = fresh_and_marked(q.log())
    # at most one of the five found the connection free; the rest were
    # marked by a pass (as the first was: its queue was new)
    assert marked[1] >= 5 and fresh[1] + marked[1] == 6
    assert sorted(sink.delivered()) == sorted(["first@example.net"] + rcpts)
    assert "message\t" not in q.offline("-L").decode()


def test_smtp_killed_mid_job_its_recipients_are_retried(setup, base):
    """A dead smtp replays nothing: its recipients wait in-flight-grace,
    then go again."""
    # One connection: at most one message is in its final dot at the kill.
    q, sink = setup("in-flight-grace 3s\n" + ROUTE + "  max-smtp-out 1\n", "--delay", "0.05")
    rcpts = [f"k{i}@example.net" for i in range(30)]
    for i in range(0, 30, 3):
        q.enqueue("a@example.org", rcpts[i:i + 3])
    wait_for(lambda: len(sink.delivered()) >= 3, 10, what="deliveries under way")
    q.smtp.kill()
    q.smtp.wait(10)
    q.smtp = None
    q.start_smtp()
    wait_for(lambda: set(sink.delivered()) == set(rcpts), 30, what="every recipient delivered")
    wait_for(lambda: "smtp connection lost" in q.log(), 5, what="the loss noticed")
    # The sink may have had a message whose result died with smtp: qmgr
    # holds its recipients for in-flight-grace and sends them again.
    done = re.compile(r"^.*?(\w{16}): recipient (\d+), queue [^:]*: delivered", re.M)
    wait_for(lambda: len(set(done.findall(q.log()))) == len(rcpts), 30, what="every recipient final in qmgr")
    # at most the message in its final dot when smtp died is sent twice
    assert len(sink.delivered()) - len(rcpts) <= 3
    q.stop()
    assert "message\t" not in q.offline("-L").decode()


def test_notify_delay_sends_a_delay_notice_per_interval(setup):
    import email
    q, sink = setup(ROUTE + "  retry-recipients-after 1s\n  notify-of-delay-every 2s\n</domain>\n"
                    "<domain example.org>\n  smtp-hosts [127.0.0.1]:PORT\n",
                    "--rcpt", "^(slow|plain)@=450 4.2.0 try later")
    q.enqueue("sender@example.org", [("slow@example.net", {"notify": "DELAY,FAILURE"}), "plain@example.net"])
    dsns = wait_for(lambda: [m for m in sink.records("message") if m["mail_from"] == ""], 15,
                    what="a delay notice")
    msg = email.message_from_string(dsns[0]["data"])
    _, status, _ = msg.get_payload()
    per_rcpt = status.get_payload()[1]
    assert per_rcpt["Action"] == "delayed" and per_rcpt["Final-Recipient"] == "rfc822; slow@example.net"
    assert per_rcpt["Status"] == "4.2.0"
    assert msg["Subject"].startswith("Delayed Mail")
    # none for the recipient without NOTIFY=DELAY, and no second one within the interval
    time.sleep(0.5)
    assert all("plain@" not in m["data"] for m in sink.records("message") if m["mail_from"] == "")


def test_recipients_failing_together_get_one_dsn_listing_them(setup):
    import email
    q, sink = setup(ROUTE + "</domain>\n<domain example.org>\n  smtp-hosts [127.0.0.1]:PORT\n",
                    "--rcpt", "^(x|y|z|n)@=550 5.1.1 no such user")
    qid = q.enqueue("sender@example.org", ["x@example.net", "y@example.net", "z@example.net",
                                           ("n@example.net", {"notify": "NEVER"})])
    wait_for(lambda: [m for m in sink.records("message") if m["mail_from"] == ""], 20, what="the DSN")
    time.sleep(1.5)
    dsns = [m for m in sink.records("message") if m["mail_from"] == ""]
    assert len(dsns) == 1
    msg = email.message_from_string(dsns[0]["data"])
    assert msg.get_content_type() == "multipart/report"
    human, status, _ = msg.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    per_message, *per_rcpt = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; client.tern.test"
    assert [r["Final-Recipient"] for r in per_rcpt] == [f"rfc822; {a}@example.net" for a in "xyz"]
    assert all(r["Action"] == "failed" and r["Status"] == "5.1.1" for r in per_rcpt)
    assert all("no such user" in r["Diagnostic-Code"] for r in per_rcpt)
    assert all(f"<{a}@example.net>" in human.get_payload() for a in "xyz")
    assert "n@example.net" not in dsns[0]["data"]  # NOTIFY=NEVER
    wait_for(lambda: f"{qid}: DSN" in q.log(), what="the DSN in the log")


def dsns_in(sink):
    return [m for m in sink.records("message") if m["mail_from"] == ""]


TWO_DOMAINS = (ROUTE + "</domain>\n<domain example.com>\n  smtp-hosts [127.0.0.1]:PORT\n</domain>\n"
               "<domain example.org>\n  smtp-hosts [127.0.0.1]:PORT\n")


def test_failures_of_one_message_in_two_queues_share_one_dsn(setup):
    """Three recipients at two domains (two queues, two jobs) all bounce:
    one DSN with three per-recipient blocks."""
    import email
    q, sink = setup(TWO_DOMAINS, "--rcpt", "^(x|y|w)@=550 5.1.1 no such user")
    qid = q.enqueue("sender@example.org", ["x@example.net", "w@example.com", "y@example.net"])
    wait_for(lambda: dsns_in(sink), 20, what="the DSN")
    time.sleep(1.5)
    dsns = dsns_in(sink)
    assert len(dsns) == 1, [d["data"][:200] for d in dsns]
    assert [r["address"] for r in dsns[0]["rcpts"]] == ["sender@example.org"]
    msg = email.message_from_string(dsns[0]["data"])
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    human, status, original = msg.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    per_message, *per_rcpt = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; client.tern.test"
    assert sorted(r["Final-Recipient"] for r in per_rcpt) == [
        "rfc822; w@example.com", "rfc822; x@example.net", "rfc822; y@example.net"]
    assert all(r["Action"] == "failed" and r["Status"] == "5.1.1" for r in per_rcpt)
    assert all(r["Remote-MTA"] == "dns; 127.0.0.1" for r in per_rcpt)
    assert original.get_content_type() == "text/rfc822-headers"
    wait_for(lambda: f"{qid}: DSN" in q.log(), what="the DSN in the log")
    q.stop()
    assert "message\t" not in q.offline("-L").decode()  # the message went with its DSN


def test_a_pending_dsn_survives_a_kill_9_of_qmgr(setup):
    """A bounce whose DSN waits for the message's other recipient (still
    deferred) is state in the queue: a killed qmgr queues it after its
    restart, once, with the bounce in it."""
    import email
    q, sink = setup(TWO_DOMAINS + "  retry-recipients-after 1h\n",
                    "--rcpt", "^x@=550 5.1.1 no such user", "--rcpt", "^later@=450 4.2.0 try later")
    q.enqueue("sender@example.org", ["x@example.net", "later@example.com"])
    wait_for(lambda: "recipient 0" in q.log() and "recipient 1" in q.log(), 15, what="both results")
    assert dsns_in(sink) == []  # the deferred recipient is still waiting: so is the DSN
    q.kill()
    q.proc = None
    q.start()
    wait_for(lambda: dsns_in(sink), 25, what="the DSN after the restart")
    time.sleep(1.5)
    dsns = dsns_in(sink)
    assert len(dsns) == 1
    status = email.message_from_string(dsns[0]["data"]).get_payload()[1]
    assert [r["Final-Recipient"] for r in status.get_payload()[1:]] == ["rfc822; x@example.net"]


def test_qmgr_and_smtp_killed_recipients_in_flight_go_after_grace(setup):
    """Both killed in the middle of a job: nothing is replayed, and the
    restarted qmgr finds the recipients in flight for a job of its
    earlier start; they go again once in-flight-grace has passed."""
    q, sink = setup("in-flight-grace 3s\n" + ROUTE, "--delay", "0.4")
    rcpts = [f"h{i}@example.net" for i in range(4)]
    for rcpt in rcpts:
        q.enqueue("a@example.org", [rcpt])
    time.sleep(1.0)  # the first in its session, the others in flight behind it
    q.smtp.kill()
    q.smtp.wait(10)
    q.smtp = None
    q.kill()
    q.proc = None
    q.start()
    held = re.compile(r"(\d+) recipients in flight before this start")
    wait_for(lambda: held.search(q.log()), 10, what="the held recipients found")
    assert int(held.search(q.log()).group(1)) >= 1
    wait_for(lambda: set(sink.delivered()) == set(rcpts), 30, what="every recipient delivered")
    done = re.compile(r"^.*?(\w{16}): recipient (\d+), queue [^:]*: delivered", re.M)
    wait_for(lambda: len(set(done.findall(q.log()))) == len(rcpts), 30, what="every recipient final in qmgr")
    # at most the message in its final dot at the kill is sent twice
    assert len(sink.delivered()) - len(rcpts) <= 1
    q.stop()
    assert "message\t" not in q.offline("-L").decode()


def test_qmgr_killed_mid_job_smtp_replays_and_nothing_goes_twice(setup, base):
    """qmgr is killed while smtp is in the middle of a slow session: smtp
    ends the transaction under way, gives back what it had not begun and
    replays every result to the restarted qmgr, which sends the rest once.
    in-flight-grace is an hour: only the replay can release them."""
    q, sink = setup("in-flight-grace 1h\n" + ROUTE, "--delay", "0.4")
    rcpts = ["a1@example.net", "a2@example.net", "b1@example.net", "c1@example.net"]
    q.enqueue("a@example.org", rcpts[:2])
    q.enqueue("a@example.org", rcpts[2:3])
    q.enqueue("a@example.org", rcpts[3:])
    time.sleep(1.5)  # connected, somewhere in the first transaction
    q.kill()
    q.proc = None
    q.start()
    wait_for(lambda: sorted(set(sink.delivered())) == sorted(rcpts), 30, what="every recipient delivered")
    time.sleep(2)
    assert sorted(sink.delivered()) == sorted(rcpts)  # once each
    smtp_log = (base / "smtp.log").read_text(errors="replace")
    assert "goes on without qmgr" in smtp_log
    wait_for(lambda: "replayed by smtp" in q.log(), 10, what="the replay applied")
    q.stop()
    assert "message\t" not in q.offline("-L").decode()
