"""Fixtures shared by the integration tests: paths to the built programs and
helpers that write configuration files into a per-test temporary directory."""
import json
import pathlib
import subprocess

import pytest

TOP = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent


class Result:
    """What a finished command printed and returned."""

    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def ternctl():
    """Runs ctl/ternctl with the given arguments; returns a Result."""
    binary = TOP / "ctl" / "ternctl"
    assert binary.exists(), f"{binary} is not built"

    def run(*args, timeout=30):
        proc = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        return Result(proc)

    run.binary = binary
    return run


@pytest.fixture
def write_config(tmp_path):
    """Writes text to tmp_path/NAME and returns its path."""

    def write(text, name="tern.conf"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


def line_of(path, needle, start=1):
    """The 1-based number of the first line at or after start holding needle."""
    for number, line in enumerate(pathlib.Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if number >= start and needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


@pytest.fixture
def design_config(tmp_path):
    """The configuration of DESIGN.md, verbatim, in a temporary file."""
    path = tmp_path / "design.conf"
    path.write_text((HERE / "design.conf").read_text(encoding="utf-8"), encoding="utf-8")
    return path


# ---- a running tern ---------------------------------------------------------------

import os
import pwd
import re
import shutil
import signal
import socket
import tempfile
import time

DAEMONS = ("master", "acctd", "qmgr", "smtpd", "smtp", "pickup", "local")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item (item.rep_call), so a
    fixture's teardown can tell whether the test failed."""
    outcome = yield
    setattr(item, "rep_" + outcome.get_result().when, outcome.get_result())


def call_failed(request):
    """In a fixture's teardown: did the test itself fail?"""
    report = getattr(request.node, "rep_call", None)
    return report is not None and report.failed


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Polls predicate until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_log(daemon, *texts, count=None, timeout=10.0):
    """Waits until daemon's log holds every one of texts (exactly count times
    each, if given) and returns the log. A daemon writes its info and
    warning lines in batches, up to 10 ms after it logged them (common/
    server.c), so a line may reach the file after the reply that announced it."""
    def seen():
        log = daemon.log_text()
        if count is None:
            found = all(t in log for t in texts)
        else:
            found = all(log.count(t) == count for t in texts)
        return log if found else None
    return wait_for(seen, timeout, what=f"{texts} in the log")


def wait_for_log_match(daemon, pattern, timeout=10.0):
    """Waits until a line of daemon's log matches pattern; returns the match."""
    return wait_for(lambda: re.search(pattern, daemon.log_text()), timeout, what=f"/{pattern}/ in the log")


def process_alive(pid):
    """True while pid runs; a zombie waiting to be reaped has ended, and a
    process reaped between opening its stat file and reading it too."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return ") Z " not in f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False


def ensure_tern_user():
    """As root the workers run as the tern user: make sure it exists."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam("tern")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "tern"], check=True)


def smtp_greeting(port, host="127.0.0.1", timeout=5.0):
    """The first line a server on port sends, or None when nothing answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            return s.makefile("rb").readline().decode("ascii", "replace").strip()
    except OSError:
        return None


class Tern:
    """A tern instance in its own directory: configuration, spool and a
    daemon directory pointing at the programs of this build tree."""

    def __init__(self, base, ternctl):
        self.base = base
        self.ternctl = ternctl
        self.spool = base / "spool"
        self.libexec = base / "libexec"
        self.config = base / "tern.conf"
        self.log = base / "master.log"
        self.port = free_port()
        self.libexec.mkdir()
        for name in DAEMONS:
            (self.libexec / name).symlink_to(TOP / name / name)
        self.write_config()
        self.master = None

    def write_config(self, extra="", listeners=None):
        listeners = listeners if listeners is not None else [f"127.0.0.1:{self.port}"]
        lines = [f"spool {self.spool}", "smtpd-processes 2", "smtp-processes 1", "host-name tern.test"]
        lines += [f"smtp-listener {l}" for l in listeners]
        self.config.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")

    def ctl(self, *args, **kw):
        return self.ternctl("-c", self.config, *args, **kw)

    def start(self):
        """Starts master in the foreground (its log in master.log) and waits
        until every service is running."""
        log = open(self.log, "ab")
        self.master = subprocess.Popen([str(self.libexec / "master"), "-f", "-c", str(self.config),
                                        "-d", str(self.libexec)], stdout=log, stderr=log,
                                       stdin=subprocess.DEVNULL)
        log.close()
        self.wait_running()
        return self

    def status(self):
        r = self.ctl("status", "--json")
        return r.json() if r.rc == 0 else None

    def wait_running(self, timeout=15):
        def all_up():
            s = self.status()
            return s if s and all(x["ready"] == x["wanted"] for x in s["services"]) else None
        return wait_for(all_up, timeout, what="every service running")

    def service(self, name):
        return next(s for s in self.status()["services"] if s["name"] == name)

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def worker_pids(self):
        """Every process whose parent is master."""
        if not self.master:
            return []
        out = subprocess.run(["pgrep", "-P", str(self.master.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self):
        if self.master and self.master.poll() is None:
            self.ctl("stop", timeout=90)
            try:
                self.master.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self.kill_leftovers()

    def kill_leftovers(self):
        """Last resort in teardown: nothing started here may outlive the test."""
        pids = self.worker_pids()
        if self.master and self.master.poll() is None:
            self.master.kill()
            self.master.wait()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def tern_dir():
    """A directory the tern user can reach (pytest's own tmp is root-only)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="tern-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tern(tern_dir, ternctl):
    """A configured, not yet started tern; stopped at teardown."""
    ensure_tern_user()
    instance = Tern(tern_dir, ternctl)
    yield instance
    instance.stop()


def shipped_logrotate(path, logdir, spool, config):
    """conf/tern.logrotate with a test's own directories, written to path."""
    text = (TOP / "conf" / "tern.logrotate").read_text()
    text = (text.replace("@localstatedir@/log/tern", str(logdir))
                .replace("@localstatedir@/spool/tern", str(spool))
                .replace("@sbindir@", str(TOP / "ctl"))
                .replace("@sysconfdir@/tern/config", str(config)))
    assert "@" not in text
    path.write_text(text)
    return path
