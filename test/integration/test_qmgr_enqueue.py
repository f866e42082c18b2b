"""Integration tests of qmgr's enqueue server: the real qmgr binary on a
temporary spool, driven through its UNIX socket by ternipc clients, and
the queue inspected offline with `qmgr -L` / `qmgr -B` after it stopped.

Covers: acknowledgement with a queue ID, strict protocol (a bad client is
dropped, the others go on), many concurrent clients, kill -9 at random
moments (every acknowledged message survives exactly once, the outbox
numbering stays gap-free), a full disk (temporary refusal, nothing lost,
service back when space returns) and a throughput figure."""
import contextlib
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

import ternipc
import ternqmgr
from conftest import wait_for, wait_for_log

TOP = pathlib.Path(__file__).resolve().parents[2]
QMGR = TOP / "qmgr" / "qmgr"
IS_ROOT = os.geteuid() == 0


class Qmgr:
    """One qmgr daemon on a spool directory; stop() or kill() it by PID."""

    def __init__(self, spool, no_sync=False, log_dir=None):
        self.spool = pathlib.Path(spool)
        self.socket = self.spool / "private" / "qmgr"
        self.log_path = pathlib.Path(log_dir or spool) / "qmgr.log"
        self.config = pathlib.Path(log_dir or spool) / "tern.conf"
        self.no_sync = no_sync
        self.proc = None

    def write_config(self):
        # r records are made only for an accounting file that holds them:
        # one r per recipient is what check_consistent counts on.
        self.config.write_text(f"spool {self.spool}\nsync-msg-create {'no' if self.no_sync else 'yes'}\n"
                               f"<acct-file {self.config.parent}/acct.csv>\n  records r\n</acct-file>\n")

    def start(self, timeout=20):
        assert QMGR.exists(), f"{QMGR} is not built"
        self.write_config()
        args = [str(QMGR), "-f", "-c", str(self.config)]
        if IS_ROOT:
            args += ["-u", "nobody"]
        ready_r, ready_w = os.pipe()
        env = dict(os.environ, TERN_STATUS_FD=str(ready_w))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                         pass_fds=(ready_w,))
        os.close(ready_w)
        try:
            deadline = time.monotonic() + timeout
            got = b""
            while not got.endswith(b"\n") and time.monotonic() < deadline:
                chunk = os.read(ready_r, 16)
                if not chunk:
                    break
                got += chunk
        finally:
            os.close(ready_r)
        assert got == b"ready\n", f"qmgr did not report readiness: {self.log()}"

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        """SIGTERM; a clean exit (status 0, no sanitizer report) is part of the test."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self.proc = None
        assert rc == 0, f"qmgr exited with {rc}: {self.log()}"

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def client(self):
        return ternqmgr.EnqueueClient(self.socket)

    def offline(self, *args):
        self.write_config()
        proc = subprocess.run([str(QMGR), "-c", str(self.config), *args], capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc.stdout

    def listing(self):
        return Listing(self.offline("-L").decode())

    def body(self, qid):
        return self.offline("-B", qid)


class Listing:
    """What `qmgr -L` printed, parsed."""

    def __init__(self, text):
        self.messages = {}  # qid -> (sender, body size, recipient count)
        self.message_lines = []
        self.rcpts = {}  # qid -> [(state, queue, address)]
        self.outbox = []  # (seq, type, qid, index)
        self.outbox_next = None
        for line in text.splitlines():
            f = line.split("\t")
            if f[0] == "message":
                self.message_lines.append(f[1])
                self.messages[f[1]] = (f[2], int(f[4]), int(f[5]))
            elif f[0] == "rcpt":
                self.rcpts.setdefault(f[1], []).append((f[3], f[4], f[5]))
            elif f[0] == "outbox":
                self.outbox.append((int(f[1]), f[2], f[3], int(f[4])))
            elif f[0] == "outbox_next":
                self.outbox_next = int(f[1])

    def check_consistent(self, acctd_ran=False):
        """Every message once, its recipients all there, the outbox gap-free
        with one 'r' per recipient.  When acctd ran (under master) it may
        have taken records already: what is left is then the gap-free tail
        of the sequence, and outbox_next still counts one per recipient."""
        assert len(self.message_lines) == len(set(self.message_lines))
        for qid, (_, _, count) in self.messages.items():
            assert len(self.rcpts.get(qid, [])) == count, qid
        seqs = [o[0] for o in self.outbox]
        recipients = sum(c for _, _, c in self.messages.values())
        if acctd_ran:
            assert seqs == list(range(self.outbox_next - len(seqs), self.outbox_next))
            assert self.outbox_next == recipients + 1
            return
        assert seqs == list(range(1, len(seqs) + 1))
        assert self.outbox_next == len(seqs) + 1
        assert len(self.outbox) == recipients
        assert {o[2] for o in self.outbox} == set(self.messages)


@pytest.fixture
def spool():
    # Not under pytest's tmp_path: qmgr drops to nobody, who must reach it.
    path = tempfile.mkdtemp(prefix="tern-qmgr-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def qmgr(spool):
    q = Qmgr(spool)
    q.start()
    yield q
    q.stop()


def test_enqueue_acknowledges_with_a_queue_id_and_stores_everything(qmgr):
    body = b"Subject: test\r\n\r\n" + b"x" * 300000 + b"\r\n"
    with qmgr.client() as c:
        reply = c.enqueue("alice@example.org",
                          ["bob@Example.COM", ("carol@example.net", {"orcpt": "rfc822;carol@example.net",
                                                                     "notify": "SUCCESS,DELAY"})],
                          body, envid="E1", ret="HDRS", size=len(body), body_type="8BITMIME", smtputf8=0,
                          client_ip="192.0.2.7", client_name="mx.example.org", helo="mx.example.org",
                          src_type="smtp", listener="0/0:25", auth_user="alice", vmta="pool-a",
                          mail_job="job-17")
        assert reply["status"] == 250
        qid = reply["queue_id"]
        second = c.enqueue("", ["postmaster@example.com"], b"bounce\r\n")
        assert second["status"] == 250
        assert second["queue_id"] > qid
    qmgr.stop()
    assert f"{qid}: queued" in qmgr.log()
    listing = qmgr.listing()
    listing.check_consistent()
    assert listing.messages[qid] == ("alice@example.org", len(body), 2)
    assert listing.rcpts[qid] == [("pending", "example.com/pool-a", "bob@Example.COM"),
                                  ("pending", "example.net/pool-a", "carol@example.net")]
    assert listing.rcpts[second["queue_id"]] == [("pending", "example.com/{default}", "postmaster@example.com")]
    assert qmgr.body(qid) == body


BAD_STREAMS = {
    "bad length": b"\x00\x00\x00\x00",
    "huge length": b"\x7f\xff\xff\xff",
    "unknown attribute": ternipc.encode([("request", "enqueue"), ("sender", "a@b.c"), ("colour", "red")]),
    "no sender": ternipc.encode([("request", "enqueue")]),
    "rcpt first": ternipc.encode([("request", "rcpt"), ("recipient", "a@b.c")]),
    "data before rcpt": ternipc.encode([("request", "enqueue"), ("sender", "")])
    + ternipc.encode([("request", "data"), ("data", b"x")]),
    "end without rcpt": ternipc.encode([("request", "enqueue"), ("sender", "")])
    + ternipc.encode([("request", "end")]),
    "rcpt without domain": ternipc.encode([("request", "enqueue"), ("sender", "")])
    + ternipc.encode([("request", "rcpt"), ("recipient", "postmaster")]),
    "string as int": ternipc.encode([("request", "enqueue"), ("sender", ""), ("size", "12")]),
    "truncated attribute": b"\x00\x00\x00\x05s\x07req",
}


@pytest.mark.parametrize("name", sorted(BAD_STREAMS))
def test_protocol_violation_drops_only_that_client(qmgr, name):
    with qmgr.client() as good, qmgr.client() as bad:
        # The good client is in the middle of a message when the bad one
        # misbehaves.
        frames = ternqmgr.enqueue_frames("a@example.org", ["b@example.com"], b"hello\r\n")
        good.send_raw(frames[:len(frames) // 2])
        bad.send_raw(BAD_STREAMS[name])
        with pytest.raises((ConnectionError, OSError)):
            bad.receive()
        good.send_raw(frames[len(frames) // 2:])
        assert good.receive()["status"] == 250
    wait_for(lambda: "protocol violation" in qmgr.log(), what="the violation in qmgr's log")
    qmgr.stop()
    listing = qmgr.listing()
    assert len(listing.messages) == 1
    listing.check_consistent()


def test_abandoned_message_leaves_nothing(qmgr):
    with qmgr.client() as c:
        frames = ternqmgr.enqueue_frames("a@example.org", ["b@example.com"], b"x" * 1000)
        c.send_raw(frames[:-10])
    with qmgr.client() as c:
        assert c.enqueue("a@example.org", ["b@example.com"], b"ok")["status"] == 250
    qmgr.stop()
    assert len(qmgr.listing().messages) == 1


def run_clients(qmgr, nclients, per_client, body_size=2048, stop_event=None):
    """nclients threads each enqueue per_client messages (or until
    stop_event or a broken connection).  Returns {qid: (token, size)} of
    the acknowledged ones, and the refusals."""
    acked, refused, lock = {}, [], threading.Lock()

    def worker(n):
        try:
            with qmgr.client() as c:
                for i in range(per_client):
                    if stop_event is not None and stop_event.is_set():
                        return
                    token = f"client{n}-msg{i}-{random.random()}"
                    size = body_size + random.randrange(0, 64)
                    body = (f"X-Token: {token}\r\n\r\n".encode() + b"b" * size)[:size]
                    reply = c.enqueue(f"s{n}@example.org", [f"r{i}@d{i % 7}.example", f"x{n}@other.example"],
                                      body)
                    with lock:
                        if reply["status"] == 250:
                            assert reply["queue_id"] not in acked
                            acked[reply["queue_id"]] = (token, size)
                        else:
                            refused.append(reply)
        except (ConnectionError, OSError, ValueError):
            if stop_event is None:
                raise

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(nclients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acked, refused


def test_many_concurrent_clients_get_distinct_ids(qmgr):
    acked, refused = run_clients(qmgr, 50, 20)
    assert not refused
    assert len(acked) == 1000
    qmgr.stop()
    listing = qmgr.listing()
    listing.check_consistent()
    assert set(listing.messages) == set(acked)
    for qid, (_, size) in acked.items():
        assert listing.messages[qid][1] == size


def test_burst_of_connections_while_qmgr_is_busy(qmgr):
    """smtpd opens a connection for each message its pipe has no room
    for, and qmgr accepts them between turns of its loop: a burst that
    arrives while the loop is busy waits in the socket's backlog.  With
    qmgr stopped, 600 connections are made without one refused (a
    backlog of 128 refused the 130th with EAGAIN, and smtpd answered that
    message 451); once qmgr goes on, every one of them queues a message."""
    import socket
    n = 600
    conns = []
    os.kill(qmgr.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect(str(qmgr.socket))  # BlockingIOError when the backlog is full
            conns.append(s)
    finally:
        os.kill(qmgr.proc.pid, signal.SIGCONT)
    qids = []
    for i, s in enumerate(conns):
        with ternqmgr.EnqueueClient(None, sock=s) as c:
            reply = c.enqueue(f"s{i}@example.org", [f"r{i}@example.com"], b"burst\r\n")
        assert reply["status"] == 250, reply
        qids.append(reply["queue_id"])
    assert len(set(qids)) == n
    qmgr.stop()
    listing = qmgr.listing()
    listing.check_consistent()
    assert set(listing.messages) == set(qids)


def test_pipelined_messages_are_answered_in_order(qmgr):
    """A client sends 100 messages without waiting for a reply: qmgr
    commits them as they come (many per flush, not one per reply) and
    answers them in their order; a control request then waits for no
    reply, since none is due."""
    from ternqmgr import enqueue_frames
    n = 100
    with qmgr.client() as c:
        c.send_raw(b"".join(enqueue_frames(f"s{i}@example.org", [f"r{i}@example.com"], b"x" * (i + 1) + b"\r\n")
                            for i in range(n)))
        replies = [c.receive() for _ in range(n)]
    assert [r["status"] for r in replies] == [250] * n
    qids = [r["queue_id"] for r in replies]
    assert len(set(qids)) == n
    qmgr.stop()
    listing = qmgr.listing()
    listing.check_consistent()
    for i, qid in enumerate(qids):
        assert listing.messages[qid][:2] == (f"s{i}@example.org", i + 3), (i, qid)
    flushes = re.search(r"group commit: (\d+) commits in (\d+) flushes", qmgr.log())
    assert int(flushes[2]) < n / 2, flushes[0]


def test_request_answered_at_once_among_unanswered_messages_is_a_violation(qmgr):
    """Its reply would overtake those still due: that client is dropped
    (its message, complete, is queued all the same), the others go on."""
    from ternqmgr import enqueue_frames
    with qmgr.client() as bad, qmgr.client() as good:
        bad.send_raw(enqueue_frames("a@example.org", ["b@example.com"], b"x\r\n")
                     + ternipc.encode([("request", "replay-end")]))
        with pytest.raises(ConnectionError):
            bad.receive()
        assert good.enqueue("a@example.org", ["b@example.com"], b"y\r\n")["status"] == 250
    wait_for(lambda: "while messages wait for their replies" in qmgr.log(), what="the violation in qmgr's log")


def test_kill_9_under_load_loses_no_acknowledged_message(spool, capsys):
    q = Qmgr(spool)
    acked = {}
    rng = random.Random(4)
    try:
        for _ in range(20):
            q.start()
            stop = threading.Event()
            result = {}
            loader = threading.Thread(target=lambda: result.update(run_clients(q, 10, 10000, 1500, stop)[0]))
            loader.start()
            time.sleep(rng.uniform(0.05, 0.6))
            q.kill()
            stop.set()
            loader.join()
            assert not set(result) & set(acked)
            acked.update(result)
    finally:
        q.kill()
    assert len(acked) > 100, "the load did not get going"
    listing = q.listing()
    listing.check_consistent()
    missing = set(acked) - set(listing.messages)
    assert not missing, f"{len(missing)} acknowledged messages lost"
    for qid, (token, size) in acked.items():
        assert listing.messages[qid][1] == size
    for qid in rng.sample(sorted(acked), 10):
        assert f"X-Token: {acked[qid][0]}".encode() in q.body(qid)
    with capsys.disabled():
        print(f"\nkill -9: 20 rounds, {len(acked)} acknowledged messages all present once, "
              f"{len(listing.messages) - len(acked)} committed but unacknowledged")


def test_kill_9_in_a_log_file_made_ahead_loses_nothing(spool):
    """qmgr makes the log's next file ahead, all zeros, once the current
    one is a quarter written: a crash once the log has moved into such a
    file recovers every acknowledged message, and so does a restart while
    the following one waits unwritten."""
    q = Qmgr(spool)
    queue = spool / "queue"
    acked = {}
    try:
        q.start()
        time.sleep(0.3)
        assert not (queue / "log.0000000002").exists()  # an idle queue writes no zeros
        deadline = time.monotonic() + 120
        while not (queue / "log.0000000003").exists() and time.monotonic() < deadline:
            acked.update(run_clients(q, 10, 50, 2000)[0])
        assert (queue / "log.0000000003").exists(), "the log did not reach its second file"
        # made ahead whole while the log writes its second file
        assert (queue / "log.0000000003").stat().st_size == 8 * 1024 * 1024
        q.kill()
        q.start()
        acked.update(run_clients(q, 5, 20)[0])
        q.stop()
    finally:
        q.kill()
    listing = q.listing()
    listing.check_consistent()
    assert not set(acked) - set(listing.messages)


def test_sync_msg_create_no_still_queues(spool):
    q = Qmgr(spool, no_sync=True)
    q.start()
    try:
        acked, refused = run_clients(q, 5, 20)
    finally:
        q.stop()
    assert len(acked) == 100 and not refused
    assert "sync-msg-create no" in q.log()
    q.listing().check_consistent()


@pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")
def test_full_disk_refuses_temporarily_and_recovers(spool):
    mnt = spool / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(mnt)], check=True)
    q = Qmgr(mnt / "spool", log_dir=spool)
    (mnt / "spool").mkdir(mode=0o755)
    filler = mnt / "filler"
    try:
        q.start()
        acked = {}
        with q.client() as c:
            for i in range(5):
                reply = c.enqueue("a@example.org", ["b@example.com"], b"before\r\n" * 100)
                assert reply["status"] == 250
                acked[reply["queue_id"]] = 800
            # Take every free byte.
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            body = b"y" * 200000
            refusal = None
            for _ in range(400):
                reply = c.enqueue("a@example.org", ["b@example.com"], body)
                if reply["status"] != 250:
                    refusal = reply
                    break
                acked[reply["queue_id"]] = len(body)
            assert refusal is not None, "a full disk never refused a message"
            refused_lines = [line for line in q.log().splitlines() if "message refused" in line]
            assert refusal["status"] == 452, (refusal, refused_lines)
            assert "No space left on device" in refused_lines[0]
            assert refusal["reason"].startswith("4.")
            filler.unlink()
            # Space is back: the same connection and new ones work again.
            reply = c.enqueue("a@example.org", ["b@example.com"], b"after\r\n")
            assert reply["status"] == 250, reply
            acked[reply["queue_id"]] = 7
        with q.client() as c:
            assert c.enqueue("a@example.org", ["b@example.com"], b"after")["status"] == 250
        q.stop()
        listing = q.listing()
        listing.check_consistent()
        assert set(acked) <= set(listing.messages)
        for qid, size in acked.items():
            assert listing.messages[qid][1] == size
    finally:
        q.kill()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def measure(spool, no_sync):
    spool.mkdir(mode=0o755)
    q = Qmgr(spool, no_sync=no_sync)
    q.start()
    start = time.monotonic()
    try:
        acked, refused = run_clients(q, 20, 100, 2048)
        elapsed = time.monotonic() - start
    finally:
        q.stop()
    assert len(acked) == 2000 and not refused
    shared = [line.split("group commit: ")[1] for line in q.log().splitlines() if "group commit:" in line]
    return len(acked) / elapsed, shared[-1] if shared else "no flushes"


def test_throughput_figure(spool, capsys):
    """A measurement, not a pass/fail test: 2 KB messages from 20
    concurrent clients, durable (group commit), then sync-msg-create no."""
    durable, shared = measure(spool / "durable", False)
    unsynced, _ = measure(spool / "nosync", True)
    with capsys.disabled():
        print(f"\nqmgr enqueue, 2 KB messages, 20 clients: {durable:.0f} messages/s durable ({shared}); "
              f"{unsynced:.0f} messages/s with sync-msg-create no")


def test_damaged_queue_stops_start_up_with_the_recover_hint(spool):
    q = Qmgr(spool)
    q.start()
    with q.client() as c:
        assert c.enqueue("a@example.org", ["b@example.com"], b"x")["status"] == 250
    q.stop()
    with open(spool / "queue" / "messages.db", "r+b") as f:
        f.write(b"\x5a" * 4096)
    with pytest.raises(AssertionError, match="did not report readiness"):
        q.start()
    assert q.proc.wait(timeout=30) == 1
    q.proc = None
    assert "ternctl queue recover" in q.log()


@pytest.mark.skipif(not (TOP / "smtpd" / "smtpd").exists(), reason="smtpd is not built")
def test_smtp_message_reaches_the_queue_through_smtpd(tern):
    """The whole inbound path: master starts smtpd and qmgr, smtplib sends,
    the 250 after DATA means the message is in the queue."""
    import smtplib

    # max-smtp-out 0 holds the queue: smtp runs under master too, and this
    # test looks at the message as it was queued.
    tern.write_config(extra="<source 127.0.0.1>\n    always-allow-relaying yes\n</source>\n"
                      "<domain *>\n    max-smtp-out 0\n</domain>\n"
                      f"<acct-file {tern.base}/acct/acct.csv>\n    records r\n</acct-file>\n")
    tern.start()
    wait_for(lambda: (tern.spool / "private" / "qmgr").exists(), 20, what="qmgr's socket")
    body = b"Subject: through smtpd\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
        assert s.sendmail("alice@example.org", ["bob@example.com", "carol@example.net"], body) == {}
    # SIGTERM and reap, rather than `ternctl stop`: that one polls the pid,
    # which stays alive as a zombie until this process reaps it.
    tern.master.send_signal(signal.SIGTERM)
    assert tern.master.wait(timeout=60) == 0
    proc = subprocess.run([str(QMGR), "-c", str(tern.config), "-L"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listing = Listing(proc.stdout.decode())
    listing.check_consistent(acctd_ran=True)
    [(qid, (sender, size, count))] = listing.messages.items()
    assert (sender, count) == ("alice@example.org", 2)
    assert [r[2] for r in listing.rcpts[qid]] == ["bob@example.com", "carol@example.net"]
    wait_for_log(tern, f"{qid}: queued")


def fill_backlog(path, limit=20000):
    """Connects to a listening socket whose owner does not accept until
    the kernel refuses (EAGAIN): the connections that fill its backlog."""
    import resource
    import socket
    need = limit + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    allowed = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft < allowed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (allowed, hard))
    conns = []
    try:
        while len(conns) < limit:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(str(path))
            except BlockingIOError:
                s.close()
                return conns
            conns.append(s)
    except BaseException:
        for s in conns:
            s.close()
        raise
    for s in conns:
        s.close()
    raise AssertionError(f"{limit} connections to {path} and its backlog is not full")


@contextlib.contextmanager
def busy_qmgr(tern):
    """tern's qmgr stopped (its loop busy, as in a long flush) with its
    socket's backlog full: smtpd's connects fail with EAGAIN meanwhile."""
    [pid] = [p for p in tern.worker_pids() if pathlib.Path(f"/proc/{p}/comm").read_text().strip() == "qmgr"]
    os.kill(pid, signal.SIGSTOP)
    conns = []
    try:
        conns = fill_backlog(tern.spool / "private" / "qmgr")
        yield
    finally:
        for s in conns:
            s.close()
        os.kill(pid, signal.SIGCONT)


def start_relay_holding_the_queue(tern):
    tern.write_config(extra="<source 127.0.0.1>\n    always-allow-relaying yes\n</source>\n"
                      "<domain *>\n    max-smtp-out 0\n</domain>\n")
    tern.start()
    wait_for(lambda: (tern.spool / "private" / "qmgr").exists(), 20, what="qmgr's socket")


def send_in_thread(tern, body, result):
    import smtplib

    def send():
        try:
            with smtplib.SMTP("127.0.0.1", tern.port, timeout=60) as s:
                result["refused"] = s.sendmail("alice@example.org", ["bob@example.com"], body)
        except Exception as e:  # a 451, among others
            result["error"] = e
    t = threading.Thread(target=send)
    t.start()
    return t


def test_smtpd_waits_for_a_busy_qmgr_instead_of_refusing(tern):
    """While qmgr's backlog is full a message is not refused with a 451:
    smtpd keeps its frames and connects again, and the client gets its
    250 once qmgr goes on."""
    start_relay_holding_the_queue(tern)
    result = {}
    with busy_qmgr(tern):
        client = send_in_thread(tern, b"Subject: busy qmgr\r\n\r\nhello\r\n", result)
        time.sleep(1.5)  # smtpd tries again meanwhile
        assert client.is_alive(), f"the client was answered while qmgr was stopped: {result}"
    client.join(timeout=60)
    assert result == {"refused": {}}, result
    log = wait_for_log(tern, ": queued, from=<alice@example.org>")
    assert "message not queued" not in log


def test_smtpd_holds_at_most_a_megabyte_for_a_busy_qmgr(tern):
    """A message larger than smtpd holds in memory for a busy qmgr
    (HELD_MAX, 1 MB) gets a 451 at its end; nothing of it is queued, and
    the next message goes through once qmgr is back."""
    import smtplib
    start_relay_holding_the_queue(tern)
    result = {}
    line = b"x" * 998 + b"\r\n"
    with busy_qmgr(tern):
        client = send_in_thread(tern, b"Subject: big\r\n\r\n" + line * 2100, result)
        client.join(timeout=60)
    assert isinstance(result.get("error"), smtplib.SMTPDataError) and result["error"].smtp_code == 451, result
    with smtplib.SMTP("127.0.0.1", tern.port, timeout=60) as s:
        assert s.sendmail("carol@example.org", ["dave@example.com"], b"Subject: after\r\n\r\nhi\r\n") == {}
    log = wait_for_log(tern, ": queued, from=<carol@example.org>", "message not queued")
    assert ": queued, from=<alice@example.org>" not in log
