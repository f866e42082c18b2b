"""Local delivery under master with every daemon: domains with "type file"
go to the local agent, which appends to mboxes (From line, >From quoting,
Return-Path and Delivered-To, a closing blank line, owned by the user) or
writes one new file per message (newfile-plain, newfile-pickup); unknown
users bounce with a DSN; aliases compiled by tern-sendmail -bi expand to
users, lists, :include: files, files and remote addresses (queued again
and delivered to the sink), and a loop ends.  Run as root, the mailboxes
belong to throwaway users made for the test."""
import csv
import email
import grp
import os
import pwd
import smtplib
import subprocess

import pytest

from conftest import TOP, wait_for, wait_for_log
from test_qmgr_delivery import Sink

SENDMAIL = TOP / "ctl" / "tern-sendmail"
ROOT = os.geteuid() == 0
USERS = ("ternlocal1", "ternlocal2")

pytestmark = pytest.mark.skipif(not (TOP / "local" / "local").exists(), reason="the local agent is not built")


@pytest.fixture(scope="module")
def users():
    """Two users to deliver to: made for the test as root (and removed
    after), else the invoking user twice."""
    if not ROOT:
        me = pwd.getpwuid(os.geteuid()).pw_name
        yield (me, me)
        return
    made = []
    for name in USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                            "/usr/sbin/nologin", name], check=True)
            made.append(name)
    yield USERS
    for name in made:
        subprocess.run(["userdel", name], check=False)


def mail_group():
    try:
        return grp.getgrnam("mail").gr_gid
    except KeyError:
        return os.getegid()


def configure(tern, sink, extra=""):
    """A configuration with a mbox domain, two newfile domains and the sink
    for everything remote; the mail directory as Debian's /var/mail."""
    base = tern.base
    maildir = base / "mail"
    maildir.mkdir()
    if ROOT:
        os.chown(maildir, 0, mail_group())
    os.chmod(maildir, 0o2775)
    tern.write_config(
        f"alias-file {base / 'aliases'}\n"
        "<source 127.0.0.1>\n    always-allow-relaying yes\n</source>\n"
        f"<domain local.test>\n    type file\n    file-format append-mbox\n"
        f"    file-destination {maildir}/$user\n</domain>\n"
        f"<domain plain.test>\n    type file\n    file-format newfile-plain\n"
        f"    file-destination {base}/files/$user\n</domain>\n"
        f"<domain pickup.test>\n    type file\n    file-format newfile-pickup\n"
        f"    file-destination {base}/pickup/$user/$domain\n</domain>\n"
        f"<domain remote.test>\n    smtp-hosts [127.0.0.1]:{sink.port}\n</domain>\n"
        f"<domain sender.test>\n    smtp-hosts [127.0.0.1]:{sink.port}\n</domain>\n"
        f"<acct-file {base / 'acct' / 'acct.csv'}>\n    records d, b\n</acct-file>\n" + extra)
    return maildir


def send(tern, rcpts, body, sender="alice@sender.test"):
    with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
        assert s.sendmail(sender, rcpts, body) == {}


def mbox(maildir, user, count=1):
    """The mailbox once it holds count messages."""
    path = maildir / user

    def ready():
        if not path.exists():
            return None
        text = path.read_text()
        whole = text.endswith("\n\n")  # not in the middle of an append
        return text if whole and text.count("\nReturn-Path: ") >= count else None
    return wait_for(ready, 20, what=f"{count} message(s) in {path}")


