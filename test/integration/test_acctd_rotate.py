"""acctd's rotation while records flow: by size, on request, by time into
move-to, and with Debian's logrotate signalling SIGUSR1.  Over all files
the rows are exactly the records sent, none split, and every file starts
with the header line."""
import os
import pwd
import re
import signal
import subprocess
import threading
import time

import pytest

from test_acctd_crash import HEADER, ROTATING_BLOCK, record_type
from test_acctd_records import DBT, Feeder, acctd_factory, delivery  # noqa: F401 (fixture)
from conftest import wait_for, wait_for_log

ROTATED = re.compile(r"^acct-\d{4}-\d{2}-\d{2}-\d{4}\.csv$")


def rows_in(a, paths, expected_header=HEADER):
    seqs = []
    for path in paths:
        header, rows = a.rows(path)
        assert header == expected_header, path
        for row in rows:
            assert len(row) == len(header), (path, row)
            seq = int(row[4][len("user"):].split("@")[0])
            assert row[0] == record_type(seq) and row[19] == f"job{seq}", (path, row)
            seqs.append(seq)
    return seqs


class Flow(threading.Thread):
    """Sends count records in bursts, waiting for each burst's ack."""

    def __init__(self, a, count, burst=50, pause=0.0):
        super().__init__(daemon=True)
        self.a, self.count, self.burst, self.pause = a, count, burst, pause
        self.error = None

    def run(self):
        try:
            f = Feeder(self.a)
            for first in range(1, self.count + 1, self.burst):
                last = min(first + self.burst - 1, self.count)
                for seq in range(first, last + 1):
                    f.send(seq, record_type(seq), **delivery(seq))
                f.wait_ack(last)
                time.sleep(self.pause)
            f.close()
        except Exception as e:  # reported by finish()
            self.error = e

    def finish(self):
        self.join(60)
        assert not self.is_alive() and self.error is None, self.error


def test_rotation_by_size_and_on_request_while_records_flow(acctd_factory):
    a = acctd_factory(ROTATING_BLOCK).start()
    flow = Flow(a, 3000, pause=0.002)
    flow.start()
    requests = 0
    while flow.is_alive():
        r = a.request("rotate", acct_file=str(a.logdir / "acct.csv"))
        assert r["status"] == 0, r
        requests += 1
        time.sleep(0.03)
    flow.finish()
    assert a.request("rotate", acct_file="/nowhere.csv")["status"] == 1
    names = sorted(os.listdir(a.logdir))
    rotated = [n for n in names if n != "acct.csv"]
    assert all(ROTATED.match(n) for n in rotated), rotated
    assert len(rotated) > 10 and requests > 5
    assert sorted(rows_in(a, names)) == list(range(1, 3001))


def test_move_to_by_interval_and_delete_after(acctd_factory):
    a = acctd_factory("""<acct-file LOG/acct.csv>
    move-to LOG/done
    move-interval 2s
</acct-file>
<acct-file LOG/kept.csv>
    delete-after 1d
</acct-file>
""")
    a.logdir.mkdir()
    if os.geteuid() == 0:  # as a package would: the directory is acctd's
        os.chown(a.logdir, pwd.getpwnam("tern").pw_uid, pwd.getpwnam("tern").pw_gid)
    old = a.logdir / "kept-2026-01-01-0000.csv"
    old.write_text("old\r\n")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    young = a.logdir / "kept-2026-11-27-0000.csv"
    young.write_text("young\r\n")
    a.start()
    f = Feeder(a)
    f.send(1, "d", **delivery(1))
    f.wait_ack(1)
    wait_for(lambda: os.path.isdir(a.logdir / "done") and os.listdir(a.logdir / "done"), 6,
             what="a file moved by move-interval")
    moved = os.listdir(a.logdir / "done")
    assert len(moved) == 1 and ROTATED.match(moved[0])
    assert rows_in(a, [f"done/{moved[0]}"], DBT) == [1]
    header, rows = a.rows()
    assert header == DBT and rows == []
    assert a.request("rotate")["status"] == 0  # rotating also expires old files
    assert not old.exists() and young.exists()


