// Consume the gateway from Node: keep every book, print trades, never miss a gap.
//
//   node --experimental-websocket consume.mjs ws://127.0.0.1:8765 [--token T] [--idle-exit S]
//
// Node 20 has a WebSocket client behind --experimental-websocket (Node 22: no flag needed);
// with the npm "ws" package, `import WebSocket from "ws"` works the same way.
//
// Epochs: the gateway's epoch is a nanosecond timestamp above 2^53, which JSON.parse would
// round. Protocol v1 sends it as a JSON number, v2 as a string of digits; either way this
// client keeps it as the exact digits (a string), compares it by equality only, and sends it
// back verbatim in resume requests. Prices and amounts are decimal strings: kept as strings
// (exact), compared with compareDecimals, never converted to floats.

const args = process.argv.slice(2);
const base = args[0] ?? "ws://127.0.0.1:8765";
const option = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const token = option("--token");
const idleExit = option("--idle-exit") ? Number(option("--idle-exit")) * 1000 : undefined;
const STREAMS = ["book.*", "trades.*"];

// -- exact helpers -------------------------------------------------------------------------

// Integers that may exceed 2^53, turned into strings of digits before JSON.parse sees them.
const BIG_FIELDS = /"(epoch|receive_time|exchange_time)":(\d+)/g;
const parse = (text) => JSON.parse(text.replace(BIG_FIELDS, '"$1":"$2"'));

// Non-negative canonical decimal strings ("19958.25", "0.00000001"): exact comparison.
function compareDecimals(a, b) {
  const [ai, af = ""] = a.split(".");
  const [bi, bf = ""] = b.split(".");
  if (ai.length !== bi.length) return ai.length - bi.length;
  if (ai !== bi) return ai < bi ? -1 : 1;
  const n = Math.max(af.length, bf.length);
  const x = af.padEnd(n, "0");
  const y = bf.padEnd(n, "0");
  return x === y ? 0 : x < y ? -1 : 1;
}

// -- per-stream state ----------------------------------------------------------------------

const streams = new Map(); // name -> {epoch, seq, expected, initialHead, resuming, bids, asks}
const stats = { records: 0, gaps: 0 };
let protocolVersion = 1;
let epoch = null;

function state(name) {
  if (!streams.has(name)) {
    streams.set(name, { epoch: null, seq: null, expected: null, initialHead: null,
                        resuming: false, bids: new Map(), asks: new Map(), book: false });
  }
  return streams.get(name);
}

function subscribeRequest() {
  // Resume every stream we hold a position of. The epoch goes back verbatim: bare digits
  // for protocol v1 (a JSON number), a string for v2.
  const resume = [];
  for (const [name, st] of streams) {
    if (st.seq === null || st.broken || (name.startsWith("book.") && !st.book)) continue;
    const e = protocolVersion >= 2 ? JSON.stringify(st.epoch) : st.epoch;
    resume.push(`${JSON.stringify(name)}:{"epoch":${e},"seq":${st.seq}}`);
    st.resuming = true;
  }
  const tail = resume.length ? `,"resume":{${resume.join(",")}}` : "";
  return `{"op":"subscribe","id":"sub","streams":${JSON.stringify(STREAMS)}${tail}}`;
}

function deliver(st, msg) {
  st.seq = msg.seq;
  st.expected = msg.seq + 1;
  stats.records += 1;
  if (msg.type === "book_snapshot") {
    st.bids = new Map(msg.bids);
    st.asks = new Map(msg.asks);
    st.book = true;
    console.log(`${msg.stream} #${msg.seq} snapshot (${msg.reason}) ${msg.bids.length} bids`);
  } else if (msg.type === "book_update") {
    const side = msg.side === "bid" ? st.bids : st.asks;
    if (msg.amount === "0") side.delete(msg.price);
    else side.set(msg.price, msg.amount);
  } else if (msg.type === "trade") {
    console.log(`${msg.stream} #${msg.seq} trade ${msg.amount} @ ${msg.price}`);
  }
}

