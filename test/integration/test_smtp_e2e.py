"""Outbound policy end to end, under master with every daemon: qmgr's
scheduler hands the jobs to smtp, which meets tern-sink.  A domain that
requires STARTTLS never gets a byte of the message from a server without
it, and bounces after bounce-after with a DSN to the sender; max-smtp-out
bounds the connections to a destination."""
import email
import email.policy
import re
import smtplib

from conftest import wait_for
from test_qmgr_delivery import Sink


def mail(tern, sender, rcpts, subject="e2e"):
    body = f"From: {sender}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()
    with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
        assert s.sendmail(sender, rcpts, body) == {}


def test_require_starttls_defers_then_bounces_without_sending_in_clear(tern):
    plain = Sink(tern.base, "--no-starttls")
    senders = Sink(tern.base, "--no-starttls")  # where the DSN goes
    try:
        tern.write_config(
            "<source 127.0.0.1>\n    always-allow-relaying yes\n</source>\n"
            f"<domain secure.example>\n    smtp-hosts [127.0.0.1]:{plain.port}\n    use-starttls yes\n"
            "    require-starttls yes\n    retry-after 1s\n    bounce-after 4s\n</domain>\n"
            f"<domain sender.example>\n    smtp-hosts [127.0.0.1]:{senders.port}\n</domain>\n")
        tern.start()
        mail(tern, "alice@sender.example", ["bob@secure.example"])
        # Deferred and retried: several sessions, none ever past EHLO.
        wait_for(lambda: len(plain.records("session")) >= 2, 15, what="a retry")
        dsn = wait_for(lambda: [m for m in senders.records("message") if m.get("outcome") == "accepted"], 30,
                       what="the DSN")
        for session in plain.records("session"):
            verbs = [c["verb"] for c in session["commands"]]
            assert "EHLO" in verbs, session
            assert not {"MAIL", "RCPT", "DATA", "BDAT"} & set(verbs), session
        assert plain.delivered() == []
        assert dsn[0]["mail_from"] == ""  # a DSN has the null sender
        assert [r["address"] for r in dsn[0]["rcpts"]] == ["alice@sender.example"]
        report = email.message_from_string(dsn[0]["data"], policy=email.policy.default)
        assert report.get_content_type() == "multipart/report"
        status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
        text = status.as_string()
        assert "bob@secure.example" in text and "Action: failed" in text
        assert "STARTTLS required" in text
        r = tern.ctl("show", "queues", "--json")
        assert r.rc == 0, r.err
    finally:
        plain.stop()
        senders.stop()


def test_max_smtp_out_bounds_connections(tern):
    sink = Sink(tern.base, "--delay", "0.05")
    try:
        tern.write_config("<source 127.0.0.1>\n    always-allow-relaying yes\n</source>\n"
                          f"<domain busy.example>\n    smtp-hosts [127.0.0.1]:{sink.port}\n"
                          "    max-smtp-out 3\n    max-msg-per-connection 5\n</domain>\n")
        tern.start()
        rcpts = [f"user{i}@busy.example" for i in range(50)]
        for r in rcpts:
            mail(tern, "alice@tern.test", [r])
        wait_for(lambda: sorted(set(sink.delivered())) == sorted(rcpts), 60, what="all 50 delivered")
        most = max(c.get("max_concurrent", c.get("concurrent", 0)) for c in sink.records("connect"))
        assert 1 <= most <= 3, most
    finally:
        sink.stop()


def test_bdat_window_into_our_own_smtpd(tern, tmp_path):
    """smtp's window (RSET, MAIL, RCPT, BDAT LAST behind one another,
    before any reply) against tern's own smtpd: every message of the job
    gets its own verdict, a refused recipient refuses only its chunk, and
    what was accepted is relayed on."""
    from test_smtp_harness import Agent
    sink = Sink(tern.base, "--no-starttls")
    agent = Agent(tmp_path)
    try:
        tern.write_config("<source 127.0.0.1>\n    always-allow-relaying yes\n</source>\n"
                          f"<domain final.example>\n    smtp-hosts [127.0.0.1]:{sink.port}\n</domain>\n")
        tern.start()
        agent.start(f"<domain relay.example>\n  smtp-hosts [127.0.0.1]:{tern.port}\n  use-starttls no\n"
                    "</domain>\n")
        msgs = [{"queue_id": f"M{i}", "rcpts": [f"r{i}@final.example"],
                 "body": f"Subject: m{i}\n\nbody {i}\n".encode()} for i in range(5)]
        msgs[2]["rcpts"] = ["<bad>@final.example"]
        results, done = agent.deliver("relay.example/{default}", msgs)
        r = {x["recipient"]: x for x in results}
        assert r["<bad>@final.example"]["outcome"] == "bounced", r
        ok = [f"r{i}@final.example" for i in (0, 1, 3, 4)]
        assert all(r[a]["outcome"] == "delivered" and "CHUNKING" in r[a]["esmtp"] for a in ok), r
        assert done["outcome"] == "done"
        wait_for(lambda: sorted(sink.delivered()) == ok, 30, what="the four relayed")
        bodies = sorted(m["data"].split("\r\n\r\n", 1)[1] for m in sink.records("message"))
        assert bodies == [f"body {i}\r\n" for i in (0, 1, 3, 4)]
    finally:
        assert agent.stop() in (0, None)
        sink.stop()


def test_clean_stop_after_deliveries_logs_no_warning(tern):
    """master stops smtp before qmgr: qmgr sees smtp's connection close.
    With no job in flight that is an info line, not a warning that jobs
    are retried; the whole stop logs no warning at all."""
    sink = Sink(tern.base)
    try:
        tern.write_config("<source 127.0.0.1>\n    always-allow-relaying yes\n</source>\n"
                          f"<domain *>\n    smtp-hosts [127.0.0.1]:{sink.port}\n</domain>\n")
        tern.start()
        mail(tern, "alice@tern.test", ["bob@far.example"])
        wait_for(lambda: sink.delivered() == ["bob@far.example"], 30, what="the delivery")
        r = tern.ctl("stop", timeout=90)
        assert r.rc == 0, r.err
        assert tern.master.wait(timeout=60) == 0
        log = tern.log_text()
        assert "qmgr[" in log and "smtp closed its connection, no job in flight" in log
        assert not re.findall(r"^.*: (?:warning|error|fatal): .*$", log, re.M)
    finally:
        sink.stop()
