"""Connection auth as python-socketio sends it (`auth={"token": ...}`).

Usage: auth_client.py URL GOOD_TOKEN BAD_TOKEN BAD_CODE ROOM

With GOOD_TOKEN the client connects to /pubsub, joins ROOM (granted) and publishes to it, and
gets its own message back; joining `user:someone-else` is refused with code `forbidden`. With
BAD_TOKEN the connection is refused, and the connect_error message starts with `BAD_CODE:`. Prints
one JSON line `{ok, checks, failures}`; exits 1 when a check failed.
"""

import json
import sys
import threading

import socketio

from checks import Checks

TIMEOUT_S = 10




def good(checks, url, token, room):
    sio = socketio.Client(reconnection=False)
    got = []
    arrived = threading.Event()

    @sio.on("msg", namespace="/pubsub")
    def on_msg(m):
        got.append(m)
        arrived.set()

    sio.connect(url, transports=["websocket"], namespaces=["/pubsub"], auth={"token": token}, wait_timeout=TIMEOUT_S)
    try:
        ack = sio.call("join", room, namespace="/pubsub", timeout=TIMEOUT_S)
        checks.check(ack == {"ok": True}, f"join {room}: {ack}")
        ack = sio.call("join", "user:someone-else", namespace="/pubsub", timeout=TIMEOUT_S)
        checks.check(
            isinstance(ack, dict) and ack.get("ok") is False and ack.get("code") == "forbidden",
            f"join user:someone-else must be forbidden: {ack}",
        )
        ack = sio.call("publish", {"room": room, "data": "from python"}, namespace="/pubsub", timeout=TIMEOUT_S)
        checks.check(ack == {"ok": True}, f"publish: {ack}")
        checks.check(arrived.wait(TIMEOUT_S), "own publish not received")
        checks.check(got[:1] == [{"room": room, "data": "from python"}], f"received: {got}")
    finally:
        sio.disconnect()


def bad(checks, url, token, code):
    sio = socketio.Client(reconnection=False)
    errors = []

    # python-socketio hands the namespace's connect_error data ({message}) to this handler;
    # the exception connect() raises only says that a namespace failed.
    @sio.on("connect_error", namespace="/pubsub")
    def on_connect_error(data=None):
        errors.append(data)

    try:
        sio.connect(url, transports=["websocket"], namespaces=["/pubsub"], auth={"token": token}, wait_timeout=TIMEOUT_S)
    except socketio.exceptions.ConnectionError:
        message = errors[0].get("message", "") if errors and isinstance(errors[0], dict) else str(errors)
        checks.check(message.startswith(f"{code}:"), f"refusal message must start with {code}: got {errors}")
        return
    finally:
        try:
            sio.disconnect()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
    checks.check(False, "a bad token connected")


def main():
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    url, good_token, bad_token, bad_code, room = sys.argv[1:]
    checks = Checks()
    try:
        good(checks, url, good_token, room)
        bad(checks, url, bad_token, bad_code)
    except Exception as e:  # noqa: BLE001 - any error is a failed run, reported in full
        checks.check(False, f"{type(e).__name__}: {e}")
    print(json.dumps({"ok": not checks.failures, "checks": checks.count, "failures": checks.failures}))
    return 0 if not checks.failures else 1


if __name__ == "__main__":
    sys.exit(main())