// Returns false when the connection must be renewed to repair a stream.
function onMessage(msg) {
  switch (msg.type) {
    case "hello":
      protocolVersion = msg.version;
      if (epoch !== null && msg.epoch !== epoch) console.log(`# gateway restarted`);
      epoch = msg.epoch;
      console.log(`# hello epoch ${msg.epoch}`);
      return true;
    case "subscribed":
      for (const s of msg.streams) {
        const st = state(s.stream);
        if (st.resuming) continue;
        if (st.epoch !== s.epoch) st.seq = null;
        Object.assign(st, { epoch: s.epoch, initialHead: s.seq, expected: s.seq + 1,
                            broken: false, book: false });
      }
      return true;
    case "resumed": {
      const st = state(msg.stream);
      Object.assign(st, { resuming: false, expected: msg.from_seq, initialHead: null });
      return true;
    }
    case "resume_failed": {
      const st = state(msg.stream);
      console.error(`# resume of ${msg.stream} failed: ${msg.reason}`);
      if (st.epoch !== msg.epoch) st.seq = null;
      Object.assign(st, { resuming: false, epoch: msg.epoch, initialHead: msg.seq,
                          expected: msg.seq + 1, book: false });
      return true;
    }
    case "error":
      console.error(`# refused: ${msg.code}: ${msg.message}`);
      return true;
    case "pong": case "unsubscribed": case "streams":
      return true;
  }
  const st = state(msg.stream);
  if (st.resuming || st.broken) return true;
  if (msg.type === "book_snapshot") {
    if (st.heldStatus) deliver(st, st.heldStatus);
    st.heldStatus = null;
    st.initialHead = null;
    deliver(st, msg);
    return true;
  }
  if (st.heldStatus) return gap(st, st.heldStatus.seq);
  if (st.initialHead !== null && msg.seq <= st.initialHead) {
    if (st.seq === null || msg.seq > st.seq) deliver(st, msg); // an initial value
    return true;
  }
  st.initialHead = null;
  if (st.expected === null || msg.seq === st.expected) {
    deliver(st, msg);
  } else if (msg.seq < st.expected) {
    console.error(`# ${msg.stream}: duplicate seq ${msg.seq}, dropped`);
  } else if (msg.type === "status" && msg.stream.startsWith("book.")) {
    st.heldStatus = msg; // after a conflation the status precedes the snapshot
  } else {
    return gap(st, msg.seq);
  }
  return true;
}

function gap(st, got) {
  stats.gaps += 1;
  console.error(`# GAP in stream: expected ${st.expected}, got ${got}; resubscribing`);
  st.broken = true; // not resumed: the new connection sends a fresh snapshot
  return false;
}

// -- the connection loop -------------------------------------------------------------------

let attempt = 0;
let idleTimer = null;

function finish() {
  for (const [name, st] of [...streams].sort()) {
    if (!name.startsWith("book.") || !st.book) continue;
    const bids = [...st.bids].sort((a, b) => compareDecimals(b[0], a[0]));
    const asks = [...st.asks].sort((a, b) => compareDecimals(a[0], b[0]));
    console.log(JSON.stringify({ book: name, bids, asks }));
  }
  console.log(`# ${stats.records} records, ${stats.gaps} gaps, epoch ${epoch}`);
  process.exit(stats.gaps ? 1 : 0);
}

function armIdle() {
  if (idleExit === undefined) return;
  clearTimeout(idleTimer);
  idleTimer = setTimeout(finish, idleExit);
}

function connect() {
  const headers = token ? { Authorization: `Bearer ${token}` } : undefined;
  const ws = new WebSocket(`${base}/v1/stream`, headers ? { headers } : undefined);
  ws.onopen = () => {
    attempt = 0;
    ws.send(subscribeRequest());
  };
  ws.onmessage = (event) => {
    armIdle();
    let msg;
    try {
      msg = parse(event.data);
    } catch (err) {
      console.error(`# undecodable message: ${err}`);
      return;
    }
    if (!onMessage(msg)) ws.close(1000, "resubscribing");
  };
  ws.onclose = (event) => {
    // Exponential backoff with full jitter, between 100 ms and 10 s.
    const delay = 100 + Math.random() * Math.min(10_000, 100 * 2 ** attempt++);
    console.error(`# closed (${event.code}); reconnecting in ${Math.round(delay)} ms`);
    setTimeout(connect, delay);
  };
}

connect();
armIdle();
