"""Delivery by the smtp agent over static routes (smtp-hosts): the SMTP
dialogue, per-recipient results, several messages per connection, the
next host after a refused connection or a 4xx greeting."""
import time

import pytest

from conftest import free_port, wait_for_log
from test_smtp_harness import BODY, agent, sinks  # noqa: F401  (fixtures)


def config(port, extra="", domain="example.net"):
    return f"<domain {domain}>\n  smtp-hosts [127.0.0.1]:{port}\n  use-starttls no\n{extra}</domain>\n"


def by_address(results):
    return {r["recipient"]: r for r in results}


def test_delivery_and_result_fields(agent, sinks):
    sink = sinks()
    agent.start(config(sink.port))
    results, done = agent.deliver("example.net/{default}", [
        {"queue_id": "Q1", "sender": "a@example.org", "envid": "E1", "ret": "HDRS", "body_type": "8BITMIME",
         "rcpts": [{"address": "b@example.net", "notify": "SUCCESS,FAILURE", "orcpt": "rfc822;b@example.net"},
                   "c@example.net"]}])
    assert done["outcome"] == "done"
    assert len(results) == 2
    for r in results:
        assert r["outcome"] == "delivered" and r["dsn_status"] == "2.0.0"
        assert r["reason"].startswith("smtp;250 ")
        assert r["remote_host"] == "127.0.0.1" and r["remote_ip"] == "127.0.0.1"
        assert r["local_ip"] == "127.0.0.1"
        assert "PIPELINING" in r["esmtp"] and "DSN" in r["esmtp"]
        assert r["tls_protocol"] == "" and r["tls_cipher"] == ""
        assert r["size"] == len(BODY) + 1  # the bare LF became CRLF
    msg = sink.messages()[0]
    assert msg["mail_from"] == "a@example.org"
    assert msg["mail_params"] == {"SIZE": str(len(BODY) + 1), "BODY": "8BITMIME", "RET": "HDRS", "ENVID": "E1"}
    rcpts = {r["address"]: r["params"] for r in msg["rcpts"]}
    assert rcpts["b@example.net"] == {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;b@example.net"}
    assert msg["helo"] == "client.tern.test" and msg.get("bare_lf", 0) == 0
    assert msg["size"] == len(BODY) + 1


def test_dot_stuffing_and_crlf(agent, sinks):
    sink = sinks()
    agent.start(config(sink.port))
    body = b"Subject: dots\n\n.\n..two\n.one\nend"
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net"], "body": body}])
    assert results[0]["outcome"] == "delivered"
    # The sink unstuffs: what it recorded is what we meant to send.
    assert sink.messages()[0]["data"] == "Subject: dots\r\n\r\n.\r\n..two\r\n.one\r\nend\r\n"


def test_per_recipient_4xx_and_5xx(agent, sinks):
    sink = sinks("--rcpt", "^busy@=450 4.2.0 mailbox busy", "--rcpt", "^bad@=550 5.1.1 no such user")
    agent.start(config(sink.port))
    results, done = agent.deliver("example.net/{default}", [
        {"rcpts": ["ok@example.net", "busy@example.net", "bad@example.net"]}])
    r = by_address(results)
    assert r["ok@example.net"]["outcome"] == "delivered"
    assert r["busy@example.net"]["outcome"] == "deferred"
    assert r["busy@example.net"]["dsn_status"] == "4.2.0"
    assert r["busy@example.net"]["reason"] == "smtp;450 4.2.0 mailbox busy"
    assert r["bad@example.net"]["outcome"] == "bounced"
    assert r["bad@example.net"]["dsn_status"] == "5.1.1"
    assert [x["address"] for x in sink.messages()[0]["rcpts"]] == ["ok@example.net"]


def test_rejection_at_end_of_data_and_without_pipelining(agent, sinks):
    sink = sinks("--without", "PIPELINING", "--rule",
                 '{"command": "EOD", "message": 1, "reply": "554 5.7.1 content rejected"}')
    agent.start(config(sink.port))
    results, done = agent.deliver("example.net/{default}", [
        {"queue_id": "M1", "rcpts": ["b@example.net", "c@example.net"]},
        {"queue_id": "M2", "rcpts": ["d@example.net"]}])
    r = by_address(results)
    assert r["b@example.net"]["outcome"] == r["c@example.net"]["outcome"] == "bounced"
    assert r["b@example.net"]["reason"] == "smtp;554 5.7.1 content rejected"
    assert r["d@example.net"]["outcome"] == "delivered"
    assert len(sink.sessions()) == 1  # both messages over one connection


def test_next_envelope_goes_with_the_dot(agent, sinks):
    """With PIPELINING the next message's MAIL, RCPT and DATA follow the
    previous message's dot (RFC 2920 3.1), so the server has them when it
    reads the dot: one round trip a message.  A 5xx to one dot leaves the
    next message alone.  (DATA: the server offers no CHUNKING.)"""
    sink = sinks("--without", "CHUNKING",
                 "--rule", '{"command": "EOD", "session_message": 2, "reply": "554 5.7.1 content rejected"}')
    agent.start(config(sink.port))
    msgs = [{"queue_id": f"M{i}", "rcpts": [f"r{i}@example.net", f"s{i}@example.net"]} for i in range(4)]
    results, done = agent.deliver("example.net/{default}", msgs)
    assert done["outcome"] == "done"
    r = by_address(results)
    assert len(r) == 8
    assert r["r1@example.net"]["outcome"] == r["s1@example.net"]["outcome"] == "bounced"
    assert r["r1@example.net"]["reason"] == "smtp;554 5.7.1 content rejected"
    assert all(r[f"{p}{i}@example.net"]["outcome"] == "delivered" for i in (0, 2, 3) for p in "rs")
    [session] = sink.sessions()
    eods = [c for c in session["commands"] if c["verb"] == "EOD"]
    assert [bool(c.get("pipelined")) for c in eods] == [True, True, True, False]
    assert [m["outcome"] for m in session["messages"]] == ["accepted", "rejected", "accepted", "accepted"]


def test_bdat_sends_the_content_with_the_envelope(agent, sinks):
    """With CHUNKING and PIPELINING a message is MAIL, RCPT and one BDAT
    LAST chunk of the content as it is (no dot-stuffing), and the job's
    next messages follow at once, each behind an RSET: one round trip for
    the job.  A refused chunk concerns only its message."""
    sink = sinks("--rule", '{"command": "EOD", "session_message": 2, "reply": "554 5.7.1 content rejected"}')
    agent.start(config(sink.port))
    body = b"Subject: dots\n\n.\n..two\n.one\nend"
    msgs = [{"queue_id": f"M{i}", "rcpts": [f"r{i}@example.net", f"s{i}@example.net"], "body": body}
            for i in range(3)]
    results, done = agent.deliver("example.net/{default}", msgs)
    assert done["outcome"] == "done"
    r = by_address(results)
    assert r["r1@example.net"]["outcome"] == r["s1@example.net"]["outcome"] == "bounced"
    assert r["r1@example.net"]["reason"] == "smtp;554 5.7.1 content rejected"
    assert all(r[f"{p}{i}@example.net"]["outcome"] == "delivered" for i in (0, 2) for p in "rs")
    content = "Subject: dots\r\n\r\n.\r\n..two\r\n.one\r\nend\r\n"
    [session] = sink.sessions()
    assert [m["outcome"] for m in session["messages"]] == ["accepted", "rejected", "accepted"]
    for m in sink.messages():
        assert m["method"] == "BDAT" and m["bdat_chunks"] == 1
        assert m["mail_params"]["SIZE"] == str(len(content)) and m["size"] == len(content)
        if m["outcome"] == "accepted":
            assert m["data"] == content
    verbs = [c["verb"] for c in session["commands"]]
    txn = ["MAIL", "RCPT", "RCPT", "BDAT"]
    assert verbs == ["EHLO"] + txn + ["RSET"] + txn + ["RSET"] + txn + ["QUIT"]
    # the envelope did not wait for its replies: the chunk came with it
    assert all(c.get("pipelined") for c in session["commands"] if c["verb"] == "MAIL")
    bdats = [c for c in session["commands"] if c["verb"] == "BDAT"]
    assert [c["line"] for c in bdats] == [f"BDAT {len(content)} LAST"] * 3


def test_bdat_after_refused_recipients(agent, sinks):
    """A chunk sent after every RCPT was refused is refused too; that
    reply adds nothing, and RSET ends the transaction."""
    sink = sinks("--rcpt", "^bad@=550 5.1.1 no such user")
    agent.start(config(sink.port))
    results, done = agent.deliver("example.net/{default}", [
        {"queue_id": "M0", "rcpts": ["bad@example.net"]}, {"queue_id": "M1", "rcpts": ["good@example.net"]}])
    r = by_address(results)
    assert r["bad@example.net"]["outcome"] == "bounced"
    assert r["bad@example.net"]["reason"] == "smtp;550 5.1.1 no such user"
    assert r["good@example.net"]["outcome"] == "delivered"
    [session] = sink.sessions()
    verbs = [c["verb"] for c in session["commands"]]
    assert verbs == ["EHLO", "MAIL", "RCPT", "BDAT", "RSET", "MAIL", "RCPT", "BDAT", "QUIT"]


def test_message_over_the_servers_size_goes_with_data(agent, sinks):
    """A message over the SIZE the server announced is sent with DATA, so
    that its refused MAIL leaves the content unsent, and nothing is sent
    behind it before its replies; the others still go with BDAT."""
    sink = sinks("--max-size", "1000")
    agent.start(config(sink.port))
    small = b"Subject: s\n\nsmall\n"
    msgs = [{"queue_id": "M0", "rcpts": ["a@example.net"], "body": small},
            {"queue_id": "M1", "rcpts": ["big@example.net"], "body": b"Subject: b\n\n" + b"x" * 2000 + b"\n"},
            {"queue_id": "M2", "rcpts": ["c@example.net"], "body": small}]
    results, done = agent.deliver("example.net/{default}", msgs)
    r = by_address(results)
    assert r["big@example.net"]["outcome"] == "bounced" and "552" in r["big@example.net"]["reason"]
    assert r["a@example.net"]["outcome"] == r["c@example.net"]["outcome"] == "delivered"
    [session] = sink.sessions()
    verbs = [c["verb"] for c in session["commands"]]
    assert verbs == ["EHLO", "MAIL", "RCPT", "BDAT", "MAIL", "RCPT", "DATA", "RSET",
                     "MAIL", "RCPT", "BDAT", "QUIT"], verbs
    chunks = [c["size"] for c in session["commands"] if c["verb"] == "BDAT"]
    assert chunks == [len(b"Subject: s\r\n\r\nsmall\r\n")] * 2


def test_window_gives_each_reply_to_its_own_message(agent, sinks):
    """Thirty messages in one job, so the window is full and refills:
    refused recipients, a refused MAIL and refused, deferred and accepted
    chunks among them, and every recipient gets the verdict meant for
    it."""
    sink = sinks("--rcpt", "^no=550 5.1.1 no such user", "--rule",
                 '{"command": "EOD", "session_message": [4, 17], "reply": "554 5.7.1 content rejected"}',
                 "--rule", '{"command": "EOD", "session_message": 9, "reply": "451 4.3.0 try later"}',
                 "--rule", '{"command": "MAIL", "session_message": 23, "reply": "550 5.7.1 sender refused"}')
    agent.start(config(sink.port))
    msgs = [{"queue_id": f"M{i}", "rcpts": [f"a{i}@example.net", f"no{i}@example.net"] if i % 5 == 0 else
             [f"a{i}@example.net"]} for i in range(1, 31)]
    results, done = agent.deliver("example.net/{default}", msgs)
    assert done["outcome"] == "done"
    r = by_address(results)
    assert len(r) == 36
    expect = {i: ("delivered", "250") for i in range(1, 31)}
    expect.update({4: ("bounced", "554"), 17: ("bounced", "554"), 9: ("deferred", "451"), 23: ("bounced", "550")})
    for i, (outcome, code) in expect.items():
        got = r[f"a{i}@example.net"]
        assert (got["outcome"], got["reason"][5:8]) == (outcome, code), (i, got)
    for i in range(5, 31, 5):
        assert r[f"no{i}@example.net"]["outcome"] == "bounced", i
    [session] = sink.sessions()
    verbs = [c["verb"] for c in session["commands"]]
    assert verbs.count("BDAT") == 30
    assert verbs.count("RSET") == 29  # every message but the first went in the window


def test_ignore_chunking_keeps_data(agent, sinks):
    plain = sinks()
    agent.start(config(plain.port, "  ignore-chunking yes\n"))
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net"]}])
    assert results[0]["outcome"] == "delivered"
    assert "CHUNKING" in results[0]["esmtp"]
    assert plain.messages()[0]["method"] == "DATA"


def test_bdat_window_goes_out_before_any_reply(agent, sinks):
    """The server answers no chunk: the job's other messages went out
    behind the first anyway (the sink records what it reads while it
    hangs), and smtp-data-termination-timeout, counted once everything
    is written, defers them all, saying where it hung."""
    sink = sinks("--hang", "EOD")
    agent.start(config(sink.port, "  smtp-data-termination-timeout 1s\n"))
    t0 = time.monotonic()
    msgs = [{"queue_id": f"M{i}", "rcpts": [f"r{i}@example.net"]} for i in range(3)]
    results, done = agent.deliver("example.net/{default}", msgs)
    assert time.monotonic() - t0 < 5
    assert len(results) == 3 and all(x["outcome"] == "deferred" for x in results)
    assert all("timed out" in x["reason"] and "after the end of data" in x["reason"] for x in results[:1])
    [session] = sink.sessions()
    assert [c["verb"] for c in session["commands"][:4]] == ["EHLO", "MAIL", "RCPT", "BDAT"]
    unanswered = [c["line"] for c in session["commands"][4:] if c.get("ignored")]
    assert [x.split(":")[0].split(" ")[0] for x in unanswered if x.startswith(("RSET", "MAIL", "RCPT", "BDAT"))] \
        == ["RSET", "MAIL", "RCPT", "BDAT"] * 2


def test_window_keeps_to_max_msg_per_connection(agent, sinks):
    """Seven one-recipient messages, max-msg-per-connection 3: the window
    never sends a connection more than three."""
    sink = sinks()
    agent.start(config(sink.port, "  max-msg-per-connection 3\n"))
    msgs = [{"queue_id": f"M{i}", "rcpts": [f"r{i}@example.net"]} for i in range(7)]
    results, done = agent.deliver("example.net/{default}", msgs)
    assert done["outcome"] == "done" and all(x["outcome"] == "delivered" for x in results)
    sessions = sink.sessions(3)
    assert sorted(len(x["messages"]) for x in sessions) == [1, 3, 3]
    assert sorted(m["queue_id"] is not None for m in sink.messages()) == [True] * 7


@pytest.mark.parametrize("method", ["DATA", "BDAT"])
def test_421_to_the_end_of_data_defers_what_was_sent_after_it(agent, sinks, method):
    """The server closes after the first message.  What went out behind
    it was never answered (with DATA the envelope that went with the dot,
    with BDAT the window's whole transactions), so those messages are
    deferred too, as is any not begun; every recipient has a result."""
    without = ["--without", "CHUNKING"] if method == "DATA" else []
    sink = sinks(*without, "--rule", '{"command": "EOD", "session_message": 1, "reply": "421 4.3.2 closing down"}')
    agent.start(config(sink.port))
    msgs = [{"queue_id": f"M{i}", "rcpts": [f"r{i}@example.net"]} for i in range(3)]
    results, done = agent.deliver("example.net/{default}", msgs)
    r = by_address(results)
    assert len(r) == 3 and all(x["outcome"] == "deferred" for x in r.values())
    assert r["r0@example.net"]["reason"] == "smtp;421 4.3.2 closing down"
    assert all("connection closed by the server" in r[f"r{i}@example.net"]["reason"] for i in (1, 2))
    assert done["outcome"] == "failed"
    assert sink.sessions()[0]["messages"][0]["method"] == method


def test_connection_reuse_and_limits(agent, sinks):
    """Five messages, max-msg-per-connection 2: three connections; two
    recipients per transaction for a message with five recipients."""
    sink = sinks()
    agent.start(config(sink.port, "  max-msg-per-connection 2\n  max-rcpt-per-transaction 2\n"))
    msgs = [{"queue_id": f"M{i}", "rcpts": [f"r{i}@example.net"]} for i in range(4)]
    msgs.append({"queue_id": "M4", "rcpts": [f"x{k}@example.net" for k in range(5)]})
    results, done = agent.deliver("example.net/{default}", msgs)
    assert done["outcome"] == "done"
    assert len(results) == 9 and all(r["outcome"] == "delivered" for r in results)
    sessions = sink.sessions(3)
    assert len(sessions) == 3
    per_txn = [len(m["rcpts"]) for m in sink.records("message") if m["queue_id"]]
    assert sorted(per_txn) == [1, 1, 1, 1, 1, 2, 2]


def test_many_jobs_at_once(agent, sinks):
    """One process runs several jobs concurrently on one qmgr connection."""
    sink = sinks("--delay", "0.2")
    agent.start(config(sink.port))
    with agent.connect() as conn:
        jobs = [agent.send_job(conn, "example.net/{default}", [{"rcpts": [f"j{i}@example.net"]}])
                for i in range(5)]
        t0 = time.monotonic()
        results, done = agent.collect(conn, jobs)
        elapsed = time.monotonic() - t0
    assert all(d["outcome"] == "done" for d in done.values())
    assert sink.records("session")[-1]["max_concurrent"] >= 2
    assert elapsed < 5


def test_next_host_after_refused_connection_and_4xx_greeting(agent, sinks):
    greylist = sinks("--greeting", "421 4.3.2 not now")
    good = sinks()
    closed = free_port()
    agent.start(f"<domain example.net>\n  smtp-hosts [127.0.0.1]:{closed}; [127.0.0.1]:{greylist.port};"
                f" [127.0.0.1]:{good.port}\n  use-starttls no\n</domain>\n")
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net"]}])
    assert results[0]["outcome"] == "delivered"
    assert len(greylist.sessions()) == 1 and len(good.sessions()) == 1


def test_all_hosts_fail_defers_with_reason(agent):
    closed = free_port()
    agent.start(config(closed, "  connect-timeout 5s\n"))
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net", "c@example.net"]}])
    assert done["outcome"] == "connect-failed"
    assert all(r["outcome"] == "deferred" for r in results)
    assert "Connection refused" in results[0]["reason"]


def test_default_smtp_port_and_route(agent, sinks):
    sink = sinks()
    agent.start(f"<domain example.net>\n  route [127.0.0.1]\n  default-smtp-port {sink.port}\n"
                "  use-starttls no\n</domain>\n")
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net"]}])
    assert results[0]["outcome"] == "delivered"


def test_smtp_source_host_binds_and_names(agent, sinks):
    sink = sinks("--host", "127.0.0.1")
    agent.start("smtp-source-host 127.0.0.7 out7.tern.test\n" + config(sink.port))
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net"]}])
    assert results[0]["local_ip"] == "127.0.0.7"
    session = sink.sessions()[0]
    assert session["peer"]["ip"] == "127.0.0.7" and session["helo"] == "out7.tern.test"


def test_helo_fallback(agent, sinks):
    old = sinks("--reply", "EHLO=502 5.5.2 what", "--extensions", "")
    agent.start(config(old.port))
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net"]}])
    assert results[0]["outcome"] == "delivered" and results[0]["esmtp"] == ""
    assert old.sessions()[0]["helo_verb"] == "HELO"


def test_smtputf8_needs_the_extension(agent, sinks):
    plain = sinks("--without", "SMTPUTF8")
    agent.start(config(plain.port))
    results, done = agent.deliver("example.net/{default}", [
        {"queue_id": "U1", "smtputf8": True, "rcpts": ["ü@example.net"]},
        {"queue_id": "A1", "rcpts": ["b@example.net"]}])
    r = by_address(results)
    assert r["ü@example.net"]["outcome"] == "bounced" and r["ü@example.net"]["dsn_status"] == "5.6.7"
    assert r["b@example.net"]["outcome"] == "delivered"
    assert len(plain.messages()) == 1


def test_smtputf8_passed_on(agent, sinks):
    sink = sinks()
    agent.start(config(sink.port))
    results, done = agent.deliver("example.net/{default}", [
        {"smtputf8": True, "sender": "ä@example.org", "rcpts": ["ü@example.net"]}])
    assert results[0]["outcome"] == "delivered"
    assert "SMTPUTF8" in sink.messages()[0]["mail_params"]


def test_5xx_greeting_bounces(agent, sinks):
    sink = sinks("--greeting", "554 5.7.1 go away")
    agent.start(config(sink.port))
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net"]}])
    assert results[0]["outcome"] == "bounced"
    assert results[0]["reason"] == "smtp;554 5.7.1 go away"


def test_timeout_after_data_defers(agent, sinks):
    sink = sinks("--hang", "EOD")
    agent.start(config(sink.port, "  smtp-data-termination-timeout 1s\n"))
    t0 = time.monotonic()
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net"]},
                                                            {"queue_id": "Q2", "rcpts": ["c@example.net"]}])
    assert time.monotonic() - t0 < 5
    assert all(r["outcome"] == "deferred" for r in results)
    assert "timed out" in results[0]["reason"] and "after the end of data" in results[0]["reason"]
    assert done["outcome"] == "failed"


