"""ternctl's queue commands against a running tern (master relays them to
qmgr).  The domains route to a port where nothing listens, with a long
retry-after, so what is queued stays queued (in back-off) and the
commands have something to show and change."""
import ternqmgr
from conftest import wait_for

BODY = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


def enqueue(tern, sender, rcpts):
    with ternqmgr.EnqueueClient(tern.spool / "private" / "qmgr") as c:
        reply = c.enqueue(sender, rcpts, BODY)
    assert reply["status"] == 250, reply
    return reply["queue_id"]


def queues(tern, *args):
    r = tern.ctl("show", "queues", "--json", *args)
    assert r.rc == 0, r.err
    return {q["queue"]: q for q in r.json()}


UNREACHABLE = "".join(f"<domain {d}>\n  smtp-hosts [127.0.0.1]:1\n  retry-after 1h\n</domain>\n"
                      for d in ("one.test", "two.test"))


def test_show_pause_resume_schedule_list_delete(tern):
    tern.write_config(UNREACHABLE)
    tern.start()
    enqueue(tern, "a@example.org", ["x@one.test", "y@one.test", "z@two.test"])
    enqueue(tern, "b@example.org", ["w@one.test"])
    q = wait_for(lambda: len(queues(tern, "--errors")) == 2 and queues(tern), 10, what="two queues in back-off")
    assert q["one.test/{default}"]["rcpts"] == 3 and q["two.test/{default}"]["rcpts"] == 1

    text = tern.ctl("show", "queues")
    assert text.rc == 0 and "one.test/{default}" in text.out and "2 queues shown." in text.out

    r = tern.ctl("pause", "queue", "one.test/*")
    assert r.rc == 0 and r.out.strip() == "1 queue paused.", r.out + r.err
    assert list(queues(tern, "--paused")) == ["one.test/{default}"]
    assert queues(tern)["one.test/{default}"]["paused"] is True
    assert tern.ctl("resume", "queue", "*/*").rc == 0
    assert queues(tern, "--paused") == {}
    assert tern.ctl("schedule", "two.test/{default}", "--json").json()["ok"] is True
    assert tern.ctl("pause", "queue", "nowhere.test/*").rc == 1

    listing = tern.ctl("list", "--queue=one.test/{default}", "--maxitems=2", "--json")
    assert listing.rc == 0, listing.err
    rows = listing.json()
    assert len(rows) == 2
    assert all(r["orig"] in ("a@example.org", "b@example.org") and r["state"] in ("pending", "deferred")
               for r in rows)

    top = tern.ctl("show", "topqueues", "--json").json()
    assert top[0]["queue"] == "one.test/{default}"
    domains = {d["domain"]: d for d in tern.ctl("show", "domains", "--json").json()}
    assert domains["one.test"]["rcpts"] == 3

    r = tern.ctl("delete", "--queue=one.test/*", "--orig=b@example.org")
    assert r.rc == 0 and r.out.strip() == "1 recipients deleted.", r.out + r.err
    assert queues(tern)["one.test/{default}"]["rcpts"] == 2
    r = tern.ctl("delete", "--queue=*/*", "--no-accounting", "--json")
    assert r.json()["message"] == "3 recipients deleted"
    assert queues(tern) == {}

    status = tern.ctl("show", "status", "--json")
    assert status.rc == 0, status.err
    s = status.json()
    assert s["traffic"]["total"]["in"]["rcp"] == 4 and s["traffic"]["total"]["in"]["msg"] == 2
    assert s["queue"]["smtp"]["rcp"] == 0
    assert s["traffic"]["lastHr"]["in"]["rcp"] == 4 and s["traffic"]["lastMin"]["in"]["msg"] == 2
    # the highest hour and minute seen so far: all of this test's traffic
    assert s["traffic"]["topPerHr"] == {"in": {"rcp": 4, "msg": 2}, "out": {"rcp": 0}}
    assert s["traffic"]["topPerMin"] == {"in": {"rcp": 4, "msg": 2}, "out": {"rcp": 0}}
    rows = {line[:11].strip(): line.split()[-3:] for line in tern.ctl("show", "status").out.splitlines()
            if line.startswith(("   Top/", "  Last"))}
    assert rows["Top/Hour"] == ["4", "2", "0"] and rows["Top/Min."] == ["4", "2", "0"], rows
    # acctd runs under master: every record reaches it and leaves the outbox
    wait_for(lambda: tern.ctl("show", "status", "--json").json()["accounting"]["pending"] == 0, 10,
             what="the outbox to drain")
    assert "Traffic" in tern.ctl("show", "status").out

    # after a restart the waiting recipients are counted again from the queue
    enqueue(tern, "c@example.org", ["v@one.test", "u@one.test"])
    tern.stop()
    tern.start()
    wait_for(lambda: {n: x["rcpts"] for n, x in queues(tern).items()} == {"one.test/{default}": 2}, 10,
             what="the counts after a restart")


