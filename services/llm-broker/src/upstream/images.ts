// Images in a message's content: what each provider's wire needs of one (a data: URL taken apart
// for Anthropic's base64 source) and the prompt tokens it will be billed, for the quota's
// reservation before admission. Both providers bill by the image's size in pixels: read from the
// header of a data: URL's bytes; an https image (which the provider downloads, the broker does not)
// is reserved at the most an image can cost, and the reservation is settled with the billed usage.
import { imageSize } from 'image-size';

/** An image part's URL and detail (auto when empty), as `ContentPart` carries them. */
export interface ImageRef {
  imageUrl: string;
  imageDetail?: string;
}

/** The media types both providers take. */
export const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'] as const;

const DATA_URL = /^data:(image\/(?:png|jpeg|gif|webp));base64,/;

/** A data: URL's media type and base64 payload; undefined for any other URL. */
export function dataUrlOf(url: string): { mediaType: string; data: string } | undefined {
  const m = DATA_URL.exec(url);
  return m ? { mediaType: m[1]!, data: url.slice(m[0].length) } : undefined;
}

/** Width and height from the image's header, for a data: URL whose bytes can be read; else undefined. */
export function pixelsOf(url: string): { width: number; height: number } | undefined {
  const d = dataUrlOf(url);
  if (!d) return undefined;
  try {
    const { width, height } = imageSize(Buffer.from(d.data, 'base64'));
    return width > 0 && height > 0 ? { width, height } : undefined;
  } catch {
    return undefined; // the provider refuses it (400), which the caller hears
  }
}

/** Scales (w, h) down, never up, to fit within `maxW` × `maxH`. */
function fit(w: number, h: number, maxW: number, maxH: number): [number, number] {
  const s = Math.min(1, maxW / w, maxH / h);
  return [Math.round(w * s), Math.round(h * s)];
}

/** OpenAI's tiles: fit within 2048 × 2048, then the shortest side to 768, in 512-pixel tiles. */
const OPENAI_BASE = 85;
const OPENAI_TILE = 170;
/** The most an OpenAI image costs (768 × 2048: 2 × 4 tiles). */
export const OPENAI_MAX_IMAGE_TOKENS = OPENAI_BASE + OPENAI_TILE * 8;

/** What OpenAI bills one image (GPT-4o-class models): 85 at low detail, 85 + 170 a tile otherwise. */
export function openAiImageTokens(image: ImageRef): number {
  if (image.imageDetail === 'low') return OPENAI_BASE;
  const px = pixelsOf(image.imageUrl);
  if (!px) return OPENAI_MAX_IMAGE_TOKENS;
  let [w, h] = fit(px.width, px.height, 2048, 2048);
  const shortest = Math.min(w, h);
  if (shortest > 768) [w, h] = [Math.round((w * 768) / shortest), Math.round((h * 768) / shortest)];
  return OPENAI_BASE + OPENAI_TILE * Math.ceil(w / 512) * Math.ceil(h / 512);
}

/** Anthropic's resizing: the long edge to 1568 pixels, then the whole to 1.15 megapixels. */
const ANTHROPIC_MAX_PIXELS = 1_150_000;
/** The most an Anthropic image costs. */
export const ANTHROPIC_MAX_IMAGE_TOKENS = Math.ceil(ANTHROPIC_MAX_PIXELS / 750);

/** What Anthropic bills one image: its pixels (after resizing) / 750. */
export function anthropicImageTokens(image: ImageRef): number {
  const px = pixelsOf(image.imageUrl);
  if (!px) return ANTHROPIC_MAX_IMAGE_TOKENS;
  let [w, h] = fit(px.width, px.height, 1568, 1568);
  if (w * h > ANTHROPIC_MAX_PIXELS) {
    const s = Math.sqrt(ANTHROPIC_MAX_PIXELS / (w * h));
    [w, h] = [Math.floor(w * s), Math.floor(h * s)];
  }
  return Math.ceil((w * h) / 750);
}

/** The tokens of every image in the messages, each priced by `price`. */
export function imagesTokens(messages: { parts?: ImageRef[] }[], price: (image: ImageRef) => number): number {
  let total = 0;
  for (const m of messages) for (const p of m.parts ?? []) if (p.imageUrl) total += price(p);
  return total;
}
