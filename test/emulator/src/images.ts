// Images in prompts (vision), as both providers take them: what the bytes are and how large, read
// from their header (image-size), and the prompt tokens each provider bills for an image of a size.
import { crc32 } from 'node:zlib';
import { imageSize } from 'image-size';

/** The image types both providers take. */
export const IMAGE_MEDIA_TYPES = ['image/jpeg', 'image/png', 'image/gif', 'image/webp'] as const;
export type ImageMediaType = (typeof IMAGE_MEDIA_TYPES)[number];

/** OpenAI's `image_url.detail`: `low` bills a fixed 85 tokens, `high` and `auto` by the tiles the image covers. */
export const IMAGE_DETAILS = ['auto', 'low', 'high'] as const;
export type ImageDetail = (typeof IMAGE_DETAILS)[number];

export interface ImageSize {
  width: number;
  height: number;
}

/**
 * What the emulator takes an image behind an http(s) URL to be: it has no network, so it never
 * downloads one, and bills it as a 512×512 image (one tile for OpenAI, 350 tokens for Anthropic).
 */
export const URL_IMAGE_SIZE: ImageSize = { width: 512, height: 512 };

/**
 * Whether the provider would fail to download `url`: not an http(s) URL, or a host under `.invalid`
 * (a name that never resolves, RFC 2606) — how a test asks for the provider's download failure.
 */
export function undownloadable(url: string): boolean {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return true;
  }
  return (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || parsed.hostname.endsWith('.invalid');
}

/** image-size's names of the four types. */
const MEDIA_TYPE_OF: Record<string, ImageMediaType> = { png: 'image/png', jpg: 'image/jpeg', gif: 'image/gif', webp: 'image/webp' };

/**
 * The type and size of base64-encoded image bytes, from their header; `mediaType` is undefined for
 * an image of another type (BMP, TIFF …). Undefined when the text is not base64 or the bytes are no
 * image image-size knows. Strict about the alphabet: Buffer.from alone would skip bad characters.
 */
export function sniffImage(base64: string): (ImageSize & { mediaType: ImageMediaType | undefined }) | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64) || base64.length % 4 === 1) return undefined;
  try {
    const { width, height, type } = imageSize(Buffer.from(base64, 'base64'));
    if (!(width >= 1 && height >= 1)) return undefined;
    return { width, height, mediaType: type === undefined ? undefined : MEDIA_TYPE_OF[type] };
  } catch {
    return undefined; // image-size throws on bytes it cannot read
  }
}

/**
 * `size` scaled down so that `side` (one of its measures) becomes `limit`, keeping the aspect;
 * unchanged when `side` is within it. Fractions of a pixel are dropped, as the providers' resizers
 * do; multiplying before dividing keeps the side that is scaled to the limit exact.
 */
function scaledDown({ width, height }: ImageSize, side: number, limit: number): ImageSize {
  if (side <= limit) return { width, height };
  return { width: Math.max(1, Math.floor((width * limit) / side)), height: Math.max(1, Math.floor((height * limit) / side)) };
}

/**
 * The prompt tokens OpenAI bills for an image (GPT-4o-class models): `low` 85; `high` and `auto`
 * scale it to fit within 2048×2048, then so that its shortest side is at most 768 (only ever
 * down), and bill 85 + 170 per 512×512 tile it covers.
 */
export function openAiImageTokens(size: ImageSize, detail: ImageDetail): number {
  if (detail === 'low') return 85;
  const fitted = scaledDown(size, Math.max(size.width, size.height), 2048);
  const { width, height } = scaledDown(fitted, Math.min(fitted.width, fitted.height), 768);
  return 85 + 170 * Math.ceil(width / 512) * Math.ceil(height / 512);
}

/** Anthropic's largest image: beyond it, an image is scaled down before the model sees it (and is billed). */
const ANTHROPIC_LONG_EDGE = 1568;
const ANTHROPIC_MAX_PIXELS = 1_150_000;

/**
 * The prompt tokens Anthropic bills for an image: scaled down so that its long edge is at most
 * 1568 px and then, if still larger, to at most 1.15 megapixels (keeping the aspect);
 * ceil(width × height / 750).
 */
export function anthropicImageTokens(size: ImageSize): number {
  let { width, height } = scaledDown(size, Math.max(size.width, size.height), ANTHROPIC_LONG_EDGE);
  ({ width, height } = scaledDown({ width, height }, Math.sqrt(width * height), Math.sqrt(ANTHROPIC_MAX_PIXELS)));
  return Math.ceil((width * height) / 750);
}

/**
 * The smallest bytes image-size (and so the emulator) reads as an image of this type and size: a
 * header without pixels, for tests that pass images along. A real provider would refuse them.
 */
export function minimalImage(mediaType: ImageMediaType, width: number, height: number): Buffer {
  const be = (n: number, bytes: number) => Buffer.from(Array.from({ length: bytes }, (_, i) => (n >>> (8 * (bytes - 1 - i))) & 0xff));
  const le = (n: number, bytes: number) => Buffer.from(be(n, bytes).reverse());
  switch (mediaType) {
    case 'image/png': {
      const chunk = (type: string, data: Buffer) => {
        const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
        return Buffer.concat([be(data.length, 4), body, be(crc32(body), 4)]);
      };
      // Signature, IHDR (8-bit RGB), IEND.
      const ihdr = Buffer.concat([be(width, 4), be(height, 4), Buffer.from([8, 2, 0, 0, 0])]);
      return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IEND', Buffer.alloc(0))]);
    }
    case 'image/jpeg':
      // SOI, a JFIF APP0 segment, a baseline SOF0 frame header (3 components), EOI.
      return Buffer.concat([
        Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10]),
        Buffer.from('JFIF\0', 'latin1'),
        Buffer.from([1, 1, 0, 0, 1, 0, 1, 0, 0]),
        Buffer.from([0xff, 0xc0, 0x00, 0x11, 8]),
        be(height, 2),
        be(width, 2),
        Buffer.from([3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0, 0xff, 0xd9]),
      ]);
    case 'image/gif':
      // Header, logical screen descriptor (no colour table), trailer.
      return Buffer.concat([Buffer.from('GIF89a', 'latin1'), le(width, 2), le(height, 2), Buffer.from([0, 0, 0, 0x3b])]);
    case 'image/webp':
      // RIFF container with an extended (VP8X) header: its size in 24-bit "minus one" fields.
      return Buffer.concat([Buffer.from('RIFF', 'latin1'), le(22, 4), Buffer.from('WEBPVP8X', 'latin1'), le(10, 4), Buffer.alloc(4), le(width - 1, 3), le(height - 1, 3)]);
  }
}