def test_list_filters_by_orig_and_rcpt_patterns(tern):
    tern.write_config(UNREACHABLE)
    tern.start()
    enqueue(tern, "a@example.org", ["x1@one.test", "x2@one.test", "y@one.test"])
    enqueue(tern, "b@example.org", ["x3@one.test", "w@one.test"])
    wait_for(lambda: queues(tern).get("one.test/{default}", {}).get("rcpts") == 5, 10, what="five recipients")

    def listed(*args):
        r = tern.ctl("list", "--queue=one.test/{default}", "--json", *args)
        assert r.rc == 0, r.err
        return sorted((row["orig"], row["rcpt"]) for row in r.json())

    assert len(listed()) == 5
    assert listed("--orig=b@example.org") == [("b@example.org", "w@one.test"), ("b@example.org", "x3@one.test")]
    assert [r for _, r in listed("--rcpt=x*@ONE.test")] == ["x1@one.test", "x2@one.test", "x3@one.test"]
    assert listed("--orig=a@*", "--rcpt=x*") == [("a@example.org", "x1@one.test"), ("a@example.org", "x2@one.test")]
    assert len(listed("--rcpt=x*", "--maxitems=2")) == 2
    assert listed("--orig=nobody@*") == []
    text = tern.ctl("list", "--queue=one.test/{default}", "--orig=b@example.org")
    assert text.rc == 0 and "2 recipients listed." in text.out, text.out + text.err
    assert tern.ctl("list", "--queue=one.test/{default}", "--bogus=1").rc != 0


def test_queue_recover_refuses_while_tern_runs(tern):
    tern.write_config(UNREACHABLE)
    tern.start()
    r = tern.ctl("queue", "recover", "-d", tern.libexec)
    assert r.rc == 1 and "stop it first" in r.err
    tern.stop()
    r = tern.ctl("queue", "recover", "-d", tern.libexec)
    assert r.rc == 0, r.err
    assert "Queue recovered." in r.out


def test_queues_are_served_and_shown_highest_priority_first(tern):
    """queue-priority orders the queues whatever order they appear in;
    among equals, the older first."""
    prio = {"lo.test": 10, "mid.test": 50, "mid2.test": 50, "hi.test": 90, "lo2.test": 10}
    tern.write_config("".join(f"<domain {d}>\n  smtp-hosts [127.0.0.1]:1\n  retry-after 1h\n"
                              f"  queue-priority {p}\n</domain>\n" for d, p in prio.items()))
    tern.start()
    for d in ("lo.test", "mid.test", "hi.test", "mid2.test", "lo2.test"):
        enqueue(tern, "a@example.org", [f"x@{d}"])
    wait_for(lambda: len(queues(tern)) == 5, 10, what="five queues")
    r = tern.ctl("show", "queues", "--json")
    assert [q["queue"].split("/")[0] for q in r.json()] == ["hi.test", "mid.test", "mid2.test", "lo.test", "lo2.test"]
