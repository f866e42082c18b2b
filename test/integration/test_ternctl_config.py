"""ternctl test config and ternctl explain, run as an operator would run them
against real configuration files."""
from conftest import TOP, line_of


def explain_lines(result):
    """Maps directive -> (value, from) from `ternctl explain` text output."""
    settings = {}
    for line in result.out.splitlines():
        if not line.strip():
            continue
        setting, _, origin = line.rpartition("  # ")
        name, _, value = setting.strip().partition(" ")
        settings[name] = (value.strip(), origin.strip())
    return settings


def test_design_configuration_is_accepted(ternctl, design_config):
    r = ternctl("test", "config", "-c", design_config)
    assert r.rc == 0, r.err
    assert r.out.strip() == "Configuration OK."
    # Nothing is silently ignored: every warning names its file and line.
    for line in r.err.splitlines():
        assert line.startswith(f"{design_config}:"), line
        assert ": warning: " in line, line


def test_curly_quotes_are_ordinary_quotes(ternctl, write_config):
    path = write_config('<domain super-secure-server.com>\n'
                        '    smtp-client-certificate /etc/tern/partner-client.pem \u201ckey password\u201d\n'
                        '</domain>\n'
                        'smtp-server-tls-certificate /etc/tern/smtp-cert.pem \u201cYourPasswordHere\u201d\n')
    r = ternctl("test", "config", "-c", path)
    assert r.rc == 0, r.err
    r = ternctl("explain", "-c", path, "domain", "super-secure-server.com")
    assert r.rc == 0, r.err
    value, origin = explain_lines(r)["smtp-client-certificate"]
    assert value.startswith("/etc/tern/partner-client.pem ")
    assert "key password" not in r.out  # secrets are masked
    assert origin == f"{path}:2"


def test_shipped_local_configuration_is_accepted(ternctl):
    r = ternctl("test", "config", "-c", TOP / "conf" / "tern-local.conf")
    assert r.rc == 0, r.err
    assert r.out.strip() == "Configuration OK."


def test_unknown_directive_has_file_line_and_suggestion(ternctl, write_config):
    path = write_config("<domain *>\n    use-startls yes\n</domain>\n")
    r = ternctl("test", "config", "-c", path)
    assert r.rc == 1
    assert f'{path}:2: unknown directive "use-startls"; did you mean "use-starttls"?' in r.err
    assert "Configuration OK." not in r.out


def test_every_error_is_reported(ternctl, write_config):
    path = write_config("max-smtp-out 5\n"            # wrong block (domain only)
                        "<domain *>\n"
                        "    max-smtp-out lots\n"    # wrong type
                        "    retry-after 10x\n"      # bad interval
                        "</domain>\n"
                        "<source 10.1.2.3/8>\n"      # host bits beyond the mask
                        "</source>\n"
                        "<domain x.example>\n")      # never closed
    r = ternctl("test", "config", "-c", path)
    assert r.rc == 1
    errors = [line for line in r.err.splitlines() if ": warning: " not in line]
    for number in (1, 3, 4, 6, 8):
        assert any(e.startswith(f"{path}:{number}: ") for e in errors), (number, r.err)
    assert f'{path}:3: ' in r.err and "lots" in r.err


def test_error_in_included_file_names_that_file(ternctl, write_config):
    write_config("<domain *>\n    max-smtp-out 10\n    bounce-after soon\n</domain>\n", "conf.d/domains.conf")
    main = write_config("include conf.d/*.conf\n")
    r = ternctl("test", "config", "-c", main)
    assert r.rc == 1
    assert f"{main.parent}/conf.d/domains.conf:3: " in r.err


def test_missing_file_is_a_one_line_error(ternctl, tmp_path):
    r = ternctl("test", "config", "-c", tmp_path / "nope.conf")
    assert r.rc == 1
    assert len(r.err.strip().splitlines()) == 1
    assert "nope.conf" in r.err


def test_explain_partner_domain(ternctl, design_config):
    r = ternctl("explain", "-c", design_config, "domain", "super-secure-server.com")
    assert r.rc == 0, r.err
    s = explain_lines(r)
    assert s["require-starttls"] == ("yes", f"{design_config}:{line_of(design_config, 'require-starttls yes')}")
    value, origin = s["smtp-client-certificate"]
    assert value.split()[0] == "/etc/tern/partner-client.pem"
    assert origin == f"{design_config}:{line_of(design_config, 'smtp-client-certificate')}"
    # use-starttls is set in both blocks: the specific one wins.
    assert s["use-starttls"][1] == f"{design_config}:{line_of(design_config, 'use-starttls yes', 9)}"