def acct_rows(tern):
    path = tern.base / "acct" / "acct.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def compile_aliases(tern, text):
    (tern.base / "aliases").write_text(text)
    r = subprocess.run([str(SENDMAIL), "-C", str(tern.config), "-bi"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def sink(tern):
    s = Sink(tern.base)
    yield s
    s.stop()


def dsns(sink):
    return [m for m in sink.records("message") if m.get("outcome") == "accepted" and m["mail_from"] == ""]


# ---- append-mbox ------------------------------------------------------------------------------


def test_mbox_gets_from_line_quoting_headers_and_belongs_to_the_user(tern, sink, users):
    maildir = configure(tern, sink)
    tern.start()
    user = users[0]
    body = (b"From: alice@sender.test\r\nSubject: one\r\n\r\nhello\r\nFrom the start of a line\r\n"
            b">From already quoted\r\nlast line\r\n")
    send(tern, [f"{user}@local.test"], body)
    text = mbox(maildir, user)
    assert text.startswith("From alice@sender.test ")
    lines = text.split("\n")
    assert lines[1] == "Return-Path: <alice@sender.test>"
    assert lines[2] == f"Delivered-To: {user}@local.test"
    assert "\n>From the start of a line\n" in text
    assert "\n>>From already quoted\n" not in text and "\n>From already quoted\n" in text
    assert "\r" not in text
    assert text.endswith("last line\n\n")
    st = os.stat(maildir / user)
    assert st.st_mode & 0o777 == 0o600
    assert st.st_uid == pwd.getpwnam(user).pw_uid
    if ROOT:
        assert st.st_gid == mail_group()
    wait_for(lambda: not (maildir / f"{user}.lock").exists(), 5, what="the dotlock removed")
    # a second message is appended after a blank line, with its own From line
    send(tern, [f"{user.upper()}@LOCAL.TEST"], b"Subject: two\r\n\r\nsecond\r\n", sender="")
    text = mbox(maildir, user, 2)
    assert "\n\nFrom MAILER-DAEMON " in text and "\nReturn-Path: <>\n" in text
    rows = wait_for(lambda: [r for r in acct_rows(tern) if r["type"] == "d"] if len(
        [r for r in acct_rows(tern) if r["type"] == "d"]) >= 2 else None, 20, what="the d records")
    assert {r["dlvType"] for r in rows} == {"file"}
    assert rows[0]["rcpt"] == f"{user}@local.test" and rows[0]["dsnStatus"].startswith("2.")


def test_unknown_user_bounces_with_a_dsn(tern, sink, users):
    maildir = configure(tern, sink)
    tern.start()
    send(tern, ["nosuchuser-xyz@local.test", f"{users[0]}@local.test"], b"Subject: x\r\n\r\nx\r\n")
    mbox(maildir, users[0])
    dsn = wait_for(lambda: dsns(sink), 20, what="the DSN")
    assert [r["address"] for r in dsn[0]["rcpts"]] == ["alice@sender.test"]
    report = email.message_from_string(dsn[0]["data"])
    text = report.as_string()
    assert "nosuchuser-xyz@local.test" in text and "5.1.1" in text and "user unknown" in text
    assert f"{users[0]}@local.test" not in text.split("message/delivery-status")[1].split("text/rfc822")[0]
    b = wait_for(lambda: [r for r in acct_rows(tern) if r["type"] == "b"], 20, what="the b record")
    assert b[0]["dlvType"] == "file" and b[0]["bounceCat"] == "bad-mailbox"


def test_plus_extension_reaches_the_user(tern, sink, users):
    maildir = configure(tern, sink)
    tern.start()
    send(tern, [f"{users[0]}+news@local.test"], b"Subject: plus\r\n\r\nx\r\n")
    assert f"Delivered-To: {users[0]}+news@local.test" in mbox(maildir, users[0])


# ---- newfile-plain, newfile-pickup ---------------------------------------------------------------


def user_dir(path, user):
    path.mkdir(parents=True)
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, 0o700)
    return path


def test_newfile_plain_and_pickup_write_one_file_per_message(tern, sink, users):
    configure(tern, sink)
    user = users[0]
    plain = user_dir(tern.base / "files" / user, user)
    pickup = user_dir(tern.base / "pickup" / user / "pickup.test", user)
    tern.start()
    body = b"Subject: files\r\n\r\nFrom here\r\n"
    send(tern, [f"{user}@plain.test"], body)
    send(tern, [f"{user}@plain.test"], body)
    send(tern, [f"{user}@pickup.test"], body, sender="")
    def whole():  # a file being written is hidden (.NAME.tmp) until its rename
        return sorted(p for p in plain.iterdir() if not p.name.startswith("."))
    files = wait_for(lambda: len(whole()) == 2 and whole(), 20, what="two plain files")
    for f in files:
        data = f.read_bytes()
        assert data.endswith(body) and b">From" not in data
        assert os.stat(f).st_uid == pwd.getpwnam(user).pw_uid
    [p] = wait_for(lambda: [f for f in pickup.iterdir() if not f.name.startswith(".")], 20, what="the pickup file")
    data = p.read_bytes()
    assert data.startswith(b"x-sender: <>\nx-receiver: " + f"{user}@pickup.test".encode() + b"\n")
    assert data.endswith(body)


# ---- aliases ------------------------------------------------------------------------------------------


def test_aliases_expand_to_users_lists_includes_files_and_remote(tern, sink, users):
    maildir = configure(tern, sink)
    u1, u2 = users
    (tern.base / "list.txt").write_text(f"# the list\n{u2}\n")
    r = compile_aliases(tern, f"""# test aliases
Postmaster: {u1}
team: {u1},
    {u2}@local.test, {u1}
list: :include:{tern.base / 'list.txt'}
fwd: friend@remote.test, {u2}
archive: {maildir / 'archive'}
loop1: loop2
loop2: loop1, {u2}
self: self, {u1}
prog: "|/bin/true"
""")
    assert "9 aliases" in r.stdout
    tern.start()
    send(tern, ["postmaster@local.test"], b"Subject: pm\r\n\r\nx\r\n")
    assert "Delivered-To: postmaster@local.test" in mbox(maildir, u1)
    send(tern, ["team@local.test"], b"Subject: team\r\n\r\nx\r\n")
    send(tern, ["list@local.test"], b"Subject: list\r\n\r\nx\r\n")
    send(tern, ["fwd@local.test"], b"Subject: fwd\r\n\r\nforwarded\r\n")
    send(tern, ["loop1@local.test"], b"Subject: loop\r\n\r\nx\r\n")
    send(tern, ["archive@local.test"], b"Subject: archive\r\n\r\nx\r\n")
    if u1 != u2:
        # u1: postmaster, team (once: duplicates removed); u2: team, list, fwd, loop1
        text1 = mbox(maildir, u1, 2)
        text2 = mbox(maildir, u2, 4)
        assert text1.count("Subject: team") == 1
        for subject in ("team", "list", "fwd", "loop"):
            assert f"Subject: {subject}\n" in text2
    forwarded = wait_for(lambda: [m for m in sink.records("message") if m.get("outcome") == "accepted"
                                  and m["mail_from"] == "alice@sender.test"], 20, what="the forwarded copy")
    assert [r["address"] for r in forwarded[0]["rcpts"]] == ["friend@remote.test"]
    assert "Delivered-To: fwd@local.test" in forwarded[0]["data"]
    archive = wait_for(lambda: (maildir / "archive").exists() and (maildir / "archive").read_text(), 20,
                       what="the archive file")
    assert "Subject: archive" in archive
    if ROOT:
        assert os.stat(maildir / "archive").st_uid == pwd.getpwnam("nobody").pw_uid
    # self-reference: the user's own mailbox, no loop
    send(tern, ["self@local.test"], b"Subject: self\r\n\r\nx\r\n")
    wait_for(lambda: "Subject: self" in (maildir / "self").read_text() if (maildir / "self").exists() else
             "Subject: self" in (maildir / u1).read_text(), 20, what="the self alias")
    # a command is refused with a bounce that says why
    send(tern, ["prog@local.test"], b"Subject: prog\r\n\r\nx\r\n")
    dsn = wait_for(lambda: dsns(sink), 20, what="the DSN for the command")
    assert "delivery to a command" in dsn[0]["data"] and "not supported" in dsn[0]["data"]
    assert "Subject: prog" not in (maildir / u1).read_text()


def test_forwarding_loop_through_delivered_to_bounces(tern, sink, users):
    maildir = configure(tern, sink)
    compile_aliases(tern, f"back: {users[0]}\n")
    tern.start()
    send(tern, ["back@local.test"], b"Delivered-To: back@local.test\r\nSubject: looped\r\n\r\nx\r\n")
    dsn = wait_for(lambda: dsns(sink), 20, what="the loop DSN")
    assert "5.4.6" in dsn[0]["data"] and "loop" in dsn[0]["data"]
    assert not (maildir / users[0]).exists()


def test_newaliases_reports_errors_with_file_and_line(tern):
    tern.write_config(f"alias-file {tern.base / 'aliases'}\n")
    (tern.base / "aliases").write_text("ok: root\nbroken line without colon\n")
    r = subprocess.run([str(SENDMAIL), "-C", str(tern.config), "-bi"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert f"{tern.base / 'aliases'}:2:" in r.stderr
    assert not (tern.base / "aliases.db").exists()


def test_missing_then_stale_alias_database_is_logged(tern, sink, users):
    maildir = configure(tern, sink)
    tern.start()
    for n in (1, 2):
        send(tern, [f"{users[0]}@local.test"], f"Subject: n{n}\r\n\r\nx\r\n".encode())
    mbox(maildir, users[0], 2)
    wait_for_log(tern, f"no aliases: {tern.base / 'aliases.db'} does not exist", count=1)
    compile_aliases(tern, f"again: {users[0]}\n")
    later = os.stat(tern.base / "aliases.db").st_mtime + 60
    os.utime(tern.base / "aliases", (later, later))
    send(tern, ["again@local.test"], b"Subject: stale\r\n\r\nx\r\n")
    assert "Delivered-To: again@local.test" in mbox(maildir, users[0], 3)  # still used
    wait_for(lambda: "is older than" in tern.log_text(), 10, what="the stale database warning")


@pytest.mark.skipif(not ROOT, reason="identities need root")
def test_nested_include_is_read_with_its_owners_identity(tern, sink, users):
    maildir = configure(tern, sink)
    u1, u2 = users
    outer, secret = tern.base / "outer.txt", tern.base / "secret.txt"
    secret.write_text(f"{u2}\n")
    os.chmod(secret, 0o600)  # root's: u1 may not read it
    outer.write_text(f":include:{secret}\n")
    os.chown(outer, pwd.getpwnam(u1).pw_uid, -1)
    compile_aliases(tern, f"list: :include:{outer}\ndirect: :include:{secret}\n")
    tern.start()
    send(tern, ["direct@local.test"], b"Subject: direct\r\n\r\nx\r\n")
    assert "Subject: direct" in mbox(maildir, u2)  # named by root's database: read as root
    send(tern, ["list@local.test"], b"Subject: nested\r\n\r\nx\r\n")
    wait_for(lambda: f"cannot open the include file {secret}" in tern.log_text(), 20, what="the refused include")
    assert "Subject: nested" not in (maildir / u2).read_text()


def test_alias_loop_without_a_user_bounces(tern, sink, users):
    configure(tern, sink)
    compile_aliases(tern, "ping: pong\npong: ping\n")
    tern.start()
    send(tern, ["ping@local.test"], b"Subject: ping\r\n\r\nx\r\n")
    dsn = wait_for(lambda: dsns(sink), 20, what="the loop DSN")
    assert "5.4.6" in dsn[0]["data"] and "gives no destination" in dsn[0]["data"]