def logrotate_config(a, path):
    """The snippet of doc/accounting.md.  nocreate: acctd makes the new file
    itself, header first, so logrotate never races it to the name."""
    text = f"""{a.logdir}/acct.csv {{
    rotate 100
    missingok
    notifempty
    nocompress
    nocreate
    postrotate
        kill -USR1 "$(cat {a.spool}/acctd/acctd.pid)"
    endscript
}}
"""
    path.write_text(text)
    return path


@pytest.mark.skipif(not os.path.exists("/usr/sbin/logrotate"), reason="logrotate is not installed")
def test_logrotate_with_sigusr1_while_records_flow(acctd_factory, tern_dir):
    a = acctd_factory(ROTATING_BLOCK.replace("max-size 64k", "max-size 0")).start()
    conf = logrotate_config(a, tern_dir / "logrotate.conf")
    flow = Flow(a, 3000, pause=0.002)
    flow.start()
    runs = 0
    while flow.is_alive() and runs < 8:
        time.sleep(0.1)
        out = subprocess.run(["/usr/sbin/logrotate", "-f", "-s", str(tern_dir / "logrotate.state"), str(conf)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        runs += 1
    flow.finish()
    names = sorted(os.listdir(a.logdir))
    assert len(names) >= 4, names
    assert all(n == "acct.csv" or re.match(r"^acct\.csv\.\d+$", n) for n in names), names
    assert sorted(rows_in(a, names)) == list(range(1, 3001))
    wait_for_log(a, "reopened")


def test_reopen_request_after_a_manual_move(acctd_factory):
    a = acctd_factory(ROTATING_BLOCK).start()
    f = Feeder(a)
    f.send(1, "d", **delivery(1))
    f.wait_ack(1)
    os.rename(a.logdir / "acct.csv", a.logdir / "old.csv")
    assert a.request("reopen")["status"] == 0
    f.send(2, "d", **delivery(2))
    f.wait_ack(2)
    assert rows_in(a, ["old.csv"]) == [1]
    assert rows_in(a, ["acct.csv"]) == [2]


def test_reload_with_new_columns_starts_a_new_file(acctd_factory):
    a = acctd_factory(ROTATING_BLOCK).start()
    f = Feeder(a)
    f.send(1, "d", **delivery(1))
    f.wait_ack(1)
    a.write_config("<acct-file LOG/acct.csv>\n    records d\n    record-fields d rcpt, jobId\n    sync yes\n"
                   "    record-fields b rcpt\n</acct-file>\n")
    a.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in a.log_text(), 5, what="the reload")
    assert "record-fields b: this file does not hold b records" in a.log_text()
    f.send(2, "d", **delivery(2))
    f.wait_ack(2)
    rotated = [n for n in os.listdir(a.logdir) if n != "acct.csv"]
    assert len(rotated) == 1 and ROTATED.match(rotated[0])
    assert rows_in(a, rotated) == [1]
    assert a.rows() == (["type", "rcpt", "jobId"], [["d", "user2@example.com", "job2"]])
    # A broken configuration is refused; the files go on as they were.
    a.write_config("<acct-file LOG/acct.csv>\n    record-fields d nosuchfield\n</acct-file>\n")
    a.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in a.log_text(), 5, what="the refusal")
    f.send(3, "d", **delivery(3))
    f.wait_ack(3)
    assert a.rows()[1][-1] == ["d", "user3@example.com", "job3"]


def test_copytruncate_gets_a_new_header(acctd_factory):
    a = acctd_factory(ROTATING_BLOCK).start()
    f = Feeder(a)
    f.send(1, "d", **delivery(1))
    f.wait_ack(1)
    os.truncate(a.logdir / "acct.csv", 0)
    f.send(2, "d", **delivery(2))
    f.wait_ack(2)
    assert rows_in(a, ["acct.csv"]) == [2]
    wait_for_log(a, "copytruncate")
