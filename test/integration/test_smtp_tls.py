"""Outbound TLS policy per <domain>: opportunistic STARTTLS (and its
fallback to plain text), required STARTTLS that never sends a byte of the
message in clear, client certificates with encrypted keys, verification
against smtp-tls-ca-file."""
from test_smtp_harness import agent, sinks, smtp_certs  # noqa: F401  (fixtures)

QUEUE = "example.net/{default}"


def domain(port, lines):
    body = "".join(f"  {line}\n" for line in lines)
    return f"<domain example.net>\n  smtp-hosts [127.0.0.1]:{port}\n{body}</domain>\n"


def tls_sink(sinks, certs, *extra):
    return sinks("--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key", *extra)


def verbs(session):
    return [c["verb"] for c in session["commands"]]


def deliver_one(agent):
    results, done = agent.deliver(QUEUE, [{"rcpts": ["b@example.net"]}])
    assert len(results) == 1
    return results[0], done


def test_opportunistic_tls_reports_protocol_and_cipher(agent, sinks, smtp_certs):
    sink = tls_sink(sinks, smtp_certs)
    agent.start(domain(sink.port, ["use-starttls yes", "require-starttls no"]))
    result, done = deliver_one(agent)
    assert result["outcome"] == "delivered"
    assert result["tls_protocol"] == "TLSv1.3"
    session = sink.sessions()[0]
    assert session["tls"]["ok"] and session["tls"]["protocol"] == "TLSv1.3"
    assert result["tls_cipher"] == session["tls"]["cipher"] != ""
    # EHLO again after the handshake; MAIL only under TLS
    assert verbs(session)[:3] == ["EHLO", "STARTTLS", "EHLO"]
    assert sink.messages()[0]["tls"] is True


def test_opportunistic_tls_to_a_plain_server_delivers_in_clear(agent, sinks):
    sink = sinks()
    agent.start(domain(sink.port, ["use-starttls yes"]))
    result, done = deliver_one(agent)
    assert result["outcome"] == "delivered"
    assert result["tls_protocol"] == "" and result["tls_cipher"] == ""
    assert "STARTTLS" not in verbs(sink.sessions()[0])


def test_broken_handshake_falls_back_to_clear_and_is_remembered(agent, sinks, smtp_certs):
    sink = tls_sink(sinks, smtp_certs, "--break-tls", "garbage")
    agent.start(domain(sink.port, ["use-starttls yes"]))
    result, done = deliver_one(agent)
    assert result["outcome"] == "delivered" and result["tls_protocol"] == ""
    first, second = sorted(sink.sessions(2), key=lambda x: x["session"])[:2]
    assert verbs(first)[:2] == ["EHLO", "STARTTLS"] and "MAIL" not in verbs(first)
    assert "STARTTLS" not in verbs(second) and "MAIL" in verbs(second)
    # The next delivery goes in clear at once.
    result, done = deliver_one(agent)
    assert result["outcome"] == "delivered"
    third = sorted(sink.sessions(3), key=lambda x: x["session"])[2]
    assert "STARTTLS" not in verbs(third)


def test_required_tls_not_offered_defers_without_mail(agent, sinks):
    sink = sinks()
    agent.start(domain(sink.port, ["use-starttls yes", "require-starttls yes"]))
    result, done = deliver_one(agent)
    assert result["outcome"] == "deferred"
    assert result["reason"] == "STARTTLS required but not offered by 127.0.0.1"
    assert result["dsn_status"].startswith("4.")
    assert done["outcome"] == "connect-failed"
    session = sink.sessions()[0]
    assert "MAIL" not in verbs(session) and "RCPT" not in verbs(session)
    assert sink.records("message") == []


def test_required_tls_with_broken_handshake_defers_without_mail(agent, sinks, smtp_certs):
    sink = tls_sink(sinks, smtp_certs, "--break-tls", "close")
    agent.start(domain(sink.port, ["require-starttls yes"]))
    result, done = deliver_one(agent)
    assert result["outcome"] == "deferred"
    assert "TLS handshake failed" in result["reason"]
    for session in sink.sessions():
        assert "MAIL" not in verbs(session)


def test_client_certificate_with_encrypted_key(agent, sinks, smtp_certs):
    sink = tls_sink(sinks, smtp_certs, "--tls-ca", smtp_certs / "ca.pem", "--client-cert", "require")
    bundle = smtp_certs / "client-bundle.pem"
    agent.start(domain(sink.port, [f'smtp-client-certificate {bundle} "key password"', "use-starttls yes",
                                   "require-starttls yes"]))
    result, done = deliver_one(agent)
    assert result["outcome"] == "delivered" and result["tls_protocol"] == "TLSv1.3"
    cert = sink.sessions()[0]["tls"]["client_cert"]
    assert "CN=client.tern.test" in cert["subject"]


