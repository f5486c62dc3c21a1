// Vectors of 32-bit floats as little-endian bytes: what OpenAI's base64 embeddings hold, what the
// response cache stores, and what Embed sends with `vectors_as_bytes`. One copy on a little-endian
// host (every host Node.js ships for but s390x and ppc64 big-endian), a loop on any other.
import os from 'node:os';

const LITTLE_ENDIAN = os.endianness() === 'LE';

/** The vector's bytes, little-endian: a view of its own memory on a little-endian host (not a copy). */
export function f32leBytes(vector: Float32Array): Buffer {
  if (LITTLE_ENDIAN) return Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength);
  const out = Buffer.allocUnsafe(vector.length * 4);
  for (let i = 0; i < vector.length; i += 1) out.writeFloatLE(vector[i]!, i * 4);
  return out;
}

/** The floats of little-endian bytes (a multiple of 4 long, at any offset), copied into a vector of their own. */
export function f32leFloats(bytes: Uint8Array): Float32Array {
  if (bytes.length % 4 !== 0) throw new RangeError(`${bytes.length} bytes are not whole 32-bit floats`);
  const out = new Float32Array(bytes.length / 4);
  if (LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < out.length; i += 1) out[i] = view.getFloat32(i * 4, true);
  return out;
}
