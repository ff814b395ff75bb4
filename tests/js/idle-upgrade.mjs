// Idle memory of official socket.io-client connections as browsers open them (long-polling
// first, then the upgrade to WebSocket): holds N of them on /pubsub and prints the server's
// RSS before and with all held. usage: node idle-upgrade.mjs URL SERVER_PID N [header-bytes]
import { io } from "socket.io-client";
import { readFileSync } from "node:fs";

const [url, pid, n, extra] = [process.argv[2], process.argv[3], Number(process.argv[4]), Number(process.argv[5] || 0)];
if (!url || !pid || !(n > 0)) {
  console.error("usage: node idle-upgrade.mjs URL SERVER_PID N [header-bytes]");
  process.exit(2);
}
const rss = () => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]);
const before = rss();
const sockets = [];
let upgraded = 0;
const filler = "x".repeat(extra);
for (let i = 0; i < n; i++) {
  const s = io(url + "/pubsub", {
    reconnection: false,
    extraHeaders: extra ? { "x-filler": filler } : {},
  });
  s.io.engine.on("upgrade", () => upgraded++);
  sockets.push(s);
  if (i % 50 === 49) await new Promise((r) => setTimeout(r, 25));
}
const t0 = Date.now();
while (upgraded < n && Date.now() - t0 < 60000) await new Promise((r) => setTimeout(r, 200));
await new Promise((r) => setTimeout(r, 3000));
const held = rss();
console.log(JSON.stringify({ n, upgraded, before_kb: before, held_kb: held, kb_per_connection: (held - before) / n }));
for (const s of sockets) s.close();
process.exit(0);