def test_without_the_client_certificate_delivery_is_refused(agent, sinks, smtp_certs):
    sink = tls_sink(sinks, smtp_certs, "--tls-ca", smtp_certs / "ca.pem", "--client-cert", "require")
    agent.start(domain(sink.port, ["use-starttls yes", "require-starttls yes"]))
    result, done = deliver_one(agent)
    assert result["outcome"] == "deferred"
    assert sink.records("message") == []
    for session in sink.sessions():
        assert "MAIL" not in verbs(session)


def test_ca_file_verifies_the_server(agent, sinks, smtp_certs):
    sink = tls_sink(sinks, smtp_certs)
    agent.start(domain(sink.port, ["require-starttls yes", f"smtp-tls-ca-file {smtp_certs / 'ca.pem'}",
                                   "reuse-ssl-session yes"]))
    result, done = deliver_one(agent)
    assert result["outcome"] == "delivered" and result["tls_protocol"] == "TLSv1.3"


def test_ca_file_mismatch_defers_required_tls(agent, sinks, smtp_certs):
    sink = tls_sink(sinks, smtp_certs)
    # The client certificate is no CA of the server's chain.
    agent.start(domain(sink.port, ["require-starttls yes", f"smtp-tls-ca-file {smtp_certs / 'client.pem'}"]))
    result, done = deliver_one(agent)
    assert result["outcome"] == "deferred"
    assert result["reason"].startswith("TLS verification of 127.0.0.1 failed")
    assert sink.records("message") == []


def test_tls12_only_server_and_cipher_switches(agent, sinks, smtp_certs):
    sink = tls_sink(sinks, smtp_certs, "--tls-max-version", "TLSv1.2")
    agent.start(domain(sink.port, ["use-starttls yes", "smtp-tls-ciphers ECDHE-ECDSA-AES128-GCM-SHA256"]))
    result, done = deliver_one(agent)
    assert result["tls_protocol"] == "TLSv1.2"
    assert result["tls_cipher"] == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_disallowed_version_fails_required_tls(agent, sinks, smtp_certs):
    sink = tls_sink(sinks, smtp_certs, "--tls-max-version", "TLSv1.2")
    agent.start(domain(sink.port, ["require-starttls yes", "smtp-tls-allow-tlsv1.2 no"]))
    result, done = deliver_one(agent)
    assert result["outcome"] == "deferred"
    assert sink.records("message") == []


def test_reply_injected_before_the_handshake_is_discarded(agent, smtp_certs):
    """A server (or a man in the middle) that sends more after its 220 to
    STARTTLS: those bytes came in clear and must not be taken as the
    answer to the EHLO sent under TLS."""
    import socket
    import ssl
    import threading
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(smtp_certs / "server.pem", smtp_certs / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    seen = []

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(10)
        f = conn.makefile("rwb")

        def say(text):
            f.write(text.encode() + b"\r\n")
            f.flush()

        say("220 fake ESMTP")
        seen.append(f.readline().strip())  # EHLO
        say("250-fake\r\n250 STARTTLS")
        seen.append(f.readline().strip())  # STARTTLS
        say("220 go ahead\r\n250 injected")
        f.close()
        tls = ctx.wrap_socket(conn, server_side=True)
        t = tls.makefile("rwb")
        lines = {b"EHLO": b"250-fake\r\n250 X-AFTER-TLS\r\n", b"MAIL": b"250 ok\r\n", b"RCPT": b"250 ok\r\n",
                 b"DATA": b"354 go\r\n", b"QUIT": b"221 bye\r\n"}
        while True:
            line = t.readline()
            if not line:
                break
            seen.append(line.strip())
            reply = lines.get(line.split()[0].upper() if line.strip() else b"")
            if line == b".\r\n":
                reply = b"250 queued\r\n"
            if reply:
                t.write(reply)
                t.flush()
            if line.startswith(b"QUIT"):
                break
        tls.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    agent.start(domain(port, ["require-starttls yes"]))
    result, done = deliver_one(agent)
    thread.join(10)
    listener.close()
    assert result["outcome"] == "delivered", result
    assert result["esmtp"] == "X-AFTER-TLS"
    assert seen[2].startswith(b"EHLO")
