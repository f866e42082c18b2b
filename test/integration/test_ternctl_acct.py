"""ternctl's accounting commands against the running suite: reopen acct,
rotate acct and acct tail go through master's relay to acctd.  The
records are fed to acctd's socket by the test, as qmgr's outbox does."""
import csv
import io
import os
import pwd
import subprocess
import time

import ternipc
from conftest import wait_for


def feed(tern, records):
    """Sends (seq, type, fields) records to acctd and waits for the ack."""
    with ternipc.Connection(tern.spool / "private" / "acctd", timeout=10) as c:
        c.send({"request": "hello"})
        assert c.receive()["request"] == "resume"
        for seq, rtype, fields in records:
            c.send([("request", "record"), ("seq", seq), ("record_type", rtype)] + list(fields.items()))
        while c.receive()["seq"] < records[-1][0]:
            pass


def delivery(i):
    return {"timeLogged": 1795000000 + i, "orig": "a@tern.test", "rcpt": f"u{i}@example.com",
            "dsnAction": "relayed", "dsnStatus": "2.0.0 (success)", "dsnDiag": "smtp;250 ok",
            "queue": "example.com/{default}", "dlvTlsProtocol": "TLSv1.3"}


def log_dir(tern):
    """A directory acctd (running as the tern user) may write in, as
    make install prepares /var/log/tern."""
    path = tern.base / "log"
    path.mkdir()
    if os.geteuid() == 0:
        os.chown(path, pwd.getpwnam("tern").pw_uid, -1)
    return path


def test_tail_rotate_and_reopen(tern):
    logs = log_dir(tern)
    acct = logs / "acct.csv"
    tern.write_config(f"<acct-file {acct}>\n    records d, b\n    record-fields d *, dlvTlsProtocol\n</acct-file>\n")
    tern.start()
    tail = subprocess.Popen([str(tern.ternctl.binary), "-c", str(tern.config), "acct", "tail", "--type", "d",
                             "--fields", "type,rcpt,dlvTlsProtocol"], stdout=subprocess.PIPE, text=True)
    try:
        assert tail.stdout.readline() == "type,rcpt,dlvTlsProtocol\n"
        feed(tern, [(1, "d", delivery(1)), (2, "b", delivery(2)), (3, "d", delivery(3))])
        rows = [tail.stdout.readline(), tail.stdout.readline()]
    finally:
        tail.terminate()
        tail.wait(10)
    assert [next(csv.reader(io.StringIO(r))) for r in rows] == [["d", "u1@example.com", "TLSv1.3"],
                                                              ["d", "u3@example.com", "TLSv1.3"]]
    # Resuming from a sequence number gives what followed it, as JSON.
    tail = subprocess.Popen([str(tern.ternctl.binary), "-c", str(tern.config), "acct", "tail", "--json",
                             "--since", "1"], stdout=subprocess.PIPE, text=True)
    try:
        import json
        got = [json.loads(tail.stdout.readline()), json.loads(tail.stdout.readline())]
    finally:
        tail.terminate()
        tail.wait(10)
    assert [(g["type"], g["rcpt"]) for g in got] == [("b", "u2@example.com"), ("d", "u3@example.com")]

    r = tern.ctl("rotate", "acct")
    assert r.rc == 0, r.err
    assert r.out.strip() == "Accounting file rotated."
    rotated = wait_for(lambda: [p for p in logs.glob("acct-*.csv")], what="the rotated file")
    assert len(list(csv.reader(open(rotated[0], newline="")))) == 4  # header and three rows
    r = tern.ctl("reopen", "acct", "--json")
    assert r.rc == 0, r.err
    assert r.json() == {"ok": True, "message": "Accounting files reopened."}


def test_accounting_commands_when_tern_is_stopped(tern):
    r = tern.ctl("reopen", "acct")
    assert r.rc == 1 and "not running" in r.err
