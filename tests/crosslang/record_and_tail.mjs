// A cruise client in another language, written only from the contract (sections 4 and 5).
//
//   node record_and_tail.mjs ADDR_CLIENT ADDR_PUBLISH N
//
// Subscribes to ADDR_PUBLISH first, records N values {"js": i} over a REQ socket to ADDR_CLIENT
// (with "client" and "seq", so a retry is applied at most once), then reads them back from the
// SUB stream and with an "entries" request. Prints one JSON summary line on stdout.
// Exit codes: 0 all good; 1 a mismatch or an error reply; 2 bad usage; 3 the deadline passed
// (CRUISE_DEADLINE_MS, default 30000).

import { randomBytes } from "node:crypto";
import { decode, encode } from "@msgpack/msgpack";
import { Request, Subscriber } from "zeromq";

const DEADLINE_MS = Number(process.env.CRUISE_DEADLINE_MS ?? 30000);
const ATTEMPT_MS = 3000; // one request attempt; then a fresh REQ socket (Lazy Pirate)

const [addrClient, addrPublish, nText] = process.argv.slice(2);
const n = Number(nText);
if (!addrClient || !addrPublish || !Number.isInteger(n) || n < 1) {
  console.error("usage: node record_and_tail.mjs ADDR_CLIENT ADDR_PUBLISH N");
  process.exit(2);
}

const started = Date.now();
const clientId = `js-${randomBytes(8).toString("hex")}`;
let seq = 0;
let req = null;
const sub = new Subscriber({ linger: 0 });
const live = new Map(); // index -> entry, from the SUB stream
let liveError = null;

function finish(code, summary) {
  console.log(JSON.stringify({ ...summary, elapsed_ms: Date.now() - started }));
  try {
    sub.close();
    if (req) req.close();
  } catch {}
  process.exit(code);
}

function fail(error, extra = {}) {
  finish(1, { ok: false, error, ...extra });
}

const watchdog = setTimeout(
  () => finish(3, { ok: false, error: `deadline of ${DEADLINE_MS} ms passed`, live_seen: live.size }),
  DEADLINE_MS,
);

function freshReq() {
  if (req) req.close();
  req = new Request({ linger: 0, receiveTimeout: ATTEMPT_MS });
  req.connect(addrClient);
}

// One request with retries on a timeout (new socket) or an "unavailable" answer (same message:
// a record keeps its client and seq).
async function call(message) {
  const frame = encode(message);
  for (;;) {
    if (!req) freshReq();
    let reply;
    try {
      await req.send(frame);
      const [body] = await req.receive();
      reply = decode(body);
    } catch (e) {
      if (e.code === "EAGAIN") {
        freshReq(); // the REQ socket is stuck waiting for a reply: replace it
        continue;
      }
      throw e;
    }
    if (reply === null || typeof reply !== "object" || typeof reply.ok !== "boolean") {
      fail("malformed reply", { reply });
    }
    if (reply.ok) return reply;
    if (reply.error === "unavailable") {
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    fail(`error reply: ${reply.error}: ${reply.message}`, { request: message.op });
  }
}

function record(value) {
  seq += 1;
  return call({ op: "record", value, client: clientId, seq });
}

async function readLive() {
  try {
    for await (const frames of sub) {
      if (frames.length !== 2 || frames[0].toString() !== "entry") {
        liveError = `unexpected message of ${frames.length} frames`;
        return;
      }
      const entry = decode(frames[1]);
      for (const k of ["index", "term", "kind"]) {
        if (!(k in entry)) {
          liveError = `published entry without ${k}`;
          return;
        }
      }
      live.set(entry.index, entry);
    }
  } catch (e) {
    if (!sub.closed) liveError = String(e);
  }
}

async function waitFor(pred) {
  while (!pred()) {
    if (liveError) fail(`subscriber: ${liveError}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const sameEntry = (a, b) =>
  a && b && a.index === b.index && a.term === b.term && a.kind === b.kind && same(a.value, b.value);

async function main() {
  // Subscribe first (the clone pattern), then make sure the subscription is live: record probes
  // until one comes back on the stream (a SUB misses what is published before it has joined).
  sub.connect(addrPublish);
  sub.subscribe("entry");
  readLive();
  let probes = 0;
  let probeIndex = 0;
  for (;;) {
    probes += 1;
    const r = await record({ js_probe: probes });
    const until = Date.now() + 300;
    await waitFor(() => live.has(r.index) || Date.now() > until);
    if (live.has(r.index)) {
      probeIndex = r.index;
      break;
    }
  }

  const indexes = [];
  for (let i = 0; i < n; i++) {
    const r = await record({ js: i });
    if (!Number.isInteger(r.index) || !Number.isInteger(r.term)) fail("record reply without index/term", { r });
    if (indexes.length && r.index <= indexes[indexes.length - 1]) {
      fail("record indexes not increasing", { indexes, next: r.index });
    }
    indexes.push(r.index);
  }
  const last = indexes[indexes.length - 1];

  // Every entry after the probe must arrive live, with no gap (indexes are contiguous).
  await waitFor(() => [...Array(last - probeIndex).keys()].every((k) => live.has(probeIndex + 1 + k)));
  for (let i = 0; i < n; i++) {
    const e = live.get(indexes[i]);
    if (e.kind !== "record" || !same(e.value, { js: i })) {
      fail("live entry mismatch", { index: indexes[i], got: e, want: { js: i } });
    }
  }

  // The same entries through the "entries" request (contract section 4).
  const got = [];
  while (got.length < last - indexes[0] + 1) {
    const from = indexes[0] + got.length;
    const r = await call({ op: "entries", from, limit: 1000 });
    if (!Array.isArray(r.entries) || r.entries.length === 0) fail("entries came back short", { from });
    got.push(...r.entries);
  }
  for (let i = 0; i < n; i++) {
    const e = got[indexes[i] - indexes[0]];
    if (e.index !== indexes[i] || !same(e.value, { js: i }) || !sameEntry(e, live.get(e.index))) {
      fail("entries mismatch", { index: indexes[i], got: e, live: live.get(indexes[i]) });
    }
  }

  clearTimeout(watchdog);
  finish(0, {
    ok: true,
    recorded: n,
    first: indexes[0],
    last,
    probes,
    live_seen: live.size,
    client: clientId,
  });
}

main().catch((e) => fail(`exception: ${e && e.stack ? e.stack.split("\n")[0] : e}`));
