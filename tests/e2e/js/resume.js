// A JavaScript subscriber that resumes: connect, read records of one stream, disconnect,
// reconnect with a resume built from the JSON.parse'd epoch and seq, and report what the gateway
// answered. Uses the WebSocket of Node itself (Node 20: --experimental-websocket).
// Usage: node resume.js ws://127.0.0.1:PORT STREAM
"use strict";

const [base, stream] = process.argv.slice(2);

function connect(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const queue = [];
    let wake = null;
    let closed = null;
    ws.onmessage = (event) => {
      queue.push(JSON.parse(event.data));
      if (wake) wake();
    };
    ws.onclose = (event) => {
      closed = event.code;
      if (wake) wake();
    };
    ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
    ws.onopen = () =>
      resolve({
        ws,
        async next() {
          while (queue.length === 0) {
            if (closed !== null) throw new Error(`connection closed (${closed})`);
            await new Promise((r) => (wake = r));
            wake = null;
          }
          return queue.shift();
        },
        send(request) {
          ws.send(JSON.stringify(request));
        },
      });
  });
}

async function resumeWith(epoch, seq) {
  const c = await connect(`${base}/v1/stream`);
  const hello = await c.next();
  c.send({ op: "subscribe", id: 2, streams: [stream], resume: { [stream]: { epoch, seq } } });
  let answer = null;
  let next = null;
  while (next === null) {
    const m = await c.next();
    if (m.type === "resumed" || m.type === "resume_failed") answer = m;
    else if (answer !== null && m.stream === stream && "seq" in m) next = m;
  }
  c.ws.close();
  return { hello_epoch: hello.epoch, answer, next: { type: next.type, seq: next.seq, epoch: next.epoch } };
}

async function main() {
  const first = await connect(`${base}/v1/stream`);
  const hello = await first.next();
  first.send({ op: "subscribe", id: 1, streams: [stream] });
  const records = [];
  while (records.length < 5) {
    const m = await first.next();
    if (m.stream === stream && "seq" in m) records.push(m);
  }
  first.ws.close();
  const last = records[records.length - 1];
  const resumed = await resumeWith(last.epoch, last.seq);
  // What a protocol-1 client did: the epoch as a JavaScript number.
  const asNumber = Number(last.epoch);
  const legacy = await resumeWith(asNumber, last.seq);
  process.stdout.write(
    JSON.stringify({
      hello_epoch: hello.epoch,
      epoch_type: typeof last.epoch,
      last: { epoch: last.epoch, seq: last.seq },
      resumed,
      legacy: { ...legacy, number_is_exact: BigInt(asNumber) === BigInt(last.epoch) },
    })
  );
  process.exit(0);
}

main().catch((error) => {
  process.stderr.write(`resume.js: ${error.stack || error}\n`);
  process.exit(1);
});
