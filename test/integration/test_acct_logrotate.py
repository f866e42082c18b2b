"""Debian's logrotate with the shipped snippet (conf/tern.logrotate), forced
again and again while mail flows through the whole suite: every recipient
has its d line exactly once over all the files, none split or lost."""
import csv
import os
import pwd
import re
import smtplib
import subprocess
import threading
import time

from conftest import process_alive, shipped_logrotate, wait_for
from test_qmgr_delivery import Sink

MESSAGES = 300


def d_rows(logs):
    """rcpt of every d row over the live file and the rotated ones."""
    subprocess.run(["gunzip", "-qf", *map(str, logs.glob("acct.csv.*.gz"))], check=False)
    rcpts = []
    for name in sorted(os.listdir(logs)):
        if name == "acct.csv" or re.match(r"^acct\.csv\.\d+$", name):
            with open(logs / name, newline="") as f:
                rows = list(csv.reader(f))
            assert rows and rows[0][0] == "type", (name, rows[:1])  # every file starts with its header
            rcpts += [r[4] for r in rows[1:] if r[0] == "d"]
    return rcpts


def test_logrotate_forced_while_mail_flows(tern):
    logs = tern.base / "log"
    logs.mkdir()
    if os.geteuid() == 0:
        os.chown(logs, pwd.getpwnam("tern").pw_uid, -1)
    sink = Sink(tern.base)
    try:
        tern.write_config("<source 127.0.0.1>\n    always-allow-relaying yes\n</source>\n"
                          f"<domain rot.example>\n    smtp-hosts [127.0.0.1]:{sink.port}\n</domain>\n"
                          f"<acct-file {logs}/acct.csv>\n    records d\n</acct-file>\n")
        tern.start()
        conf = shipped_logrotate(tern.base / "logrotate.conf", logs, tern.spool, tern.config)
        accepted = []

        def send():
            with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
                for i in range(MESSAGES):
                    rcpt = f"user{i}@rot.example"
                    s.sendmail("a@tern.test", [rcpt], b"Subject: rotate\r\n\r\nhello\r\n")
                    accepted.append(rcpt)
                    time.sleep(0.005)

        flow = threading.Thread(target=send)
        flow.start()
        rotations = 0
        while flow.is_alive() or rotations < 3:
            time.sleep(0.3)
            r = subprocess.run(["logrotate", "-f", "-s", str(tern.base / "logrotate.state"), str(conf)],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            rotations += 1
        flow.join()
        assert len(accepted) == MESSAGES
        wait_for(lambda: len(d_rows(logs)) >= MESSAGES, 60, what="every d line")
        time.sleep(0.5)  # anything extra would show up now
        rows = d_rows(logs)
        assert sorted(rows) == sorted(accepted), (len(rows), len(set(rows)))
        assert len(list(logs.glob("acct.csv.*"))) >= 2, os.listdir(logs)
        print(f"logrotate: {rotations} forced rotations, {len(rows)} d lines over {len(os.listdir(logs))} files")
    finally:
        sink.stop()


def log_has(path, text):
    return path.exists() and text in path.read_text(errors="replace")


def test_log_file_rotated_with_the_shipped_snippet(tern):
    """master and the workers write log-file when started as a daemon;
    logrotate's postrotate (ternctl reopen log) makes every one of them
    move to the new file, which master creates for the tern user."""
    logs = tern.base / "log"
    logs.mkdir()
    log = logs / "tern.log"
    sink = Sink(tern.base)
    try:
        tern.write_config("<source 127.0.0.1>\n    always-allow-relaying yes\n</source>\n"
                          f"<domain rot.example>\n    smtp-hosts [127.0.0.1]:{sink.port}\n</domain>\n"
                          f"log-file {log}\n")
        r = tern.ctl("start", "-d", tern.libexec)
        assert r.rc == 0, r.err
        pid = tern.status()["pid"]
        wait_for(lambda: log_has(log, "tern/qmgr") and log_has(log, "tern/smtpd"), 30, what="the workers' log lines")
        if os.geteuid() == 0:
            assert log.stat().st_uid == pwd.getpwnam("tern").pw_uid
        conf = shipped_logrotate(tern.base / "logrotate.conf", logs, tern.spool, tern.config)
        r = subprocess.run(["logrotate", "-f", "-s", str(tern.base / "logrotate.state"), str(conf)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert (logs / "tern.log.1").exists(), os.listdir(logs)
        wait_for(lambda: log_has(log, "tern/master") and log_has(log, "log file reopened"), 10,
                 what="master's first line in the new file")
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
            s.sendmail("a@tern.test", ["after@rot.example"], b"Subject: after\r\n\r\nhello\r\n")
        wait_for(lambda: log_has(log, "after@rot.example"), 30, what="the delivery logged in the new file")
        wait_for(lambda: all(log_has(log, f"tern/{role}") for role in ("qmgr", "smtpd", "smtp", "acctd")),
                 10, what="every worker's lines in the new file")
        assert not log_has(logs / "tern.log.1", "after@rot.example")
        if os.geteuid() == 0:
            assert log.stat().st_uid == pwd.getpwnam("tern").pw_uid
        r = tern.ctl("reopen", "log")
        assert r.rc == 0 and "Log file reopened." in r.out, r.err
    finally:
        tern.ctl("stop")
        sink.stop()
    wait_for(lambda: not process_alive(pid), 30, what="master to exit")


def test_reopen_log_without_a_log_file_says_so(tern):
    tern.start()  # in the foreground: the log goes to stderr
    r = tern.ctl("reopen", "log")
    assert r.rc == 1
    assert "does not write a log file" in r.err
