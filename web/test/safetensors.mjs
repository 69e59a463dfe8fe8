// A minimal safetensors reader for the tests (F32 tensors only): name -> {shape, data}.
export function readSafetensors(bytes) {
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + n)));
  const base = 8 + n;
  const out = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    if (t.dtype !== "F32") throw new Error(`${name}: dtype ${t.dtype}, the test reader knows F32`);
    const [begin, end] = t.data_offsets;
    const copy = new Uint8Array(buf.subarray(base + begin, base + end)); // a copy (Buffer.slice would be a view)
    out.set(name, { shape: t.shape, data: new Float32Array(copy.buffer) });
  }
  return out;
}
