"""ternqmgr: qmgr's enqueue protocol (doc/queue.md) on top of ternipc's
framing, for the integration tests.

    enqueue (envelope) ; rcpt (one per recipient)... ; data (chunks)... ; end
    -> status 250 + queue_id, or status 4xx/5xx + reason"""
import ternipc

DATA_CHUNK = 256 * 1024


def enqueue_frames(sender, recipients, body, **envelope):
    """The frames of one message.  recipients: addresses, or
    (address, {"orcpt": ..., "notify": ...}) pairs; envelope: the other
    attributes of the enqueue request (envid=..., vmta=..., ...)."""
    frames = [ternipc.encode([("request", "enqueue"), ("sender", sender), *envelope.items()])]
    for rcpt in recipients:
        address, extra = (rcpt, {}) if isinstance(rcpt, str) else rcpt
        frames.append(ternipc.encode([("request", "rcpt"), ("recipient", address), *extra.items()]))
    for off in range(0, len(body), DATA_CHUNK):
        frames.append(ternipc.encode([("request", "data"), ("data", body[off:off + DATA_CHUNK])]))
    frames.append(ternipc.encode([("request", "end")]))
    return b"".join(frames)


class EnqueueClient(ternipc.Connection):
    """Hands messages to qmgr; enqueue() returns qmgr's reply as a dict:
    {"status": 250, "queue_id": ...} or {"status": 4xx/5xx, "reason": ...}."""

    def enqueue(self, sender, recipients, body, **envelope):
        self.send_raw(enqueue_frames(sender, recipients, body, **envelope))
        return self.receive()
