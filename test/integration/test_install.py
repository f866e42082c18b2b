"""tern as the system MTA: make install into a DESTDIR (file list, modes,
shipped files with the configured paths, an existing configuration kept),
the sendmail links, the generated man pages, and tern-sendmail writing
well-formed pickup files atomically while no daemon runs."""
import os
import pathlib
import pwd
import re
import stat
import subprocess
import threading
import time

import pytest

from conftest import TOP, shipped_logrotate, wait_for, wait_for_log

SENDMAIL = TOP / "ctl" / "tern-sendmail"
DAEMONS = ("master", "smtpd", "qmgr", "smtp", "acctd", "pickup", "local")


def make(*args, timeout=300):
    r = subprocess.run(["make", "-s", *args], cwd=TOP, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def configured(*names):
    """The values of rules.mk variables, as make expands them."""
    script = "top = .\ninclude rules.mk\nshow:\n" + "".join(f"\t@echo '$({n})'\n" for n in names)
    r = subprocess.run(["make", "-s", "-f", "-", "show"], cwd=TOP, input=script, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return dict(zip(names, r.stdout.splitlines()))


@pytest.fixture(scope="module")
def paths():
    return configured("sbindir", "libexecdir", "sysconfdir", "localstatedir", "mandir", "systemdunitdir")


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """One make install into a DESTDIR, shared by the tests that only look."""
    dest = tmp_path_factory.mktemp("stage")
    make("install", f"DESTDIR={dest}")
    return dest


def inside(dest, path):
    return dest / str(path).lstrip("/")


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


# ---- make install ---------------------------------------------------------------------


def test_install_puts_every_file_in_place_with_its_mode(stage, paths):
    p = {k: pathlib.Path(v) for k, v in paths.items()}
    spool = p["localstatedir"] / "spool" / "tern"
    expected = {
        p["sbindir"] / "ternctl": 0o755,
        p["sbindir"] / "tern-sendmail": 0o755,  # setgid only when installed as root, live
        p["sysconfdir"] / "tern" / "config": 0o640,
        p["sysconfdir"] / "logrotate.d" / "tern": 0o644,
        p["systemdunitdir"] / "tern.service": 0o644,
        p["mandir"] / "man1" / "tern-sendmail.1": 0o644,
        p["mandir"] / "man5" / "tern.conf.5": 0o644,
        p["mandir"] / "man8" / "tern.8": 0o644,
        p["mandir"] / "man8" / "ternctl.8": 0o644,
        spool: 0o755,
        spool / "pickup": 0o1730,
        spool / "pickup-bad": 0o700,
        p["localstatedir"] / "log" / "tern": 0o750,
    }
    for daemon in DAEMONS:
        if (TOP / daemon / daemon).exists():
            expected[p["libexecdir"] / "tern" / daemon] = 0o755
    for path, mode in expected.items():
        assert inside(stage, path).exists(), path
        assert mode_of(inside(stage, path)) == mode, f"{path}: {oct(mode_of(inside(stage, path)))}"
    files = {pathlib.Path("/") / f.relative_to(stage) for f in stage.rglob("*") if f.is_file()}
    assert files == {path for path in expected if not inside(stage, path).is_dir()}
    # With DESTDIR nothing is chowned: everything belongs to whoever installed.
    assert {os.lstat(inside(stage, path)).st_uid for path in expected} == {os.getuid()}


def test_shipped_files_carry_the_configured_paths(stage, paths):
    unit = inside(stage, pathlib.Path(paths["systemdunitdir"]) / "tern.service").read_text()
    config = f"{paths['sysconfdir']}/tern/config"
    assert f"ExecStart={paths['libexecdir']}/tern/master -f -c {config}\n" in unit
    assert f"ExecReload={paths['sbindir']}/ternctl reload -c {config}\n" in unit
    assert f"ExecStop={paths['sbindir']}/ternctl stop -c {config}\n" in unit
    rotate = inside(stage, pathlib.Path(paths["sysconfdir"]) / "logrotate.d" / "tern").read_text()
    assert f"{paths['localstatedir']}/log/tern/acct.csv {{" in rotate
    assert "nocreate" in rotate and "reopen acct" in rotate
    for shipped in (unit, rotate, inside(stage, config).read_text()):
        assert not re.search(r"@[A-Za-z_]+@", shipped)


def test_logrotate_accepts_the_snippet(stage, paths, tmp_path):
    snippet = inside(stage, pathlib.Path(paths["sysconfdir"]) / "logrotate.d" / "tern")
    r = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"), str(snippet)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr.lower(), r.stderr


def test_example_config_is_accepted(stage, paths, ternctl):
    r = ternctl("test", "config", "-c", inside(stage, f"{paths['sysconfdir']}/tern/config"))
    assert r.rc == 0, r.out + r.err
    assert "Configuration OK." in r.out


def test_install_never_overwrites_an_existing_config(tmp_path, paths):
    config = inside(tmp_path, f"{paths['sysconfdir']}/tern/config")
    config.parent.mkdir(parents=True)
    config.write_text("# mine\n")
    make("install", f"DESTDIR={tmp_path}")
    assert config.read_text() == "# mine\n"
    assert not config.with_name("config.tmp").exists()


def test_install_sendmail_links_and_uninstall(tmp_path, paths):
    make("install", f"DESTDIR={tmp_path}")
    make("install-sendmail", f"DESTDIR={tmp_path}")
    target = f"{paths['sbindir']}/tern-sendmail"
    for link in ("/usr/sbin/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases"):
        assert os.readlink(inside(tmp_path, link)) == target
    make("uninstall", f"DESTDIR={tmp_path}")
    for gone in ("/usr/sbin/sendmail", f"{paths['sbindir']}/ternctl", target,
                 f"{paths['libexecdir']}/tern/master"):
        assert not os.path.lexists(inside(tmp_path, gone)), gone
    assert inside(tmp_path, f"{paths['sysconfdir']}/tern/config").exists()  # the operator's


# ---- man pages ---------------------------------------------------------------------------


def directive_table():
    """(name, supported) of every entry of conf/conf_directives.c."""
    text = (TOP / "conf" / "conf_directives.c").read_text()
    table = text[text.index("const struct conf_directive conf_directives[]"):text.index("const size_t conf_directive_total")]
    entries = re.findall(r'\{\.name = "([^"]+)"(.*?)\}', table, re.S)
    return [(name, "CONF_SUPPORTED" in rest) for name, rest in entries]


def man_section(page, title, next_title):
    text = (TOP / "doc" / page).read_text()
    start = text.index(title)
    return text[start:text.index(next_title, start) if next_title else len(text)]


def man_names(section):
    return {line[3:].replace("\\-", "-").replace("\\&", "") for line in section.splitlines() if line.startswith(".B ")}


def test_conf_man_page_lists_every_directive_where_it_belongs():
    table = directive_table()
    assert len(table) > 200
    supported = man_names(man_section("tern.conf.5", ".SS Directives tern acts on", ".SS Directives recognised"))
    pending = man_names(man_section("tern.conf.5", ".SS Directives recognised", ".SH FILES"))
    assert supported == {name for name, ok in table if ok}
    assert pending == {name for name, ok in table if not ok}


def test_ternctl_man_page_has_every_command(ternctl):
    usage = ternctl("--help").out
    page = (TOP / "doc" / "ternctl.8").read_text().replace("\\-", "-")
    commands = [line.split(" [")[0].split(" -")[0].strip() for line in usage.splitlines() if line.startswith("  ")]
    assert "test config" in commands and "stop" in commands
    entries = [line.replace('"', "").split(" ", 1)[1] for line in page.splitlines()
               if line.startswith((".B ", ".BR ", ".BI ")) and " " in line]
    for command in commands:
        assert any(entry == command or entry.startswith(command + " ") for entry in entries), command


@pytest.mark.parametrize("page", ["tern-sendmail.1", "tern.conf.5", "tern.8", "ternctl.8"])
def test_man_pages_render_cleanly(page):
    r = subprocess.run(["groff", "-man", "-z", "-Tutf8", "-wall", str(TOP / "doc" / page)], capture_output=True,
                       text=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert r.returncode == 0
    problems = [l for l in r.stderr.splitlines() if "adjust line" not in l and "break line" not in l]
    assert not problems, problems


# ---- tern-sendmail ------------------------------------------------------------------------


class Pickup(type(pathlib.Path())):
    """The pickup directory, which also knows its configuration file."""

    def __new__(cls, directory, config):
        self = super().__new__(cls, directory)
        self.config = config
        return self


@pytest.fixture
def pickup(tmp_path):
    """A configuration naming a pickup directory; no daemon runs on it."""
    directory = tmp_path / "pickup"
    directory.mkdir()
    config = tmp_path / "tern.conf"
    config.write_text(f"spool {tmp_path / 'spool'}\npickup {directory} {tmp_path / 'bad'}\n")
    return Pickup(directory, config)


def sendmail(config, *args, stdin=b"", argv0=None):
    return subprocess.run([argv0 or str(SENDMAIL), "-C", str(config), *args], input=stdin, capture_output=True,
                          timeout=30)


def parse_pickup(path):
    """(sender, [receivers], message bytes) of a pickup file."""
    data = path.read_bytes()
    sender, receivers, pos = None, [], 0
    while True:
        end = data.index(b"\n", pos)
        line = data[pos:end].decode()
        if line.startswith("x-sender: ") and sender is None and not receivers:
            sender = line[len("x-sender: "):]
        elif line.startswith("x-receiver: "):
            receivers.append(line[len("x-receiver: "):])
        else:
            return sender, receivers, data[pos:]
        pos = end + 1


def only_message(directory):
    files = sorted(directory.iterdir())
    assert len(files) == 1, files
    assert re.fullmatch(r"\d+\.\d+\.[0-9a-f]{16}\.msg", files[0].name), files[0].name
    return files[0]


MESSAGE = (b"From: Ops <ops@example.org>\n"
           b"To: \"Smith, Jo\" <jo@example.com>, al@example.net (Al)\n"
           b"Cc: team: pat@example.org, lee@example.org;\n"
           b"Bcc: hidden@example.com,\n"
           b"  also-hidden@example.com\n"
           b"Subject: nightly report\n"
           b"\n"
           b"line one\n"
           b".\n"
           b"after the dot\n")


def test_sendmail_t_f_i_writes_a_well_formed_pickup_file(pickup):
    r = sendmail(pickup.config, "-t", "-i", "-f", "bounces@example.org", "extra@example.net", stdin=MESSAGE)
    assert r.returncode == 0, r.stderr
    path = only_message(pickup)
    assert mode_of(path) == 0o644
    sender, receivers, message = parse_pickup(path)
    assert sender == "bounces@example.org"
    assert receivers == ["extra@example.net", "jo@example.com", "al@example.net", "pat@example.org",
                         "lee@example.org", "hidden@example.com", "also-hidden@example.com"]
    # Bcc: is gone, everything else byte for byte, the dot line kept (-i).
    assert message == MESSAGE.replace(b"Bcc: hidden@example.com,\n  also-hidden@example.com\n", b"")


def test_sendmail_without_i_ends_at_a_dot_line_and_adds_from(pickup):
    r = sendmail(pickup.config, "-F", "Cron Daemon", "-oem", "-odb", "-v", "-Z", "root",
                 stdin=b"Subject: x\n\nbody\n.\nnot read\n")
    assert r.returncode == 0, r.stderr
    sender, receivers, message = parse_pickup(only_message(pickup))
    assert receivers == ["root"] and sender
    assert message == f'From: "Cron Daemon" <{sender}>\n'.encode() + b"Subject: x\n\nbody\n"


def test_sendmail_message_without_header_gets_from_and_a_blank_line(pickup):
    r = sendmail(pickup.config, "root", stdin=b"disk almost full\n")
    assert r.returncode == 0, r.stderr
    sender, _, message = parse_pickup(only_message(pickup))
    assert message == f"From: {sender}\n\ndisk almost full\n".encode()


def test_sendmail_oi_and_null_sender(pickup):
    r = sendmail(pickup.config, "-oi", "-f", "<>", "--", "a@example.com", stdin=b"Subject: y\n\n.\n")
    assert r.returncode == 0, r.stderr
    sender, receivers, message = parse_pickup(only_message(pickup))
    assert (sender, receivers, message) == ("<>", ["a@example.com"], b"Subject: y\n\n.\n")


def test_sendmail_pickup_defaults_to_the_spool(tmp_path):
    config = tmp_path / "tern.conf"
    config.write_text(f"spool {tmp_path / 'spool'}\n")
    (tmp_path / "spool" / "pickup").mkdir(parents=True)
    r = sendmail(config, "root", stdin=b"Subject: z\n\nhi\n")
    assert r.returncode == 0, r.stderr
    only_message(tmp_path / "spool" / "pickup")


@pytest.mark.parametrize("args,status,words", [
    (["-bd"], 69, "not supported"),
    (["-bp"], 69, "the queue is not available: tern is not running"),
    ([], 64, "no recipients"),
    (["-t"], 64, "no recipient addresses"),
    (["-f", "a@b\nx-receiver: victim@example.com", "root"], 65, "control character"),
])
def test_sendmail_refusals_write_nothing(pickup, args, status, words):
    r = sendmail(pickup.config, *args, stdin=b"Subject: no\n\nno\n")
    assert r.returncode == status, r.stderr
    assert words in r.stderr.decode()
    assert list(pickup.iterdir()) == []


def test_mailq_newaliases_and_q_by_name(pickup, tmp_path):
    for name in ("mailq", "newaliases"):
        (tmp_path / name).symlink_to(SENDMAIL)
    r = sendmail(pickup.config, argv0=str(tmp_path / "mailq"))  # no tern running on that spool
    assert r.returncode == 69 and b"tern is not running" in r.stderr
    config = tmp_path / "aliases.conf"
    config.write_text(f"alias-file {tmp_path / 'aliases'}\n")
    r = sendmail(config, argv0=str(tmp_path / "newaliases"))
    assert r.returncode == 0 and b"does not exist: no aliases" in r.stderr
    (tmp_path / "aliases").write_text("postmaster: root\n")
    r = sendmail(config, argv0=str(tmp_path / "newaliases"))
    assert r.returncode == 0 and b"1 aliases" in r.stdout, r.stderr
    assert (tmp_path / "aliases.db").exists()
    assert sendmail(pickup.config, "-q").returncode == 0
    assert sendmail(pickup.config, "-q1h").returncode == 0
    assert list(pickup.iterdir()) == []


def test_sendmail_unwritable_pickup_is_a_temporary_failure(tmp_path):
    config = tmp_path / "tern.conf"
    config.write_text(f"pickup {tmp_path / 'missing'} {tmp_path / 'bad'}\n")
    r = sendmail(config, "root", stdin=b"\n")
    assert r.returncode == 75, r.stderr


def test_sendmail_never_shows_a_partial_message(pickup):
    """A watcher reads every .msg the moment it appears: each one is whole."""
    body = b"".join(b"%07d the quick brown fox jumps over the lazy dog\n" % i for i in range(120000))
    message = b"From: a@example.org\nSubject: big\n\n" + body + b"END\n"
    seen, partial, done = {}, [], threading.Event()

    def watch():
        while not done.is_set():
            for entry in os.scandir(pickup):
                if entry.name.endswith(".msg") and entry.name not in seen:
                    data = pathlib.Path(entry.path).read_bytes()
                    seen[entry.name] = len(data)
                    if not data.endswith(b"END\n"):
                        partial.append(entry.name)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(4):
            r = sendmail(pickup.config, "-i", "root", stdin=message)
            assert r.returncode == 0, r.stderr
    finally:
        done.set()
        watcher.join()
    names = sorted(p.name for p in pickup.iterdir())
    assert len(names) == 4 and all(n.endswith(".msg") for n in names), names
    assert not partial
    for name in names:
        assert parse_pickup(pickup / name)[2] == message


# ---- the shipped logrotate snippet with a running acctd ------------------------------------

from test_acctd_crash import ROTATING_BLOCK  # noqa: E402
from test_acctd_records import acctd_factory  # noqa: E402,F401 (fixture)
from test_acctd_rotate import Flow, rows_in  # noqa: E402


@pytest.mark.skipif(not (TOP / "acctd" / "acctd").exists(), reason="acctd is not built")
def test_shipped_logrotate_snippet_loses_no_record(acctd_factory, tern_dir):
    a = acctd_factory(ROTATING_BLOCK.replace("max-size 64k", "max-size 0")).start()
    conf = shipped_logrotate(tern_dir / "logrotate.conf", a.logdir, a.spool, a.config)
    flow = Flow(a, 2000, pause=0.002)
    flow.start()
    runs = 0
    while flow.is_alive() and runs < 5:
        time.sleep(0.1)
        out = subprocess.run(["logrotate", "-f", "-s", str(tern_dir / "logrotate.state"), str(conf)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        runs += 1
    flow.finish()
    subprocess.run(["gunzip", "-q", *map(str, a.logdir.glob("acct.csv.*.gz"))], check=False)
    names = sorted(os.listdir(a.logdir))
    assert len(names) >= 3, names
    assert all(n == "acct.csv" or re.match(r"^acct\.csv\.\d+$", n) for n in names), names
    assert sorted(rows_in(a, names)) == list(range(1, 2001))
    wait_for_log(a, "reopened")


@pytest.mark.skipif(not (TOP / "acctd" / "acctd").exists(), reason="acctd is not built")
def test_shipped_logrotate_snippet_reopens_through_ternctl(tern, tmp_path):
    """With tern running, the postrotate's "ternctl reopen acct" reaches
    acctd through master: it starts a new file, header first."""
    logdir = tern.base / "log"
    logdir.mkdir()
    if os.geteuid() == 0:
        os.chown(logdir, pwd.getpwnam("tern").pw_uid, -1)
    tern.write_config(ROTATING_BLOCK.replace("LOG/", f"{logdir}/").replace("max-size 64k", "max-size 0"))
    tern.start()
    acct = logdir / "acct.csv"
    header = wait_for(lambda: acct.exists() and acct.read_text(), what="acct.csv with its header")
    conf = shipped_logrotate(tmp_path / "logrotate.conf", logdir, tmp_path / "no-spool", tern.config)
    out = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert (logdir / "acct.csv.1").read_text() == header
    # The pid file fallback points nowhere here: only the request made acctd
    # start a new file, with nothing written since.
    assert wait_for(lambda: acct.exists() and acct.read_text(), what="a new acct.csv") == header
