"""Session recovery from python-socketio's AsyncClient with clients/python/ioscale_recovery.

Joins a /pubsub room through URL, prints {"ready": public_id} once in, then collects the `msg`
events ({p, seq} in their data) until it has EXPECTED distinct ones or LIMIT seconds passed, and
prints {"report": ...}: received, missing, duplicated and reordered messages per publisher, and
every ioscale:recovery verdict. AsyncClient, because python-socketio's threaded Client may run
the handlers of consecutive events out of order.

Usage: recovery_client.py URL ROOM EXPECTED LIMIT_S
"""

import asyncio
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "clients" / "python"))

import socketio  # noqa: E402
from ioscale_recovery import enable_recovery  # noqa: E402

NS = "/pubsub"


def account(got):
    """Missing, duplicated and reordered messages, per publisher (seq counts from 0)."""
    report = {"received": len(got), "missing": 0, "duplicates": 0, "reordered": 0}
    for p in sorted({d["p"] for d in got}):
        seen, last = set(), -1
        for seq in (d["seq"] for d in got if d["p"] == p):
            if seq in seen:
                report["duplicates"] += 1
            elif seq < last:
                report["reordered"] += 1
            seen.add(seq)
            last = max(last, seq)
        report["missing"] += (max(seen) + 1) - len(seen)
    return report


async def main(url, room, expected, limit_s):
    sio = enable_recovery(
        socketio.AsyncClient(reconnection_delay=0.1, reconnection_delay_max=0.5)
    )
    got, verdicts, first = [], [], asyncio.Event()

    @sio.on("ioscale:recovery", namespace=NS)
    async def verdict(info):
        verdicts.append(info)
        first.set()

    @sio.on("msg", namespace=NS)
    async def msg(m):
        got.append(m["data"])

    await sio.connect(url, namespaces=[NS], transports=["websocket"], wait_timeout=10)
    await asyncio.wait_for(first.wait(), 10)
    joined = await sio.call("join", room, namespace=NS, timeout=10)
    if not joined.get("ok"):
        raise RuntimeError(f"join refused: {joined}")
    print(json.dumps({"ready": verdicts[0]["id"]}), flush=True)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and len({(d["p"], d["seq"]) for d in got}) < expected:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # late duplicates, if any, arrive too
    report = account(got)
    report["expected"] = expected
    report["verdicts"] = verdicts
    print(json.dumps({"report": report}), flush=True)
    await sio.disconnect()


if __name__ == "__main__":
    url, room, expected, limit = sys.argv[1:5]
    asyncio.run(main(url, room, int(expected), float(limit)))
