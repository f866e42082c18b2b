"""tern-sendmail -bs: SMTP on standard input and output, as programs that
talk SMTP to a local sendmail use it.  Each accepted message is a pickup
file before the 250, and the pickup service delivers it."""
import subprocess

from conftest import wait_for
from test_pickup import SENDMAIL, configure, messages, pickup_dirs, sink  # noqa: F401 (sink is a fixture)


def bs(tern, conversation):
    r = subprocess.run([str(SENDMAIL), "-C", str(tern.config), "-bs"], input=conversation.encode(),
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().split("\r\n")


def codes(lines):
    return [line[:3] for line in lines if line and line[3:4] == " "]


def test_bs_session_queues_each_message_and_pickup_delivers_it(tern, sink):
    configure(tern, sink)
    pickup, _ = pickup_dirs(tern)
    lines = bs(tern, "EHLO client.example\r\n"
                     "MAIL FROM:<app@example.org> BODY=8BITMIME\r\nRCPT TO:<u1@example.net>\r\n"
                     "RCPT TO:<u2@example.net>\r\nDATA\r\nSubject: one\r\n\r\n..leading dot\r\nbody\r\n.\r\n"
                     "MAIL FROM:<>\r\nRCPT TO:<u3@example.net>\r\nDATA\r\nSubject: two\r\n\r\nsecond\r\n.\r\n"
                     "QUIT\r\n")
    assert lines[0].startswith("220 tern.test ESMTP")
    assert "250-PIPELINING" in lines and "250-8BITMIME" in lines
    assert codes(lines) == ["220", "250", "250", "250", "250", "354", "250",
                            "250", "250", "354", "250", "221"], lines
    assert len(list(pickup.glob("*.msg"))) == 2  # queued while tern is stopped
    tern.start()
    wait_for(lambda: sorted(sink.delivered()) == ["u1@example.net", "u2@example.net", "u3@example.net"], 20,
             what="both messages")
    by_subject = {("one" if "Subject: one" in m["data"] else "two"): m for m in messages(sink)}
    assert by_subject["one"]["mail_from"] == "app@example.org"
    assert "\r\n.leading dot\r\nbody\r\n" in by_subject["one"]["data"]
    assert by_subject["two"]["mail_from"] == ""


def test_bs_refuses_bad_commands_and_queues_nothing_for_them(tern, sink):
    configure(tern, sink)
    pickup, _ = pickup_dirs(tern)
    lines = bs(tern, "HELO c\r\nRCPT TO:<u1@example.net>\r\nDATA\r\nMAIL FROM:<a@b.example>\r\n"
                     "MAIL FROM:<c@d.example>\r\nRCPT TO:<broken\r\nRCPT TO:u1@example.net\r\nDATA\r\n"
                     "RSET\r\nNOOP\r\nVRFY root\r\nETRN x\r\n" + "NOOP " + "x" * 3000 + "\r\nQUIT\r\n")
    assert codes(lines) == ["220", "250", "503", "503", "250", "503", "501", "501", "503",
                            "250", "250", "252", "502", "500", "221"], lines
    assert list(pickup.glob("*.msg")) == []


def test_bs_input_ending_inside_data_queues_nothing(tern, sink):
    configure(tern, sink)
    pickup, _ = pickup_dirs(tern)
    lines = bs(tern, "MAIL FROM:<a@b.example>\r\nRCPT TO:<u1@example.net>\r\nDATA\r\nSubject: cut\r\n\r\nno end")
    assert codes(lines) == ["220", "250", "250", "354"], lines
    assert list(pickup.glob("*.msg")) == []


def test_bs_bare_user_names_get_the_host_name(tern, sink):
    configure(tern, sink)
    pickup, _ = pickup_dirs(tern)
    bs(tern, "MAIL FROM:<cron>\r\nRCPT TO:<root>\r\nDATA\r\nSubject: x\r\n\r\ny\r\n.\r\nQUIT\r\n")
    (name,) = pickup.glob("*.msg")
    head = name.read_text().splitlines()[:2]
    assert head == ["x-sender: cron@tern.test", "x-receiver: root@tern.test"], head
