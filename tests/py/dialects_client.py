"""python-socketio as a second, independent client of the CRUD dialects (ko.ninja and Sails
0.9) of an ioscale cluster: three clients on three nodes, a write through one node read back
through another, and change events checked at subscribers on other nodes and not at the
requester. The three clients use the three ways to connect: WebSocket only (a), long-polling
only (b), and long-polling upgraded to WebSocket (c), so every request a polling session makes
also passes the node's session binding.

Usage: dialects_client.py {ko_ninja|sails} COLLECTION URL_A URL_B URL_C

Prints one JSON line {"ok", "checks", "failures"} and exits 0 when every check passed, 1
otherwise. Every wait is bounded (TIMEOUT), absence is asserted after SETTLE.
"""

import json
import sys
import threading
import time

import socketio

from checks import Checks

TIMEOUT = 5.0
SETTLE = 0.3




class Client:
    """One python-socketio client that records every event it receives."""

    def __init__(self, name, url, transports):
        self.name = name
        self.events = []
        self.cond = threading.Condition()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", self._record)
        self.sio.connect(url, transports=transports, wait_timeout=10)

    def _record(self, event, *args):
        with self.cond:
            self.events.append((event, list(args)))
            self.cond.notify_all()

    def call(self, event, data):
        return self.sio.call(event, data, timeout=TIMEOUT)

    def changes(self, event):
        with self.cond:
            return [
                args[0]
                for (e, args) in self.events
                if e == event and args and isinstance(args[0], dict) and "verb" in args[0]
            ]

    def wait_changes(self, event, n):
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while len(self.changes(event)) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{self.name}: {n} x {event} not received within {TIMEOUT}s "
                        f"(got {self.changes(event)})"
                    )
                self.cond.wait(left)
        return self.changes(event)

    def close(self):
        self.sio.disconnect()


def ko_ninja(c, coll, a, b, cc):
    """The seed's five acknowledged events across three nodes."""
    listed = cc.call(f"{coll}-find", {"query": {}})
    c.check(listed == [], f"find on an empty collection answered {listed!r}")

    rec = a.call(f"{coll}-insert", {"data": {"title": "milk", "done": False}})
    ok = isinstance(rec, dict) and isinstance(rec.get("id"), int)
    c.check(ok, f"insert answered {rec!r}")
    if not ok:
        return
    rid = rec["id"]
    c.check(rec == {"id": rid, "title": "milk", "done": False}, f"inserted record {rec!r}")

    got = cc.wait_changes("model-change", 1)
    c.check(
        got[0] == {"model": coll, "verb": "create", "id": rid, "data": rec},
        f"subscriber on node C got {got[0]!r}",
    )

    one = b.call(f"{coll}-findOne", {"id": rid})
    c.check(one == rec, f"findOne through node B answered {one!r}, expected {rec!r}")

    upd = b.call(f"{coll}-update", {"id": rid, "data": {"done": True}})
    want = {"id": rid, "title": "milk", "done": True}
    c.check(upd == want, f"update answered {upd!r}, expected {want!r}")
    got = cc.wait_changes("model-change", 2)
    c.check(
        got[1] == {"model": coll, "verb": "update", "id": rid, "data": want},
        f"update change on node C: {got[1]!r}",
    )

    found = a.call(f"{coll}-find", {"query": {"done": True}})
    c.check(found == [want], f"find {{done: true}} through node A answered {found!r}")

    bad = a.call(f"{coll}-insert", {"data": "not an object"})
    c.check(isinstance(bad, dict) and "error" in bad, f"bad insert answered {bad!r}")
    bad = a.call(f"{coll}-findOne", {"id": "x1"})
    c.check(isinstance(bad, dict) and "error" in bad, f"bad id answered {bad!r}")

    gone = a.call(f"{coll}-remove", {"id": rid})
    c.check(gone == {"success": True}, f"remove answered {gone!r}")
    got = cc.wait_changes("model-change", 3)
    c.check(
        got[2] == {"model": coll, "verb": "destroy", "id": rid},
        f"destroy change on node C: {got[2]!r}",
    )
    after = cc.call(f"{coll}-findOne", {"id": rid})
    c.check(isinstance(after, dict) and "error" in after, f"findOne after remove: {after!r}")

    time.sleep(SETTLE)
    # A followed the collection only from its find on, after B's update, and the one write
    # after that was its own remove: requesters never hear their own writes.
    a_got = a.changes("model-change")
    c.check(
        [x["verb"] for x in a_got] == [],
        f"requester A must not get changes it caused nor earlier ones: {a_got!r}",
    )


