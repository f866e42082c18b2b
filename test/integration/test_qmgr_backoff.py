"""Backoff mode under master: a queue enters it when a rule of its
<smtp-pattern-list> with mode=backoff matches a reply, or on `ternctl set
queue --mode=backoff`; the backoff-* settings then replace the normal ones
(here backoff-max-msg-rate 1/h holds all but one message back); it
returns to normal on `set queue --mode=normal`, after
backoff-to-normal-after, or after a delivery with
backoff-to-normal-after-delivery, and backoff-notify hears of it."""
import os
import signal
import time

import pytest

import ternqmgr
from conftest import wait_for
from test_qmgr_delivery import SMTP, Sink

pytestmark = pytest.mark.skipif(not SMTP.exists(), reason="the smtp delivery agent is not built")

BODY = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
QUEUE = "example.net/{default}"


@pytest.fixture
def sink(tern):
    s = Sink(tern.base, "--rcpt", "^busy@=550 5.7.1 too many connections from your IP")
    yield s
    s.stop()


def config(port, extra=""):
    return (
        "<smtp-pattern-list pl>\n"
        "  reply /(?-i)TOO MANY/ mode=normal\n"  # case-sensitive: never matches here
        "  reply /too many connections/ mode=backoff\n"
        "</smtp-pattern-list>\n"
        f"<domain example.net>\n  smtp-hosts [127.0.0.1]:{port}\n  smtp-pattern-list pl\n"
        f"  backoff-max-msg-rate 1/h\n  backoff-retry-after 1s\n{extra}</domain>\n"
        f"<domain example.org>\n  smtp-hosts [127.0.0.1]:{port}\n</domain>\n")


def enqueue(tern, sender, rcpts):
    with ternqmgr.EnqueueClient(tern.spool / "private" / "qmgr") as c:
        reply = c.enqueue(sender, rcpts, BODY)
    assert reply["status"] == 250, reply
    return reply["queue_id"]


def mode(tern):
    r = tern.ctl("show", "queues", "--json", "example.net/*")
    assert r.rc == 0, r.err
    return {q["queue"]: q for q in r.json()}.get(QUEUE, {}).get("mode")


def test_a_matching_reply_enters_backoff_and_its_settings_apply(tern, sink):
    tern.write_config(config(sink.port))
    tern.start()
    enqueue(tern, "", ["busy@example.net"])  # null sender: no DSN for the bounce
    wait_for(lambda: mode(tern) == "backoff", 15, what="backoff mode after the matching reply")
    assert "bo" in tern.ctl("show", "queues", "example.net/*").out.split()

    for i in range(3):
        enqueue(tern, "a@example.org", [f"ok{i}@example.net"])
    wait_for(lambda: len(sink.delivered()) >= 1, 15, what="the one message backoff-max-msg-rate allows")
    time.sleep(2.5)
    assert len(sink.delivered()) == 1, sink.delivered()

    r = tern.ctl("set", "queue", "--mode=normal", "example.net/*")
    assert r.rc == 0 and r.out.strip() == "1 queue set to normal.", r.out + r.err
    wait_for(lambda: sorted(sink.delivered()) == ["ok0@example.net", "ok1@example.net", "ok2@example.net"], 15,
             what="the rest once the queue is normal again")
    assert mode(tern) == "normal"


def test_set_queue_mode_and_the_way_back_by_time(tern, sink):
    tern.write_config(config(sink.port, "  backoff-to-normal-after 2s\n"))
    tern.start()
    enqueue(tern, "a@example.org", ["first@example.net"])
    wait_for(lambda: sink.delivered() == ["first@example.net"], 15, what="a queue to set")
    r = tern.ctl("set", "queue", "--mode=backoff", "example.net/*", "--json")
    assert r.rc == 0 and r.json() == {"ok": True, "message": "1 queue set to backoff"}, r.out + r.err
    assert mode(tern) == "backoff"
    wait_for(lambda: mode(tern) == "normal", 10, what="normal mode after backoff-to-normal-after")

    bad = tern.ctl("set", "queue", "--mode=fast", "example.net/*")
    assert bad.rc != 0 and "--mode=backoff or --mode=normal" in bad.err
    assert tern.ctl("set", "queue", "--mode=backoff", "nowhere.test/*").rc == 1
    reader = tern.ctl("set", "queue", "--mode=backoff")
    assert reader.rc != 0 and "which queue" in reader.err


def test_a_delivery_ends_backoff_and_notify_hears_of_it(tern, sink):
    tern.write_config(config(sink.port, "  backoff-to-normal-after-delivery yes\n"
                                        "  backoff-notify postmaster@example.org\n"))
    tern.start()
    enqueue(tern, "", ["busy@example.net"])
    wait_for(lambda: mode(tern) == "backoff", 15, what="backoff mode after the matching reply")
    enqueue(tern, "a@example.org", ["ok@example.net"])
    wait_for(lambda: mode(tern) == "normal", 15, what="normal mode after a delivery")
    notices = wait_for(lambda: [m for m in sink.records("message") if m["mail_from"] == ""
                                and "backoff mode" in m["data"]] if len([m for m in sink.records("message")
                                                                        if m["mail_from"] == ""]) >= 2 else None,
                       15, what="two notices to backoff-notify")
    subjects = sorted(line for m in notices for line in m["data"].splitlines() if line.startswith("Subject:"))
    assert subjects == [f"Subject: queue {QUEUE} entered backoff mode", f"Subject: queue {QUEUE} left backoff mode"]
    assert all([r["address"] for r in m["rcpts"]] == ["postmaster@example.org"] for m in notices)


def test_the_mode_survives_a_restart_of_qmgr(tern, sink):
    tern.write_config(config(sink.port))
    tern.start()
    enqueue(tern, "a@example.org", ["first@example.net"])
    wait_for(lambda: sink.delivered() == ["first@example.net"], 15, what="a queue to set")
    assert tern.ctl("set", "queue", "--mode=backoff", "*/*").rc == 0
    time.sleep(1.3)  # master counts a death within 1 s of starting as a failed start
    old = tern.service("qmgr")["pids"]
    os.kill(old[0], signal.SIGKILL)
    wait_for(lambda: (lambda s: s["ready"] == 1 and s["pids"] and s["pids"] != old)(tern.service("qmgr")), 15,
             what="master restarting qmgr")
    wait_for(lambda: mode(tern) == "backoff", 10, what="the queue back in backoff mode")
