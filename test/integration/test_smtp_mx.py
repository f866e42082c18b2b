"""MX routing with libunbound against a local DNS server (Debian's
dnsmasq, serving test records on 127.0.0.1:PORT, named by name-server
IP:PORT): preference order with a refusing first MX, implicit MX (A only),
bounce-upon-no-mx, null MX (RFC 7505), NXDOMAIN, a server that does not
answer, lookup-mx: routes."""
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, wait_for, wait_for_log
from test_smtp_harness import agent, sinks  # noqa: F401  (fixtures)

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"

RECORDS = [
    # two MX of different preference; the better one (127.0.0.2) refuses
    "--mx-host=two.mx.example,mx1.two.mx.example,10",
    "--mx-host=two.mx.example,mx2.two.mx.example,20",
    "--host-record=mx1.two.mx.example,127.0.0.2",
    "--host-record=mx2.two.mx.example,127.0.0.1",
    # no MX, an address
    "--host-record=nomx.mx.example,127.0.0.1",
    # null MX: preference 0, root name
    "--dns-rr=null.mx.example,15,000000",
    # the MX of another domain, for lookup-mx:
    "--mx-host=other.mx.example,mx2.two.mx.example,5",
]


@pytest.fixture
def dns(tern_dir):
    """dnsmasq on a free UDP/TCP port of 127.0.0.1 with the records above;
    stopped by its PID."""
    if not shutil.which("dnsmasq") and not shutil.which(DNSMASQ):
        pytest.fail("dnsmasq is not installed (tools/deps --test installs dnsmasq-base)")
    port = free_port()
    log = open(tern_dir / "dnsmasq.log", "ab")
    proc = subprocess.Popen([DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                             "--no-hosts", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                             "--pid-file=", "--local=/mx.example/", "--log-queries", "--log-facility=-", "--user=root", "--group=root",
                             *RECORDS], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    time.sleep(0.2)
    assert proc.poll() is None, (tern_dir / "dnsmasq.log").read_text()
    yield port
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start(agent, dns_port, sink_port, extra="", dns_block=False):
    servers = (f"<dns>\n  name-server 127.0.0.1:{dns_port}\n</dns>\n" if dns_block
               else f"name-server 127.0.0.1:{dns_port}\n")
    agent.start(f"{servers}<domain *>\n  default-smtp-port {sink_port}\n"
                f"  use-starttls no\n  connect-timeout 5s\n{extra}</domain>\n")


def test_mx_preference_and_next_mx_on_refusal(agent, sinks, dns):
    sink = sinks()
    start(agent, dns, sink.port)
    results, done = agent.deliver("two.mx.example/{default}", [{"rcpts": ["a@two.mx.example"]}])
    assert results[0]["outcome"] == "delivered", results
    assert results[0]["remote_host"] == "mx2.two.mx.example"
    assert results[0]["remote_ip"] == "127.0.0.1"
    wait_for_log(agent, "refused")  # mx1 was tried first


def test_no_mx_falls_back_to_the_address(agent, sinks, dns):
    sink = sinks()
    start(agent, dns, sink.port)
    results, done = agent.deliver("nomx.mx.example/{default}", [{"rcpts": ["a@nomx.mx.example"]}])
    assert results[0]["outcome"] == "delivered"
    assert results[0]["remote_host"] == "nomx.mx.example"


def test_bounce_upon_no_mx(agent, sinks, dns):
    sink = sinks()
    start(agent, dns, sink.port, "  bounce-upon-no-mx yes\n")
    results, done = agent.deliver("nomx.mx.example/{default}", [{"rcpts": ["a@nomx.mx.example"]}])
    assert results[0]["outcome"] == "bounced"
    assert results[0]["reason"] == "no MX record for nomx.mx.example"
    assert done["outcome"] == "bounced"
    assert sink.records("session") == []


def test_null_mx_bounces(agent, sinks, dns):
    sink = sinks()
    start(agent, dns, sink.port, dns_block=True)  # name-server inside <dns>
    results, done = agent.deliver("null.mx.example/{default}", [{"rcpts": ["a@null.mx.example"]}])
    assert results[0]["outcome"] == "bounced" and results[0]["dsn_status"] == "5.1.10"
    assert "null MX" in results[0]["reason"]


def test_nxdomain_bounces(agent, sinks, dns):
    sink = sinks()
    start(agent, dns, sink.port)
    results, done = agent.deliver("nothere.mx.example/{default}", [{"rcpts": ["a@nothere.mx.example"]}])
    assert results[0]["outcome"] == "bounced" and results[0]["dsn_status"] == "5.1.2"


@pytest.fixture
def failing_dns():
    """A name server that answers every query with SERVFAIL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except OSError:
                continue
            # same id and question, QR set, RCODE 2, no records
            flags = bytes([query[2] | 0x80, 0x82])
            sock.sendto(query[:2] + flags + query[4:6] + b"\0\0\0\0\0\0" + query[12:], peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(2)
    sock.close()


def test_dns_failure_defers_with_retry_after(agent, sinks, failing_dns):
    """A name server failure (SERVFAIL): deferred, retry-after-dns-error."""
    sink = sinks()
    agent.start(f"name-server 127.0.0.1:{failing_dns}\n<domain *>\n  default-smtp-port {sink.port}\n"
                "  retry-after-dns-error 7m\n</domain>\n")
    results, done = agent.deliver("two.mx.example/{default}", [{"rcpts": ["a@two.mx.example"]}])
    assert results[0]["outcome"] == "deferred" and results[0]["dsn_status"] == "4.4.3"
    assert done["outcome"] == "dns-failed" and done["retry_after"] == 420


def test_lookup_mx_route_and_host_names(agent, sinks, dns):
    sink = sinks()
    start(agent, dns, sink.port,
          "</domain>\n<domain routed.example>\n  smtp-hosts lookup-mx:other.mx.example\n")
    results, done = agent.deliver("routed.example/{default}", [{"rcpts": ["a@routed.example"]}])
    assert results[0]["outcome"] == "delivered"
    assert results[0]["remote_host"] == "mx2.two.mx.example"


def test_answers_are_cached(agent, sinks, dns, tern_dir):
    """Three jobs for one domain: the DNS server sees the MX query once."""
    sink = sinks()
    start(agent, dns, sink.port)
    for _ in range(3):
        results, done = agent.deliver("nomx.mx.example/{default}", [{"rcpts": ["a@nomx.mx.example"]}])
        assert results[0]["outcome"] == "delivered"
    assert len(sink.sessions(3)) == 3
    log = (tern_dir / "dnsmasq.log").read_text()
    assert log.count("query[MX] nomx.mx.example") == 1, log


def test_bad_name_server_stops_start_up(agent):
    # smtp may create its socket before it reads the name servers, so wait
    # for the exit itself rather than for start() to notice it.
    try:
        agent.start("name-server 10.0.0.1:99999\n")
    except AssertionError:
        pass
    assert agent.proc.wait(timeout=30) != 0
    assert '"name-server" expects IP or IP:PORT, got "10.0.0.1:99999"' in agent.log_text()
    agent.proc = None  # it exited, as it should
