// libdedup real-programs test: Node.js holding many identical Buffers.
// Usage: node dup_buffers.js COPIES MIB HOLD_SECONDS
// Same protocol as DupBuffers.java: fill, copy, hold, write into every 8th
// copy (copy-on-write of merged pages), hold, verify every byte, checksum.
'use strict';
const crypto = require('crypto');
const [copies, mib, holdS] = process.argv.slice(2).map(Number);
const size = mib << 20;

const src = Buffer.alloc(size);
let x = 0x9e3779b9 | 0;
for (let i = 0; i < size; i++) {         // xorshift32: no zero pages
  x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
  src[i] = x & 0xff;
}
const bufs = [];
for (let c = 0; c < copies; c++) bufs.push(Buffer.from(src));   // a real copy

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  await sleep(holdS * 500);
  for (let c = 0; c < copies; c += 8)
    for (let off = 0; off < size; off += 4096) bufs[c][off] ^= (c + 1) & 0xff;
  await sleep(holdS * 500);

  let bad = 0;
  const h = crypto.createHash('sha256');
  for (let c = 0; c < copies; c++) {
    const b = bufs[c];
    if (c % 8 === 0) {
      for (let i = 0; i < size; i++) {
        let want = src[i];
        if (i % 4096 === 0) want ^= (c + 1) & 0xff;
        if (b[i] !== want) { bad++; if (bad <= 5) console.log(`MISMATCH copy ${c} offset ${i}`); }
      }
    } else if (!b.equals(src)) {
      for (let i = 0; i < size; i++)
        if (b[i] !== src[i]) { bad++; if (bad <= 5) console.log(`MISMATCH copy ${c} offset ${i}`); }
    }
    h.update(b);
  }
  console.log(`node: copies=${copies} mib=${mib} mismatches=${bad} sha256=${h.digest('hex')}`);
  process.exitCode = bad === 0 ? 0 : 1;
})();