def sails09(client, method, url, data):
    """sails.io.js 0.9's request: JSON text in, the ack's first argument JSON-parsed."""
    res = client.call(method, json.dumps({"url": url, "data": data}))
    if isinstance(res, tuple):
        raw, status = res[0], res[1] if len(res) > 1 else None
    else:
        raw, status = res, None
    if not isinstance(raw, str):
        raise ValueError(f"sails 0.9 expects JSON text in the ack, got {raw!r}")
    return json.loads(raw), status


def sails(c, coll, a, b, cc):
    """Virtual requests, blueprints and the class / instance room pub/sub of the seed."""
    body, status = sails09(a, "get", "/echo", {"message": "hi there!"})
    c.check(
        (body, status) == ({"success": True, "message": "hi there!"}, 200),
        f"/echo answered {body!r} {status!r}",
    )

    for who in (b, cc):
        body, status = sails09(who, "get", f"/{coll}", {})
        c.check((body, status) == ([], 200), f"{who.name}: list answered {body!r} {status!r}")

    rec, status = sails09(a, "post", f"/{coll}", {"name": "foo"})
    ok = status == 200 and isinstance(rec, dict) and isinstance(rec.get("id"), int)
    c.check(ok, f"create answered {rec!r} {status!r}")
    if not ok:
        return
    rid = rec["id"]
    for who in (b, cc):
        got = who.wait_changes("message", 1)
        c.check(
            got[0] == {"model": coll, "verb": "create", "id": rid, "data": rec},
            f"{who.name} got {got[0]!r}",
        )

    upd, status = sails09(a, "put", f"/{coll}/{rid}", {"name": "foobar"})
    c.check(upd == {"id": rid, "name": "foobar"}, f"update answered {upd!r}")
    for who in (b, cc):
        got = who.wait_changes("message", 2)
        c.check(
            got[1] == {"model": coll, "verb": "update", "id": rid, "data": upd},
            f"{who.name}: update message {got[1]!r}",
        )

    one, status = sails09(cc, "get", f"/{coll}/{rid}", {})
    c.check((one, status) == (upd, 200), f"read through node C answered {one!r} {status!r}")

    # The object form (sails.io.js 0.10+): the ack is {body, statusCode, headers}.
    jwr = b.call("delete", {"url": f"/{coll}/{rid}", "method": "delete"})
    c.check(
        isinstance(jwr, dict) and jwr.get("statusCode") == 200 and jwr.get("body") == upd,
        f"object-form delete answered {jwr!r}",
    )
    for who in (a, cc):
        got = who.wait_changes("message", {"a": 1, "c": 3}[who.name])
        c.check(
            got[-1] == {"model": coll, "verb": "destroy", "id": rid},
            f"{who.name}: destroy message {got[-1]!r}",
        )

    body, status = sails09(a, "get", "/no/such/route/here", {})
    c.check(status == 404 and "error" in body, f"unknown route answered {body!r} {status!r}")

    time.sleep(SETTLE)
    a_verbs = [m["verb"] for m in a.changes("message")]
    c.check(a_verbs == ["destroy"], f"requester A: only B's destroy, got {a_verbs!r}")
    b_verbs = [m["verb"] for m in b.changes("message")]
    c.check(b_verbs == ["create", "update"], f"requester B must not get its destroy: {b_verbs!r}")


def main():
    if len(sys.argv) != 6 or sys.argv[1] not in ("ko_ninja", "sails"):
        print(__doc__, file=sys.stderr)
        return 2
    scenario, coll, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
    checks = Checks()
    clients = []
    try:
        ways = (["websocket"], ["polling"], ["polling", "websocket"])
        a, b, cc = (Client(n, u, t) for n, u, t in zip(("a", "b", "c"), urls, ways))
        clients = [a, b, cc]
        {"ko_ninja": ko_ninja, "sails": sails}[scenario](checks, coll, a, b, cc)
    except Exception as e:  # noqa: BLE001 - any error is a failed run, reported in full
        checks.check(False, f"{type(e).__name__}: {e}")
    finally:
        for cl in clients:
            try:
                cl.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
    print(json.dumps({"ok": not checks.failures, "checks": checks.count, "failures": checks.failures}))
    return 0 if not checks.failures else 1


if __name__ == "__main__":
    sys.exit(main())