@pytest.mark.parametrize("verb", ["DATA", "BDAT"])
def test_dropped_connection_mid_transaction_defers(agent, sinks, verb):
    sink = sinks("--drop", verb, *(["--without", "CHUNKING"] if verb == "DATA" else []))
    agent.start(config(sink.port))
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net"]}])
    assert results[0]["outcome"] == "deferred"
    assert "connection closed by the server" in results[0]["reason"]


def test_service_socket_from_master(tern_dir, sinks):
    """Started by master, smtp serves the socket passed in TERN_SERVICE_FD
    instead of creating one."""
    import socket
    import subprocess
    from conftest import ensure_tern_user
    from test_smtp_harness import SMTP, Agent
    ensure_tern_user()
    sink = sinks()
    path = tern_dir / "inherited.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    os_path = tern_dir / "tern.conf"
    os_path.write_text(f"spool {tern_dir / 'spool'}\n" + config(sink.port))
    fd = listener.fileno()
    proc = subprocess.Popen([str(SMTP), "-f", "-c", str(os_path)], pass_fds=[fd],
                            env={"TERN_SERVICE_FD": str(fd), "PATH": "/usr/bin:/bin"},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    listener.close()
    try:
        a = Agent(tern_dir)
        a.socket = path
        results, done = a.deliver("example.net/{default}", [{"rcpts": ["b@example.net"]}])
        assert results[0]["outcome"] == "delivered"
        assert not (tern_dir / "spool" / "private" / "smtp").exists()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_reload_applies_to_new_jobs(agent, sinks):
    first, second = sinks(), sinks()
    agent.start(config(first.port))
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net"]}])
    agent.config.write_text(f"spool {agent.spool}\n" + config(second.port))
    agent.proc.send_signal(__import__("signal").SIGHUP)
    time.sleep(0.3)
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net"]}])
    assert results[0]["outcome"] == "delivered"
    assert len(first.messages()) == 1 and len(second.messages()) == 1


def test_idle_connection_reused_by_the_next_job(agent, sinks):
    """connection-idle-timeout: the next job of the queue takes the open
    connection (no new connect, no new EHLO); after the timeout it is
    closed with QUIT."""
    sink = sinks()
    agent.start(config(sink.port, "  connection-idle-timeout 1s\n"))
    for i in range(3):
        results, done = agent.deliver("example.net/{default}", [{"rcpts": [f"b{i}@example.net"]}])
        assert results[0]["outcome"] == "delivered"
    session = sink.sessions(1, timeout=5)[0]
    assert [c["verb"] for c in session["commands"]].count("MAIL") == 3
    assert session["end"] == "quit"
    assert len(sink.records("connect")) == 1


def test_fifty_messages_three_jobs_at_a_time(agent, sinks):
    """As qmgr with max-smtp-out 3 would run them: never more than three
    jobs, so never more than three connections, which are reused."""
    sink = sinks()
    agent.start(config(sink.port, "  connection-idle-timeout 5s\n"))
    with agent.connect() as conn:
        pending, sent, delivered = set(), 0, 0
        while sent < 50 or pending:
            while sent < 50 and len(pending) < 3:
                pending.add(agent.send_job(conn, "example.net/{default}",
                                           [{"queue_id": f"M{sent}", "rcpts": [f"r{sent}@example.net"]}]))
                sent += 1
            frame = conn.receive()
            if frame["request"] == "result":
                delivered += frame["outcome"] == "delivered"
            else:
                assert frame["request"] == "done" and frame["outcome"] == "done", frame
                pending.discard(frame["job_id"])
    assert delivered == 50
    # the sink may write its record just after its reply
    assert len(sink.messages(50)) == 50
    connects = sink.records("connect")
    assert max(c["max_concurrent"] for c in connects) <= 3
    assert len(connects) <= 3


def test_virtual_mta_source_host_and_unknown_vmta(agent, sinks):
    sink = sinks()
    agent.start("smtp-source-host 127.0.0.7 out7.tern.test\n"
                "<virtual-mta vm1>\n  smtp-source-host 127.0.0.9 vm1.tern.test\n</virtual-mta>\n"
                + config(sink.port))
    results, done = agent.deliver("example.net/vm1", [{"rcpts": ["b@example.net"]}])
    assert results[0]["outcome"] == "delivered" and results[0]["local_ip"] == "127.0.0.9"
    assert sink.sessions()[0]["helo"] == "vm1.tern.test"
    results, done = agent.deliver("example.net/nosuch", [{"rcpts": ["b@example.net"]}])
    assert results[0]["outcome"] == "deferred" and done["outcome"] == "failed"
    assert "no virtual-mta or virtual-mta-pool named nosuch" in done["reason"]


def test_greeting_timeout_moves_to_the_next_host(agent, sinks):
    silent = sinks("--hang", "CONNECT")
    good = sinks()
    agent.start(f"<domain example.net>\n  smtp-hosts [127.0.0.1]:{silent.port}; [127.0.0.1]:{good.port}\n"
                "  use-starttls no\n  smtp-greeting-timeout 1s\n</domain>\n")
    t0 = time.monotonic()
    results, done = agent.deliver("example.net/{default}", [{"rcpts": ["b@example.net"]}])
    assert results[0]["outcome"] == "delivered"
    assert 0.9 < time.monotonic() - t0 < 4
    wait_for_log(agent, "timed out", "waiting for the greeting")
