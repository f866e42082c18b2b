"""Integration tests of the pickup service and mailq: tern-sendmail queues
into the pickup directory while tern is stopped and the message is
delivered once tern starts; a file in PowerMTA's pickup format written by
hand is delivered; malformed files (no x-receiver, a bad address, binary
junk, an oversize message, a symbolic link, a FIFO) land in pickup-bad with a log
line saying why while the good files around them are delivered; mailq
(tern-sendmail -bp) lists the queue as Postfix's mailq does."""
import os
import pwd
import re
import shutil
import subprocess

import pytest

from conftest import TOP, wait_for, wait_for_log, wait_for_log_match
from test_qmgr_delivery import Sink

SENDMAIL = TOP / "ctl" / "tern-sendmail"
MESSAGE = b"From: a@example.org\nTo: u1@example.net\nSubject: pickup\n\nhello from cron\n"


def sendmail(tern, *args, stdin=MESSAGE):
    return subprocess.run([str(SENDMAIL), "-C", str(tern.config), *args], input=stdin, capture_output=True,
                          timeout=30)


def pickup_dirs(tern):
    """The spool's pickup directories, made as make install makes them."""
    pickup, bad = tern.spool / "pickup", tern.spool / "pickup-bad"
    for d, mode in ((tern.spool, 0o755), (pickup, 0o1730), (bad, 0o700)):
        d.mkdir(exist_ok=True)
        os.chmod(d, mode)
        if os.geteuid() == 0 and d != tern.spool:
            tern_user = pwd.getpwnam("tern")
            os.chown(d, tern_user.pw_uid, tern_user.pw_gid)
    return pickup, bad


def configure(tern, sink, extra=""):
    tern.write_config(f"<domain example.net>\n  smtp-hosts [127.0.0.1]:{sink.port}\n</domain>\n" + extra)