def test_explain_other_domain_gets_the_wildcard(ternctl, design_config):
    r = ternctl("explain", "-c", design_config, "domain", "gmail.com")
    assert r.rc == 0, r.err
    s = explain_lines(r)
    assert s["use-starttls"] == ("yes", f"{design_config}:{line_of(design_config, 'use-starttls yes')}")
    assert s["require-starttls"] == ("no", f"{design_config}:{line_of(design_config, 'require-starttls no')}")
    assert s["max-smtp-out"] == ("20", "default")
    assert s["smtp-client-certificate"][1] == "default"


def test_explain_source(ternctl, design_config):
    r = ternctl("explain", "-c", design_config, "source", "203.0.113.9")
    assert r.rc == 0, r.err
    s = explain_lines(r)
    for directive, value in (("allow-starttls", "yes"), ("require-starttls-before-auth", "yes"),
                             ("allow-unencrypted-plain-auth", "no")):
        assert s[directive] == (value, f"{design_config}:{line_of(design_config, directive)}")
    assert s["always-allow-relaying"] == ("no", "default")


def test_explain_json(ternctl, design_config):
    r = ternctl("explain", "--json", "-c", design_config, "domain", "super-secure-server.com")
    assert r.rc == 0, r.err
    data = r.json()
    assert data["require-starttls"]["value"] == "yes"
    assert data["require-starttls"]["from"] == f"{design_config}:{line_of(design_config, 'require-starttls yes')}"


def test_most_specific_domain_wins_whatever_the_order(ternctl, write_config):
    path = write_config("<domain sub.example.com>\n    max-smtp-out 3\n</domain>\n"
                        "<domain [*.]example.com>\n    max-smtp-out 7\n    max-msg-per-connection 9\n</domain>\n"
                        "<domain *.example.com>\n    max-smtp-out 5\n</domain>\n"
                        "<domain *>\n    max-smtp-out 11\n</domain>\n")
    def get(domain, directive):
        r = ternctl("explain", "-c", path, "domain", domain)
        assert r.rc == 0, r.err
        return explain_lines(r)[directive][0]
    assert get("sub.example.com", "max-smtp-out") == "3"
    assert get("sub.example.com", "max-msg-per-connection") == "9"
    assert get("other.example.com", "max-smtp-out") == "5"
    assert get("example.com", "max-smtp-out") == "7"
    assert get("example.org", "max-smtp-out") == "11"


def test_most_specific_source_wins(ternctl, write_config):
    path = write_config("<source 10/8>\n    max-message-size 10M\n</source>\n"
                        "<source 0/0>\n    log-commands yes\n    max-message-size 1M\n</source>\n"
                        "<source 10.1/16>\n    max-message-size 20M\n</source>\n")
    def get(ip, directive):
        r = ternctl("explain", "-c", path, "source", ip)
        assert r.rc == 0, r.err
        return explain_lines(r)[directive][0]
    assert get("10.1.2.3", "max-message-size") == "20M"
    assert get("10.2.2.3", "max-message-size") == "10M"
    assert get("192.0.2.1", "max-message-size") == "1M"
    assert get("10.1.2.3", "log-commands") == "yes"


def test_bad_ip_is_refused(ternctl, design_config):
    r = ternctl("explain", "-c", design_config, "source", "not-an-ip")
    assert r.rc == 1
    assert "not-an-ip" in r.err


def test_usage_errors(ternctl):
    r = ternctl("frobnicate")
    assert r.rc != 0
    assert r.err.strip()
    r = ternctl("--help")
    assert r.rc == 0
    assert "test config" in r.out and "explain" in r.out


def test_test_config_json(ternctl, write_config, design_config):
    r = ternctl("test", "config", "--json", "-c", design_config)
    assert r.rc == 0
    data = r.json()
    assert data["ok"] is True and data["errors"] == []
    assert all(w["file"] == str(design_config) and w["line"] > 0 for w in data["warnings"])
    path = write_config("<domain *>\n    use-startls yes\n</domain>\n")
    r = ternctl("test", "config", "--json", "-c", path)
    assert r.rc == 1
    data = r.json()
    assert data["ok"] is False
    assert data["errors"] == [{"file": str(path), "line": 2,
                               "message": 'unknown directive "use-startls"; did you mean "use-starttls"?'}]
