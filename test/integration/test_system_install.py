"""tern installed for real as the machine's MTA, as an operator does it:
configure for Debian's paths, make install and install-sendmail, start
master through the systemd unit's ExecStart (there is no systemd here) and
let Debian's mail(1) (mailutils, which runs /usr/sbin/sendmail) send to
root, to an alias and while the daemons are stopped.  Everything is put
back afterwards: the files installed, the test user, the aliases and the
mailboxes.  Root only; it changes the machine."""
import os
import pathlib
import pwd
import shlex
import shutil
import signal
import subprocess
import uuid

import pytest

from conftest import TOP, free_port, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mail") is None,
                                reason="needs root and mailutils' mail(1)")

PREFIX = {"prefix": "/usr", "sysconfdir": "/etc", "localstatedir": "/var"}
CONFIG = pathlib.Path("/etc/tern/config")
UNIT = pathlib.Path("/usr/lib/systemd/system/tern.service")
SPOOL = pathlib.Path("/var/spool/tern")
LOG_DIR = pathlib.Path("/var/log/tern")
ALIASES = pathlib.Path("/etc/aliases")
USER = "terntest"


def run(*cmd, cwd=None, timeout=600, **kw):
    r = subprocess.run(list(map(str, cmd)), cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


class Saved:
    """Files the test replaces, put back (or removed) at the end."""

    def __init__(self, base):
        self.base = base
        self.saved = {}

    def keep(self, path):
        path = pathlib.Path(path)
        if path in self.saved:
            return
        if path.exists():
            copy = self.base / f"saved-{len(self.saved)}"
            shutil.copy2(path, copy)
            self.saved[path] = copy
        else:
            self.saved[path] = None

    def restore(self):
        for path, copy in self.saved.items():
            if copy is None:
                path.unlink(missing_ok=True)
            else:
                shutil.copy2(copy, path)


class Installed:
    """A build of this tree configured for Debian's paths and installed."""

    def __init__(self, base):
        self.base = base
        self.src = base / "src"
        self.master = None

    def build_and_install(self):
        files = run("git", "ls-files", "-z", cwd=TOP).stdout.split("\0")
        for name in filter(None, files):
            if (TOP / name).is_file():
                dest = self.src / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(TOP / name, dest)
        run("autoreconf", "-fi", cwd=self.src)
        run("./configure", "-q", *[f"--{k}={v}" for k, v in PREFIX.items()], cwd=self.src)
        run("make", "-s", f"-j{os.cpu_count() or 2}", cwd=self.src, timeout=900)
        run("make", "-s", "install", cwd=self.src)
        run("make", "-s", "install-sendmail", cwd=self.src)

    def uninstall(self):
        if (self.src / "Makefile").exists():
            subprocess.run(["make", "-s", "uninstall"], cwd=self.src, capture_output=True, timeout=300)

    def exec_start(self):
        """The unit's ExecStart line, as systemd would run it."""
        for line in UNIT.read_text().splitlines():
            if line.startswith("ExecStart="):
                return shlex.split(line[len("ExecStart="):])
        raise AssertionError(f"no ExecStart in {UNIT}")

    def ctl(self, *args):
        return subprocess.run(["/usr/sbin/ternctl", "-c", CONFIG, *map(str, args)], capture_output=True,
                              text=True, timeout=60)

    def start(self):
        log = open(self.base / "master.log", "ab")
        self.master = subprocess.Popen(self.exec_start(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        wait_for(lambda: self.ctl("status").returncode == 0 or self.master.poll() is not None, 30,
                 what="master to answer")
        assert self.master.poll() is None, (self.base / "master.log").read_text()[-3000:]
        wait_for(lambda: "starting" not in self.ctl("status").stdout, 30, what="every service to start")

    def stop(self):
        if self.master is None:
            return
        if self.master.poll() is None:
            self.ctl("stop")
            try:
                self.master.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.master.send_signal(signal.SIGKILL)
                self.master.wait()
        self.master = None


def mailbox_has(path, marker):
    return path.exists() and marker in path.read_text(errors="replace")


def last_message(mbox_text, marker):
    """The mbox message that holds marker, from its "From " line on."""
    end = mbox_text.index(marker)
    start = mbox_text.rfind("\nFrom ", 0, end) + 1
    return mbox_text[start:mbox_text.find("\nFrom ", end) if "\nFrom " in mbox_text[end:] else None]


def send_with_mail(to, subject, body):
    """Debian's mail(1): it hands the message to /usr/sbin/sendmail."""
    r = subprocess.run(["mail", "-s", subject, to], input=body, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def master_running():
    """A master holds the lock on its pid file while it runs."""
    pid_file = SPOOL / "master.pid"
    if not pid_file.exists():
        return False
    return subprocess.run(["flock", "-n", pid_file, "true"], capture_output=True).returncode != 0


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if master_running():
        pytest.skip("a tern master already runs on /var/spool/tern")
    base = tmp_path_factory.mktemp("system-install")
    saved = Saved(base)
    inst = Installed(base)
    was_installed = pathlib.Path("/usr/sbin/ternctl").exists()
    made = [path for path in (SPOOL, LOG_DIR, CONFIG.parent) if not path.exists()]
    # An earlier tern's queue and logs wait aside: the test starts afresh.
    aside = [path for path in (SPOOL, LOG_DIR) if path.exists()]
    for path in aside:
        path.rename(f"{path}.before-test")
    created_user = False
    try:
        for path in (CONFIG, ALIASES, pathlib.Path(str(ALIASES) + ".db"), pathlib.Path("/var/mail/root")):
            saved.keep(path)
        CONFIG.unlink(missing_ok=True)  # make install puts the example in place
        if subprocess.run(["id", USER], capture_output=True).returncode != 0:
            run("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", USER)
            created_user = True
        saved.keep(f"/var/mail/{USER}")
        inst.build_and_install()
        # Port 25 may be taken on a test machine: the one listener moves.
        port = free_port()
        CONFIG.write_text(CONFIG.read_text().replace("smtp-listener 127.0.0.1:25",
                                                     f"smtp-listener 127.0.0.1:{port}"))
        ALIASES.write_text(f"# test aliases\npostmaster: root\ntern-alias-test: {USER}\n")
        run("/usr/bin/newaliases")
        inst.start()
        yield inst
    finally:
        inst.stop()
        if not was_installed:
            inst.uninstall()
        saved.restore()
        for path in made + aside:
            shutil.rmtree(path, ignore_errors=True)
        for path in aside:
            pathlib.Path(f"{path}.before-test").rename(path)
        if created_user:
            subprocess.run(["userdel", USER], capture_output=True)


def test_installed_unit_starts_every_service(installed):
    r = installed.ctl("status")
    assert r.returncode == 0, r.stderr
    for service in ("master", "smtpd", "qmgr", "smtp", "acctd", "pickup", "local"):
        assert service in r.stdout, r.stdout


def test_mail_to_root_reaches_var_mail_root(installed):
    marker = uuid.uuid4().hex
    send_with_mail("root", "test", f"hi {marker}\n")
    mbox = pathlib.Path("/var/mail/root")
    wait_for(lambda: mailbox_has(mbox, marker), 60, what="the message in /var/mail/root")
    message = last_message(mbox.read_text(errors="replace"), marker)
    assert message.startswith("From "), message[:200]
    assert "\nSubject: test\n" in message, message
    st = mbox.stat()
    assert st.st_uid == 0 and (st.st_mode & 0o777) in (0o600, 0o660), oct(st.st_mode)


def test_mail_to_an_alias_reaches_the_aliased_user(installed):
    marker = uuid.uuid4().hex
    send_with_mail("tern-alias-test", "aliased", f"hi {marker}\n")
    mbox = pathlib.Path(f"/var/mail/{USER}")
    wait_for(lambda: mailbox_has(mbox, marker), 60, what=f"the message in {mbox}")
    assert mbox.stat().st_uid == pwd.getpwnam(USER).pw_uid
    assert not mailbox_has(pathlib.Path("/var/mail/root"), marker)


def test_mail_while_stopped_is_delivered_after_start(installed):
    installed.stop()
    marker = uuid.uuid4().hex
    send_with_mail("root", "queued while stopped", f"hi {marker}\n")
    pickup = [p for p in (SPOOL / "pickup").iterdir() if p.suffix == ".msg"]
    assert pickup, "the message waits in the pickup directory"
    installed.start()
    wait_for(lambda: mailbox_has(pathlib.Path("/var/mail/root"), marker), 60, what="the queued message")
    wait_for(lambda: not any(p.suffix == ".msg" for p in (SPOOL / "pickup").iterdir()), 30,
             what="the pickup file to go")


def test_mailq_through_the_installed_link(installed):
    """Everything so far was delivered: mailq (the link to tern-sendmail)
    says the queue is empty."""
    def mailq():
        r = subprocess.run(["/usr/bin/mailq"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout
    wait_for(lambda: mailq() == "Mail queue is empty\n", 30, what="an empty queue")


def test_accounting_file_has_the_local_deliveries(installed):
    acct = LOG_DIR / "acct.csv"
    wait_for(lambda: acct.exists() and ",root@" in acct.read_text(), 30, what="a d record for root")
