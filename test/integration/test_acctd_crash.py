"""acctd's exactly-once promise: kill -9 acctd, or drop the client, at any
moment while records flow; after restart and resend every record is in
the files exactly once.  A write that fails (a full disk, simulated with a
file size limit) is not confirmed, retried, and lands once."""
import glob
import os
import random
import resource
import socket

from test_acctd_records import DBT, Feeder, acctd_factory, delivery  # noqa: F401 (fixture)
from conftest import wait_for_log

ROTATING_BLOCK = """<acct-file LOG/acct.csv>
    records d, b
    record-fields d *, dlvTlsProtocol, dlvTlsCipher
    record-fields b *, dlvTlsProtocol, dlvTlsCipher
    max-size 64k
</acct-file>
"""
HEADER = DBT + ["dlvTlsProtocol", "dlvTlsCipher"]


def record_type(seq):
    return "b" if seq % 7 == 0 else "d"


def all_rows(a):
    """(file, rows) of the live and the rotated files; each must start with the header."""
    seqs = []
    names = sorted(os.path.basename(p) for p in glob.glob(str(a.logdir / "acct*.csv")))
    for name in names:
        header, rows = a.rows(name)
        assert header == HEADER, name
        for row in rows:
            assert len(row) == len(HEADER), (name, row)
            seq = int(row[4][len("user"):].split("@")[0])
            assert row == [record_type(seq)] + row[1:] and row[19] == f"job{seq}", (name, row)
            seqs.append(seq)
    return names, seqs


class Outbox:
    """qmgr's outbox: records stay until acctd confirms them."""

    def __init__(self):
        self.next = 1
        self.confirmed = 0

    def send_from(self, feeder, first, count):
        """Sends the records first.. onwards: resends, then count new ones."""
        last = self.next - 1 + count
        for seq in range(first, last + 1):
            feeder.send(seq, record_type(seq), **delivery(seq))
        self.next = last + 1


def burst(a, box, rng):
    """A client session: hello, resend what is unconfirmed, send new
    records, maybe wait for part of them; returns the open feeder."""
    f = Feeder(a)
    assert f.resume >= box.confirmed, "acctd never forgets what it confirmed"
    box.confirmed = f.resume
    try:
        box.send_from(f, f.resume + 1, rng.randint(50, 400))
        if rng.random() < 0.5:
            f.wait_ack(rng.randint(f.resume + 1, box.next - 1))
    except (BrokenPipeError, ConnectionError, socket.timeout):
        pass
    return f


def test_kill9_loop_every_record_exactly_once(acctd_factory):
    """20 rounds: kill -9 acctd at whatever point it reached; every other
    round the client dies first too (without waiting for its acks)."""
    rng = random.Random(20261128)
    a = acctd_factory(ROTATING_BLOCK).start()
    box = Outbox()
    for round_no in range(20):
        f = burst(a, box, rng)
        if round_no % 2:
            f.close()
            f = burst(a, box, rng)
        a.kill()
        f.close()
        a.start()
    f = Feeder(a)
    box.send_from(f, f.resume + 1, 0)
    # When the last kill came after everything was written, the resume
    # says so and there is nothing left to acknowledge.
    confirmed = f.resume if f.resume >= box.next - 1 else f.wait_ack(box.next - 1)
    assert confirmed == box.next - 1
    names, seqs = all_rows(a)
    assert sorted(seqs) == list(range(1, box.next)), "every record once, none lost"
    assert len(names) > 5, "rotations happened along the way"
    # Whether a kill landed between a write and its state is luck; the
    # next test makes those states on purpose.
    print("cut back after a kill:", a.log_text().count("never confirmed"), "times")


def test_start_cuts_back_what_was_never_confirmed(acctd_factory):
    """The states a kill can leave, made by hand: rows appended after the
    last saved state (in the live file, or in a file logrotate renamed),
    and a new live file the state does not know yet."""
    a = acctd_factory(ROTATING_BLOCK).start()
    f = Feeder(a)
    for seq in range(1, 4):
        f.send(seq, record_type(seq), **delivery(seq))
    f.wait_ack(3)
    f.close()
    a.kill()
    live = a.logdir / "acct.csv"
    good = live.read_bytes()
    with open(live, "ab") as out:  # a batch written, its state not yet
        out.write(b"d,half a row of seq 4")
    a.start()
    assert live.read_bytes() == good
    assert Feeder(a).resume == 3
    a.kill()
    # logrotate renamed the file, then the crash; a new live file appeared.
    moved = a.logdir / "acct.csv.1"
    live.rename(moved)
    with open(moved, "ab") as out:
        out.write(b"d,more of seq 4\r\n")
    live.write_bytes(good[:good.index(b"\r\n") + 2] + b"d,unconfirmed\r\n")
    os.chown(live, moved.stat().st_uid, moved.stat().st_gid)
    a.start()
    assert moved.read_bytes() == good
    header, rows = a.rows()
    assert header == HEADER and rows == []
    wait_for_log(a, "never confirmed", count=3)
    a.kill()
    # A file that is not ours (another header) is never cut: it is moved aside.
    live.unlink()
    live.write_bytes(b"name,comment\r\nmine,keep me\r\n")
    os.chown(live, moved.stat().st_uid, moved.stat().st_gid)
    a.start()
    kept = [p for p in glob.glob(str(a.logdir / "acct-*.csv"))]
    assert len(kept) == 1 and open(kept[0], "rb").read() == b"name,comment\r\nmine,keep me\r\n"
    assert a.rows() == (HEADER, [])


def test_write_failure_is_retried_and_not_confirmed(acctd_factory):
    # Kept as the test's own user: changing another user's limits needs a
    # capability that containers often lack.
    a = acctd_factory(ROTATING_BLOCK).start(args=["-R"])
    f = Feeder(a)
    for seq in range(1, 6):
        f.send(seq, record_type(seq), **delivery(seq))
    f.wait_ack(5)
    live = a.logdir / "acct.csv"
    size = live.stat().st_size
    # As if the disk were full: any write past size + 100 fails.
    resource.prlimit(a.proc.pid, resource.RLIMIT_FSIZE, (size + 100, resource.RLIM_INFINITY))
    for seq in range(6, 21):
        f.send(seq, record_type(seq), **delivery(seq))
    f.conn.sock.settimeout(2.5)
    try:
        reply = f.conn.receive()
        raise AssertionError(f"confirmed what could not be written: {reply}")
    except socket.timeout:
        pass
    assert live.stat().st_size == size, "a failed batch leaves no partial rows"
    assert a.request("status")["reason"] == "retrying"
    resource.prlimit(a.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    f.conn.sock.settimeout(10)
    assert f.wait_ack(20) == 20
    _, seqs = all_rows(a)
    assert seqs == list(range(1, 21))
    wait_for_log(a, "retrying", "written again")
