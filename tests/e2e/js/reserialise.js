// Reads a JSON array of raw gateway text frames (file argv[2]) and writes, for each, what a
// JavaScript client holds after JSON.parse: the whole value re-serialised, and the epoch and
// times as the client would use them (as given, and through BigInt for the times).
"use strict";
const fs = require("fs");

const frames = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const out = frames.map((frame) => {
  const value = JSON.parse(frame);
  const times = {};
  for (const key of ["epoch", "receive_time", "exchange_time"]) {
    if (key in value) {
      times[key] = { type: typeof value[key], text: String(value[key]) };
      if (key !== "epoch") times[key].bigint = BigInt(value[key]).toString();
    }
  }
  return { reserialised: JSON.stringify(value), times };
});
process.stdout.write(JSON.stringify(out));
