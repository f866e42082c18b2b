"""master and the control channel, with the real daemons: supervision,
privilege separation, crash throttle, reload, stop, and who may do what."""
import os
import re
import pwd
import grp
import signal
import subprocess
import time

import pytest

from conftest import free_port, process_alive, smtp_greeting, wait_for, wait_for_log

ROOT = os.geteuid() == 0


def proc_uids(pid):
    """(real, effective, saved) uids of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return tuple(int(x) for x in line.split()[1:4])
    raise AssertionError(f"no Uid line for {pid}")


def test_status_and_version(tern):
    tern.start()
    s = tern.status()
    assert s["status"] == "running"
    assert s["pid"] == tern.master.pid
    names = {x["name"]: x for x in s["services"]}
    assert names["smtpd"]["wanted"] == 2 and len(names["smtpd"]["pids"]) == 2
    assert names["qmgr"]["wanted"] == 1
    r = tern.ctl("status")
    assert r.rc == 0 and "smtpd" in r.out and "running" in r.out
    r = tern.ctl("show", "version")
    assert r.rc == 0 and f"master pid {tern.master.pid}" in r.out
    assert smtp_greeting(tern.port).startswith("220 ")
    # ps shows each process's role (and smtpd its load).
    titles = {name: open(f"/proc/{x['pids'][0]}/cmdline").read() for name, x in names.items()}
    assert titles["qmgr"].startswith("tern: qmgr")
    assert titles["smtpd"].startswith("tern: smtpd 0 sessions")
    assert open(f"/proc/{tern.master.pid}/cmdline").read().startswith("tern: master")


def scheduling_policy(pid):
    """The scheduling policy of pid and of each of its threads (os.SCHED_*)."""
    return {os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def test_pipeline_workers_run_as_sched_batch(tern):
    tern.start()
    pids = {x["name"]: x["pids"] for x in tern.status()["services"]}
    for name in ("smtpd", "smtp", "acctd"):
        for pid in pids[name]:
            assert scheduling_policy(pid) == {os.SCHED_BATCH}, (name, pid)
    for name in ("qmgr", "local", "pickup"):
        for pid in pids[name]:
            assert scheduling_policy(pid) == {os.SCHED_OTHER}, (name, pid)
    assert scheduling_policy(tern.master.pid) == {os.SCHED_OTHER}


def nice_values(pid):
    """The nice value of pid and of each of its threads."""
    return {os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def test_workers_nobody_waits_on_run_at_a_lower_priority(tern):
    tern.start()
    master_nice = os.getpriority(os.PRIO_PROCESS, tern.master.pid)
    pids = {x["name"]: x["pids"] for x in tern.status()["services"]}
    lower = {"smtp": 5, "acctd": 10}
    for name, worker_pids in pids.items():
        for pid in worker_pids:
            assert nice_values(pid) == {min(19, master_nice + lower.get(name, 0))}, (name, pid)


@pytest.mark.skipif(not ROOT, reason="privilege separation needs root")
def test_master_is_root_and_workers_are_tern(tern):
    tern.start()
    tern_uid = pwd.getpwnam("tern").pw_uid
    assert proc_uids(tern.master.pid) == (0, 0, 0)
    services = tern.status()["services"]
    workers = [p for s in services if s["name"] != "local" for p in s["pids"]]
    assert len(workers) == 6
    for pid in workers:
        assert proc_uids(pid) == (tern_uid, tern_uid, tern_uid), pid
    # the local agent keeps root to write each mailbox as its user
    local = [p for s in services if s["name"] == "local" for p in s["pids"]]
    assert len(local) == 1 and proc_uids(local[0]) == (0, 0, 0)


def test_killed_worker_is_back_within_a_second(tern):
    tern.start()
    for name in ("smtpd", "qmgr", "smtp", "acctd", "pickup", "local"):
        victim = tern.service(name)["pids"][0]
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()

        def replaced():
            s = tern.service(name)
            return victim not in s["pids"] and s["ready"] == s["wanted"]
        wait_for(replaced, timeout=3, what=f"{name} restarted")
        assert time.monotonic() - t0 < 1.5
        assert tern.service(name)["restarts"] == 1
    assert smtp_greeting(tern.port).startswith("220 ")


def test_crashing_service_is_throttled(tern):
    tern.write_config("smtp-server-tls-certificate /nonexistent/cert.pem\n")
    log = open(tern.log, "ab")
    tern.master = subprocess.Popen([str(tern.libexec / "master"), "-f", "-c", str(tern.config),
                                    "-d", str(tern.libexec)], stdout=log, stderr=log)
    log.close()
    wait_for(tern.status, what="master answering")
    time.sleep(10)
    smtpd = tern.service("smtpd")
    qmgr = tern.service("qmgr")
    # Two workers, each restarted at most a handful of times in 10 s: the
    # pause doubles from a quarter second (no fork storm).
    assert 2 <= smtpd["restarts"] <= 16, smtpd
    assert smtpd["state"] == "throttled" and smtpd["throttled"]
    assert qmgr["state"] == "running" and qmgr["restarts"] == 0
    wait_for_log(tern, "service smtpd keeps failing at start-up: throttling its restarts", count=1)
    wait_for_log(tern, "/nonexistent/cert.pem")


def test_reload_with_broken_file_keeps_old_configuration(tern):
    tern.start()
    before = tern.service("smtpd")["pids"]
    good = tern.config.read_text()
    tern.config.write_text(good + "max-smtp-out 5\n<domain x.example>\n")
    lines = good.count("\n")
    r = tern.ctl("reload")
    assert r.rc == 1
    assert f"{tern.config}:{lines + 1}: " in r.err
    assert f"{tern.config}:{lines + 2}: " in r.err
    assert tern.service("smtpd")["pids"] == before
    assert smtp_greeting(tern.port).startswith("220 ")
    assert tern.status()["reloads"] == 0


def test_reload_adds_and_removes_listeners(tern):
    tern.start()
    second = free_port()
    tern.write_config(listeners=[f"127.0.0.1:{tern.port}", f"127.0.0.1:{second}"])
    r = tern.ctl("reload")
    assert r.rc == 0, r.err
    assert "Configuration reloaded." in r.out
    wait_for(lambda: smtp_greeting(second), what="the new listener")
    assert smtp_greeting(second).startswith("220 ")
    assert smtp_greeting(tern.port).startswith("220 ")

    tern.write_config(listeners=[f"127.0.0.1:{second}"])
    assert tern.ctl("reload").rc == 0
    wait_for(lambda: smtp_greeting(tern.port, timeout=1) is None, what="the old listener to close")
    assert smtp_greeting(second).startswith("220 ")
    tern.wait_running()
    assert tern.status()["reloads"] == 2


def sessions_by_process(port, pids):
    """How many established inbound connections to port each process holds,
    from /proc/net/tcp and the processes' descriptors."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
                inodes.add(fields[9])
    counts = {}
    for pid in pids:
        links = (os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
        counts[pid] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
    return counts


def open_sessions(port, n):
    """n connections made at once, then each greeted (so accepted by an
    smtpd)."""
    import socket
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    for c in conns:
        assert c.makefile("rb").readline().startswith(b"220 ")
    return conns


def set_smtpd_processes(tern, n):
    tern.config.write_text(tern.config.read_text().replace(
        next(l for l in tern.config.read_text().splitlines() if l.startswith("smtpd-processes")),
        f"smtpd-processes {n}"))
    old = tern.service("smtpd")["pids"]
    assert tern.ctl("reload").rc == 0
    wait_for(lambda: set(tern.service("smtpd")["pids"]).isdisjoint(old) and
             tern.service("smtpd")["ready"] == n and not any(process_alive(p) for p in old),
             what=f"{n} new smtpd workers, the old ones gone")
    return tern.service("smtpd")["pids"]


def test_sessions_spread_over_the_smtpd_processes(tern):
    """Each smtpd process accepts from its own copy of the listener
    (SO_REUSEPORT), so sessions opened at once are shared out, not taken by
    whichever process wakes first; a reload to more or fewer processes
    leaves every copy served.  (All of 24 on one of two processes would be
    a 1 in 8 million chance; 40 missing one of three, 1 in 4 million.)"""
    tern.start()
    for n, sessions in ((2, 24), (3, 40), (1, 12)):
        pids = set_smtpd_processes(tern, n) if n != 2 else tern.service("smtpd")["pids"]
        conns = open_sessions(tern.port, sessions)
        counts = sessions_by_process(tern.port, pids)
        assert sum(counts.values()) == sessions, counts
        assert all(c > 0 for c in counts.values()), counts
        for c in conns:
            c.close()
    assert "closing listener" not in tern.log_text()


def test_reload_by_sighup(tern):
    tern.start()
    second = free_port()
    tern.write_config(listeners=[f"127.0.0.1:{second}"])
    os.kill(tern.master.pid, signal.SIGHUP)
    wait_for(lambda: smtp_greeting(second), what="the listener added by SIGHUP")


def test_stop_leaves_nothing_behind(tern):
    tern.start()
    workers = tern.worker_pids()
    assert len(workers) == 7  # 2 smtpd, qmgr, smtp, acctd, pickup, local
    r = tern.ctl("stop")
    assert r.rc == 0, r.err
    assert "tern stopped." in r.out
    assert tern.master.wait(timeout=30) == 0
    for pid in workers:
        assert not process_alive(pid)
    assert not (tern.spool / "public" / "control").exists()
    assert not (tern.spool / "master.pid").exists()
    assert smtp_greeting(tern.port, timeout=1) is None
    assert not re.findall(r"^.*: (?:warning|error|fatal): .*$", tern.log_text(), re.M)
    tern.start()  # nothing in the way of the next start
    assert smtp_greeting(tern.port).startswith("220 ")


def test_sigterm_stops_with_status_zero(tern):
    tern.start()
    tern.master.send_signal(signal.SIGTERM)
    assert tern.master.wait(timeout=30) == 0


def test_second_master_refuses_to_start(tern):
    tern.start()
    other = subprocess.run([str(tern.libexec / "master"), "-f", "-c", str(tern.config), "-d", str(tern.libexec)],
                           capture_output=True, text=True, timeout=30)
    assert other.returncode != 0
    assert f"another master (pid {tern.master.pid}) is running" in other.stderr


def test_broken_configuration_prevents_start(tern):
    tern.config.write_text(tern.config.read_text() + "use-startls yes\n")
    r = tern.ctl("start", "-d", tern.libexec)
    assert r.rc == 1
    assert f"{tern.config}:6: unknown directive" in r.err


def test_ternctl_start_and_stop(tern):
    r = tern.ctl("start", "-d", tern.libexec)
    assert r.rc == 0, r.err
    assert "tern started" in r.out
    pid = tern.status()["pid"]
    assert smtp_greeting(tern.port).startswith("220 ")
    assert tern.ctl("start", "-d", tern.libexec).rc == 1  # already running
    r = tern.ctl("stop")
    assert r.rc == 0, r.err
    assert not process_alive(pid)
    r = tern.ctl("status")
    assert r.rc == 1 and "not running" in r.err


def test_killed_master_takes_its_workers_along(tern):
    tern.start()
    workers = tern.worker_pids()
    tern.master.kill()
    tern.master.wait()
    wait_for(lambda: not any(process_alive(p) for p in workers), timeout=5, what="workers to exit")
    tern.start()
    assert smtp_greeting(tern.port).startswith("220 ")


def run_as(uid, gid, groups, *cmd):
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={groups}", *map(str, cmd)],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(not ROOT, reason="needs root to act as other users")
def test_control_permissions(tern):
    tern.start()
    ternctl = [str(tern.ternctl.binary), "-c", tern.config]
    nobody = pwd.getpwnam("nobody")
    tern_gid = grp.getgrnam("tern").gr_gid
    os.chmod(tern.config, 0o644)
    # An ordinary user can do nothing.
    for verb in ("status", "reload", "stop"):
        r = run_as(nobody.pw_uid, nobody.pw_gid, nobody.pw_gid, *ternctl, verb)
        assert r.returncode == 1, (verb, r.stdout, r.stderr)
        assert "ermission denied" in r.stderr
    # A member of the tern group may look, not change.
    r = run_as(nobody.pw_uid, nobody.pw_gid, tern_gid, *ternctl, "status")
    assert r.returncode == 0, r.stderr
    for verb in ("reload", "stop"):
        r = run_as(nobody.pw_uid, nobody.pw_gid, tern_gid, *ternctl, verb)
        assert r.returncode == 1
        assert "permission denied" in r.stderr
    assert tern.status()["status"] == "running"
    wait_for_log(tern, "refused \"stop\" from an unprivileged user")


def test_hostile_control_client_is_dropped(tern):
    import socket as s
    tern.start()
    path = str(tern.spool / "public" / "control")
    for junk in (b"\xff\xff\xff\xff", b"\x00\x00\x00\x05hello", b"GET / HTTP/1.0\r\n\r\n"):
        c = s.socket(s.AF_UNIX)
        c.connect(path)
        c.sendall(junk)
        c.settimeout(5)
        try:
            c.recv(100)
        except OSError:
            pass
        c.close()
    assert tern.status()["status"] == "running"


def test_requests_for_a_daemon_are_relayed_with_the_role(tern):
    """master passes "acctd.*" requests to acctd's socket and its replies
    back, with the caller's role."""
    import ternipc
    tern.start()
    with ternipc.Connection(tern.spool / "public" / "control") as c:
        c.send({"request": "acctd.status"})
        frames = [c.receive()]
        while frames[-1]["request"] != "end":
            frames.append(c.receive())
    assert frames[0]["request"] == "reply" and frames[0]["status"] == 0, frames[0]
    # With nothing at the daemon's socket the caller gets a clear failure.
    (tern.spool / "private" / "acctd").unlink()
    with ternipc.Connection(tern.spool / "public" / "control") as c:
        c.send({"request": "acctd.status"})
        reply = c.receive()
    assert reply["status"] == 1 and "acctd is not running" in reply["reason"]
    assert tern.status()["status"] == "running"


def test_daemonised_tern_logs_every_process_to_log_file(tern):
    log_file = tern.base / "tern.log"
    tern.write_config(f"log-file {log_file}\n")
    r = tern.ctl("start", "-d", tern.libexec)
    assert r.rc == 0, r.err
    wait_for(lambda: log_file.exists() and all(f"tern/{role}[" in log_file.read_text()
                                               for role in ("master", "qmgr", "smtpd")),
             what="master, qmgr and smtpd in the log file")
    assert tern.ctl("stop").rc == 0
    assert "tern/master[" in log_file.read_text().splitlines()[-1]


def test_ternctl_start_reports_a_service_that_keeps_failing(tern):
    tern.write_config("smtp-server-tls-certificate /nonexistent/cert.pem\n")
    r = tern.ctl("start", "-d", tern.libexec)
    assert r.rc == 1
    assert "smtpd keeps failing at start-up" in r.err
    assert tern.ctl("stop").rc == 0


def test_reload_lets_sessions_in_flight_finish(tern):
    import smtplib
    tern.start()
    s = smtplib.SMTP("127.0.0.1", tern.port, timeout=20)
    s.ehlo("client.test")
    s.mail("a@tern.test")
    s.rcpt("b@tern.test")
    old = tern.service("smtpd")["pids"]
    second = free_port()
    tern.write_config(listeners=[f"127.0.0.1:{tern.port}", f"127.0.0.1:{second}"])
    assert tern.ctl("reload").rc == 0
    wait_for(lambda: set(tern.service("smtpd")["pids"]).isdisjoint(old), what="new smtpd workers")
    # The session begun before the reload is still served by its old worker.
    code, reply = s.data(b"Subject: across a reload\r\n\r\nhello\r\n")
    assert code == 250 and b"queued as" in reply
    s.quit()
    wait_for(lambda: not any(process_alive(p) for p in old), what="the old workers to finish")
    assert smtp_greeting(second).startswith("220 ")


def test_smtpd_reconnects_to_a_restarted_qmgr(tern):
    """smtpd keeps its connections to qmgr between messages; when qmgr is
    killed and comes back, the next message still gets its 250."""
    import smtplib
    tern.write_config("<source 127.0.0.1>\n    always-allow-relaying yes\n</source>\n"
                      "<domain *>\n    max-smtp-out 0\n</domain>\n")
    tern.start()
    body = b"Subject: pooled\r\n\r\nhello\r\n"
    for round_ in range(3):
        for _ in range(4):
            with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
                assert s.sendmail("a@tern.test", ["b@example.com"], body) == {}
        victim = tern.service("qmgr")["pids"][0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in tern.service("qmgr")["pids"] and tern.service("qmgr")["ready"] == 1,
                 what="qmgr back")
