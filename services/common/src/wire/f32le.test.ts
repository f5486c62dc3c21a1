import { f32leBytes, f32leFloats } from './f32le';

describe('32-bit float vectors as little-endian bytes', () => {
  it('writes each component as 4 little-endian bytes, and reads them back exactly', () => {
    const v = Float32Array.from([0.5, -1, 3e-8, 1536.25]);
    const bytes = f32leBytes(v);
    const b = Buffer.from(bytes);
    expect([0, 1, 2, 3].map((i) => b.readFloatLE(i * 4))).toEqual(Array.from(v));
    expect(f32leFloats(bytes)).toEqual(v);
  });

  it('reads bytes at an offset that is not a multiple of 4 (a field inside a message), into a vector of its own', () => {
    const message = Buffer.alloc(3 + 8);
    message.writeFloatLE(0.25, 3);
    message.writeFloatLE(-2, 7);
    const field = message.subarray(3);
    const v = f32leFloats(field);
    expect(Array.from(v)).toEqual([0.25, -2]);
    message.writeFloatLE(9, 3);
    expect(v[0]).toBe(0.25);
  });

  it('refuses bytes that are not whole floats', () => {
    expect(() => f32leFloats(new Uint8Array(6))).toThrow(/6 bytes are not whole 32-bit floats/);
  });

  it('gives the bytes of a vector that views part of a larger buffer, not of the whole buffer', () => {
    const all = Float32Array.from([1, 2, 3, 4]);
    const part = all.subarray(1, 3);
    expect(Array.from(f32leFloats(f32leBytes(part)))).toEqual([2, 3]);
  });
});