def drop(directory, name, data):
    """Writes NAME.tmp and renames it to NAME.msg, as tern-sendmail does."""
    tmp = directory / (name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.rename(directory / (name + ".msg"))


@pytest.fixture
def sink(tern):
    s = Sink(tern.base)
    yield s
    s.stop()


def messages(sink):
    return [m for m in sink.records("message") if m.get("outcome") == "accepted"]


def test_sendmail_while_stopped_is_delivered_once_tern_starts(tern, sink):
    configure(tern, sink)
    pickup, _ = pickup_dirs(tern)
    r = sendmail(tern, "-f", "cron@example.org", "u1@example.net")
    assert r.returncode == 0, r.stderr
    assert len(list(pickup.glob("*.msg"))) == 1
    tern.start()
    wait_for(lambda: sink.delivered() == ["u1@example.net"], 20, what="delivery of the pickup file")
    m = messages(sink)[0]
    assert m["mail_from"] == "cron@example.org"
    assert "hello from cron" in m["data"]
    assert re.search(r"Received: by tern\.test \(tern pickup, from userid 0 \(root\)\);\r\n\t", m["data"])
    wait_for(lambda: list(pickup.iterdir()) == [], 5, what="the pickup file removed")
    wait_for_log_match(tern, r"[0-9A-F]{16}: pickup file \S+\.msg, from=<cron@example.org>, nrcpt=1")


def test_powermta_pickup_file_by_hand_is_delivered(tern, sink):
    import csv
    acct = tern.base / "acct" / "acct.csv"
    configure(tern, sink, f"<acct-file {acct}>\n  records r\n</acct-file>\n")
    pickup, _ = pickup_dirs(tern)
    tern.start()
    drop(pickup, "by-hand", b"X-Sender: <bounces@example.org>\r\nx-receiver: u2@example.net\r\n"
                            b"X-RECEIVER: <u3@example.net>\r\nSubject: by hand\r\n\r\nbody\r\n")
    wait_for(lambda: sorted(sink.delivered()) == ["u2@example.net", "u3@example.net"], 20, what="delivery")
    m = messages(sink)[0]
    assert m["mail_from"] == "bounces@example.org"
    assert "x-receiver" not in m["data"].lower() and "Subject: by hand\r\n\r\nbody\r\n" in m["data"]
    assert not (pickup / "by-hand.msg").exists()

    def rows():
        return list(csv.DictReader(acct.read_text().splitlines())) if acct.exists() else []
    got = wait_for(lambda: len(rows()) == 2 and rows(), 15, what="the r records")
    assert {r["srcType"] for r in got} == {"pickup"} and {r["orig"] for r in got} == {"bounces@example.org"}


def test_unqualified_addresses_get_the_host_name_and_dots_are_removed(tern, sink):
    tern.write_config(f"<domain tern.test>\n  smtp-hosts [127.0.0.1]:{sink.port}\n</domain>\n"
                      "pickup-remove-dot yes\n")
    pickup, _ = pickup_dirs(tern)
    drop(pickup, "local", b"x-sender: root\nx-receiver: postmaster\n\n..dotted\nplain\n")
    tern.start()
    wait_for(lambda: sink.delivered() == ["postmaster@tern.test"], 20, what="delivery")
    m = messages(sink)[0]
    assert m["mail_from"] == "root@tern.test"
    assert "\r\n\r\n.dotted\r\nplain\r\n" in m["data"]


BAD_FILES = {
    "no-receiver": (b"x-sender: a@example.org\nSubject: x\n\nx\n", "no x-receiver line"),
    "bad-address": (b"x-sender: a@example.org\nx-receiver: not an address@@\n\nx\n", "bad x-receiver address"),
    "garbage": (bytes(range(256)) * 4, "not a pickup file"),
    "binary-header": (b"x-sender: a@example.org\nx-receiver: u9@example.net\n\x01\x02\x03junk\x7f\n\nx\n",
                      "binary data where the header section should be"),
    "oversize": (b"x-sender: a@example.org\nx-receiver: u9@example.net\n\n" + b"x" * 5000 + b"\n",
                 "larger than max-message-size"),
}


def test_malformed_files_go_to_the_bad_directory_and_the_rest_is_delivered(tern, sink):
    configure(tern, sink, "<source {pickup}>\n  max-message-size 4k\n</source>\n")
    pickup, bad = pickup_dirs(tern)
    drop(pickup, "1-good", b"x-sender: a@example.org\nx-receiver: good1@example.net\n\nfirst\n")
    for name, (data, _) in BAD_FILES.items():
        drop(pickup, name, data)
    os.symlink("/etc/passwd", pickup / "symlink.msg")
    os.mkfifo(pickup / "fifo.msg")
    (pickup / "half.tmp").write_bytes(b"x-sender: a@example.org\n")  # being written: left alone
    drop(pickup, "9-good", b"x-sender: a@example.org\nx-receiver: good2@example.net\n\nlast\n")
    tern.start()
    wait_for(lambda: sorted(sink.delivered()) == ["good1@example.net", "good2@example.net"], 20,
             what="the good files delivered")
    wanted = sorted([n + ".msg" for n in BAD_FILES] + ["symlink.msg", "fifo.msg"])
    wait_for(lambda: sorted(p.name for p in bad.iterdir()) == wanted, 10, what="the bad files moved")
    assert os.path.islink(bad / "symlink.msg")
    assert (bad / "garbage.msg").read_bytes() == BAD_FILES["garbage"][0]  # kept as it was
    assert sorted(p.name for p in pickup.iterdir()) == ["half.tmp"]
    log = wait_for_log(tern, "not a regular file", "a symbolic link",
                       *(f"pickup file {name}.msg moved to" for name in BAD_FILES))
    for name, (_, reason) in BAD_FILES.items():
        assert re.search(rf"pickup file {name}\.msg moved to {re.escape(str(bad))}: .*{reason}", log), name
    assert "pickup file symlink.msg moved to" in log and "a symbolic link" in log
    assert re.search(r"pickup file fifo\.msg moved to .*: not a regular file", log)
    assert sorted(sink.delivered()) == ["good1@example.net", "good2@example.net"]


def test_files_wait_while_qmgr_is_down(tern, sink):
    configure(tern, sink)
    pickup, _ = pickup_dirs(tern)
    tern.start()
    # qmgr dies and cannot come back for now: the file must stay
    (tern.libexec / "qmgr").unlink()
    os.kill(tern.service("qmgr")["pids"][0], 9)
    wait_for(lambda: not tern.service("qmgr")["ready"], 10, what="qmgr gone")
    drop(pickup, "waiting", b"x-sender: a@example.org\nx-receiver: later@example.net\n\nx\n")
    wait_for(lambda: "pickup file waiting.msg waits: qmgr" in tern.log_text(), 10, what="pickup waiting")
    assert (pickup / "waiting.msg").exists()
    (tern.libexec / "qmgr").symlink_to(TOP / "qmgr" / "qmgr")
    wait_for(lambda: sink.delivered() == ["later@example.net"], 90, what="delivery after qmgr is back")
    assert list(pickup.iterdir()) == []


# ---- mailq -----------------------------------------------------------------------

def mailq(tern, *args):
    return subprocess.run([str(SENDMAIL), "-C", str(tern.config), "-bp", *args], capture_output=True, text=True,
                          timeout=30)


def test_mailq_empty_queue(tern, sink):
    configure(tern, sink)
    pickup_dirs(tern)
    tern.start()
    r = mailq(tern)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Mail queue is empty\n"


def test_mailq_lists_a_deferred_recipient_with_its_reason(tern, tern_dir):
    sink = Sink(tern_dir, "--rcpt", "later@=451 4.2.0 mailbox busy")
    try:
        configure(tern, sink)
        pickup, _ = pickup_dirs(tern)
        tern.start()
        drop(pickup, "deferred", b"x-sender: cron@example.org\nx-receiver: later@example.net\n"
                                 b"x-receiver: now@example.net\n\nSubject: q\n\nbody\n")
        wait_for(lambda: sink.delivered() == ["now@example.net"], 20, what="the first recipient delivered")

        def listed():
            r = mailq(tern)
            return r if "mailbox busy" in r.stdout else None
        r = wait_for(listed, 20, what="the deferred recipient in mailq")
        lines = r.stdout.splitlines()
        assert lines[0] == "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
        assert re.match(r"^[0-9A-F]{16} +\d+ \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d  cron@example\.org$", lines[1]), lines
        assert re.match(r"^\(451 4\.2\.0 mailbox busy.*\)$", lines[2].strip()), lines
        assert lines[3].strip() == "later@example.net"
        assert "now@example.net" not in r.stdout
        assert lines[4] == ""
        assert re.match(r"^-- \d+ Kbytes in 1 Request\.$", lines[5]), lines
        r = subprocess.run(["mailq", "-C", str(tern.config)], capture_output=True, text=True, timeout=30,
                           executable=str(SENDMAIL))
        assert r.returncode == 0 and "later@example.net" in r.stdout
    finally:
        sink.stop()


def test_mailq_shows_files_still_in_the_pickup_directory(tern, sink):
    configure(tern, sink)
    pickup, _ = pickup_dirs(tern)
    tern.start()
    tern.ctl("stop")  # the queue is out of reach: mailq says so, and still shows the pickup files
    tern.master.wait(60)
    r = sendmail(tern, "-f", "cron@example.org", "u1@example.net")
    assert r.returncode == 0
    r = mailq(tern)
    assert r.returncode == 69 and "the queue is not available: tern is not running" in r.stderr
    lines = r.stdout.splitlines()
    assert re.match(r"^\d+\.\d+\.[0-9a-f]{16} +\d+ .* cron@example\.org$", lines[1]), lines
    assert lines[2].strip() == "(maildrop queue, sender UID 0)"
    assert lines[3].strip() == "u1@example.net"
    assert lines[-1] == "-- 1 Kbytes in 1 Request."
    # PowerMTA does not fix the order of the envelope lines
    drop(pickup, "zz-receiver-first", b"X-Receiver: second@example.net\nX-Sender: <>\n\nx\n")
    lines = mailq(tern).stdout.splitlines()
    assert re.match(r"^zz-receiver-first +\d+ .* MAILER-DAEMON$", lines[5]), lines
    assert lines[7].strip() == "second@example.net" and lines[-1] == "-- 1 Kbytes in 2 Requests."


def test_mailq_unreachable_queue_is_not_called_empty(tern):
    r = mailq(tern)
    assert r.returncode == 69 and r.stdout == "" and "tern is not running" in r.stderr


def test_source_pickup_header_rules_virtual_mta_and_job(tern, sink):
    import csv
    acct = tern.base / "acct" / "acct.csv"
    configure(tern, sink, "<virtual-mta v1>\n  smtp-source-host 127.0.0.1 tern.test\n</virtual-mta>\n"
                          "<source {pickup}>\n  process-x-virtual-mta yes\n  process-x-job yes\n"
                          "  add-message-id-header yes\n  add-date-header yes\n  remove-header X-Secret\n</source>\n"
                          f"<acct-file {acct}>\n  records r\n</acct-file>\n")
    pickup, bad = pickup_dirs(tern)
    drop(pickup, "1-plain", b"x-sender: a@example.org\nx-receiver: plain@example.net\n"
                            b"X-Job: job-8\nX-Secret: s\nSubject: y\n\nbody\n")
    drop(pickup, "2-vmta", b"x-sender: a@example.org\nx-receiver: viavmta@example.net\n"
                           b"X-Virtual-MTA: v1\nX-Job: job-7\nSubject: x\n\nbody\n")
    drop(pickup, "3-unknown", b"x-sender: a@example.org\nx-receiver: lost@example.net\nx-virtual-mta: nope\n\nbody\n")
    tern.start()
    wait_for(lambda: "plain@example.net" in sink.delivered(), 20, what="delivery")
    data = next(m["data"] for m in messages(sink) if m["rcpts"][0]["address"] == "plain@example.net")
    header = data.split("\r\n\r\n")[0]
    assert re.search(r"^Message-Id: <\S+@tern\.test>\r?$", header, re.M) and re.search(r"^Date: ", header, re.M)
    assert "X-Secret" not in header and "X-Job" not in header and "Subject: y" in header

    def rows():
        return list(csv.DictReader(acct.read_text().splitlines())) if acct.exists() else []
    got = {r["rcpt"]: r for r in wait_for(lambda: len(rows()) == 2 and rows(), 15, what="the r records")}
    assert got["plain@example.net"]["jobId"] == "job-8" and got["plain@example.net"]["vmta"] == ""
    assert got["viavmta@example.net"]["jobId"] == "job-7" and got["viavmta@example.net"]["vmta"] == "v1"
    wait_for(lambda: (bad / "3-unknown.msg").exists(), 10, what="the unknown virtual MTA refused")
    wait_for_log(tern, "the virtual MTA nope is not configured")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run mailq as other users")
def test_mailq_for_the_tern_group_only(tern, sink):
    import grp
    configure(tern, sink)
    pickup_dirs(tern)
    tern.config.chmod(0o644)
    tern.start()
    nobody = pwd.getpwnam("nobody").pw_uid
    tern_gid = grp.getgrnam("tern").gr_gid
    # a copy nobody may run, wherever the source tree lies
    sendmail = tern.base / "tern-sendmail"
    shutil.copy(SENDMAIL, sendmail)
    sendmail.chmod(0o755)

    def run_as(groups):
        def drop():
            os.setgroups(groups)
            os.setgid(65534)
            os.setuid(nobody)
        return subprocess.run([str(sendmail), "-C", str(tern.config), "-bp"], capture_output=True, text=True,
                              timeout=30, preexec_fn=drop)
    r = run_as([])
    assert r.returncode == 69 and r.stdout == ""
    assert "only root and members of the tern group may list the queue" in r.stderr
    r = run_as([tern_gid])
    assert r.returncode == 0 and r.stdout == "Mail queue is empty\n", r.stderr


def test_mailq_shows_control_characters_as_question_marks(tern):
    pickup, _ = pickup_dirs(tern)
    drop(pickup, "evil", b"x-sender: a\x1b[2J@example.org\nx-receiver: b\x07@example.net\n\nx\n")
    r = mailq(tern)  # tern is not running: only the pickup directory is listed
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "a?[2J@example.org" in r.stdout and "b?@example.net" in r.stdout


def test_reload_moves_the_pickup_directory(tern, sink):
    configure(tern, sink)
    pickup_dirs(tern)
    tern.start()
    new, new_bad = tern.base / "drop", tern.base / "drop-bad"
    for d in (new, new_bad):
        d.mkdir()
        if os.geteuid() == 0:
            os.chown(d, pwd.getpwnam("tern").pw_uid, -1)
    configure(tern, sink, f"pickup {new} {new_bad}\n")
    r = tern.ctl("reload")
    assert r.rc == 0, r.err
    wait_for(lambda: f"watching {new} (bad files go to {new_bad})" in tern.log_text(), 10, what="pickup reloaded")
    drop(new, "moved", b"x-sender: a@example.org\nx-receiver: moved@example.net\n\nx\n")
    drop(new, "bad", b"garbage\n")
    wait_for(lambda: sink.delivered() == ["moved@example.net"], 20, what="delivery from the new directory")
    wait_for(lambda: (new_bad / "bad.msg").exists(), 10, what="the bad file in the new bad directory")


def test_a_file_written_in_place_is_taken_once_complete(tern, sink):
    configure(tern, sink)
    pickup, _ = pickup_dirs(tern)
    tern.start()
    with open(pickup / "inplace.msg", "wb") as f:
        f.write(b"x-sender: a@example.org\nx-receiver: inplace@example.net\n\nSubject: half")
        f.flush()
        os.fchmod(f.fileno(), 0o644)
        # another file makes pickup scan the directory meanwhile
        drop(pickup, "other", b"x-sender: a@example.org\nx-receiver: other@example.net\n\nx\n")
        wait_for(lambda: sink.delivered() == ["other@example.net"], 20, what="the other file")
        assert (pickup / "inplace.msg").exists()
        f.write(b" and the rest\n\nbody\n")
    wait_for(lambda: "inplace@example.net" in sink.delivered(), 20, what="the file written in place")
    data = next(m["data"] for m in messages(sink) if m["rcpts"][0]["address"] == "inplace@example.net")
    assert "Subject: half and the rest\r\n\r\nbody\r\n" in data


def test_a_file_qmgr_keeps_breaking_off_on_goes_to_the_bad_directory(tern, sink):
    """A qmgr that takes the message and hangs up without answering, five
    times in a row: the file is put aside instead of blocking forever."""
    import socket
    import threading
    configure(tern, sink)
    pickup, bad = pickup_dirs(tern)
    tern.start()
    (tern.libexec / "qmgr").unlink()
    os.kill(tern.service("qmgr")["pids"][0], 9)
    wait_for(lambda: not tern.service("qmgr")["ready"], 10, what="qmgr gone")
    path = tern.spool / "private" / "qmgr"
    if path.exists():
        path.unlink()
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fake.bind(str(path))
    os.chmod(path, 0o777)
    fake.listen(8)
    stop = threading.Event()

    def hang_up():
        fake.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = fake.accept()
            except OSError:
                continue
            conn.settimeout(1)
            try:
                conn.recv(65536)
            except OSError:
                pass
            conn.close()
    t = threading.Thread(target=hang_up)
    t.start()
    try:
        drop(pickup, "poison", b"x-sender: a@example.org\nx-receiver: poison@example.net\n\nx\n")
        wait_for(lambda: (bad / "poison.msg").exists(), 30, what="the file put aside")
        wait_for_log_match(tern, r"pickup file poison\.msg moved to .*: qmgr broke off 5 times in a row")
    finally:
        stop.set()
        t.join()
        fake.close()
    path.unlink()
    (tern.libexec / "qmgr").symlink_to(TOP / "qmgr" / "qmgr")
    drop(pickup, "after", b"x-sender: a@example.org\nx-receiver: after@example.net\n\nx\n")
    wait_for(lambda: sink.delivered() == ["after@example.net"], 90, what="delivery once qmgr is back")
