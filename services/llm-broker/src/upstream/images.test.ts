import { anthropicImageTokens, ANTHROPIC_MAX_IMAGE_TOKENS, dataUrlOf, imagesTokens, OPENAI_MAX_IMAGE_TOKENS, openAiImageTokens, pixelsOf } from './images';

/** A PNG's signature and IHDR chunk: what a reader of its size looks at. */
function png(width: number, height: number): string {
  const b = Buffer.alloc(33);
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(b, 0);
  b.writeUInt32BE(13, 8);
  b.write('IHDR', 12, 'ascii');
  b.writeUInt32BE(width, 16);
  b.writeUInt32BE(height, 20);
  b.set([8, 6, 0, 0, 0], 24);
  return `data:image/png;base64,${b.toString('base64')}`;
}

/** A GIF's header: its logical screen's width and height, little-endian. */
function gif(width: number, height: number): string {
  const b = Buffer.alloc(13);
  b.write('GIF89a', 0, 'ascii');
  b.writeUInt16LE(width, 6);
  b.writeUInt16LE(height, 8);
  return `data:image/gif;base64,${b.toString('base64')}`;
}

describe('images', () => {
  it('takes a data: URL of an image type both providers take apart; any other URL is none', () => {
    expect(dataUrlOf('data:image/jpeg;base64,AAAA')).toEqual({ mediaType: 'image/jpeg', data: 'AAAA' });
    expect(dataUrlOf('data:image/svg+xml;base64,AAAA')).toBeUndefined();
    expect(dataUrlOf('https://example.com/cat.png')).toBeUndefined();
  });

  it('reads the size from the header of the bytes; none for bytes that are no image, or a URL it would have to download', () => {
    expect(pixelsOf(png(640, 480))).toEqual({ width: 640, height: 480 });
    expect(pixelsOf(gif(30, 20))).toEqual({ width: 30, height: 20 });
    expect(pixelsOf(`data:image/png;base64,${Buffer.from('not an image').toString('base64')}`)).toBeUndefined();
    expect(pixelsOf('https://example.com/cat.png')).toBeUndefined();
  });

  it('prices an image as OpenAI bills it: 85 at low detail, else 85 + 170 per 512-pixel tile after fitting 2048 and a shortest side of 768', () => {
    expect(openAiImageTokens({ imageUrl: png(4000, 3000), imageDetail: 'low' })).toBe(85);
    expect(openAiImageTokens({ imageUrl: png(100, 100) })).toBe(85 + 170);
    // 1024 × 1024 → shortest side 768: 768 × 768, 2 × 2 tiles.
    expect(openAiImageTokens({ imageUrl: png(1024, 1024), imageDetail: 'high' })).toBe(85 + 170 * 4);
    // 2048 × 4096 → 1024 × 2048 → 768 × 1536: 2 × 3 tiles.
    expect(openAiImageTokens({ imageUrl: png(2048, 4096) })).toBe(85 + 170 * 6);
    // A size the broker cannot know is reserved at the most an image costs (768 × 2048: 2 × 4 tiles).
    expect(openAiImageTokens({ imageUrl: 'https://example.com/cat.png' })).toBe(OPENAI_MAX_IMAGE_TOKENS);
    expect(OPENAI_MAX_IMAGE_TOKENS).toBe(85 + 170 * 8);
  });

  it('prices an image as Anthropic bills it: its pixels / 750, after the long edge to 1568 and the whole to 1.15 megapixels', () => {
    expect(anthropicImageTokens({ imageUrl: png(1000, 1000) })).toBe(Math.ceil(1_000_000 / 750));
    expect(anthropicImageTokens({ imageUrl: png(200, 150) })).toBe(40);
    // 3000 × 1500 → 1568 × 784 = 1,229,312 pixels, over 1.15 M: scaled by √(1.15 M / 1,229,312).
    const s = Math.sqrt(1_150_000 / (1568 * 784));
    expect(anthropicImageTokens({ imageUrl: png(3000, 1500) })).toBe(Math.ceil((Math.floor(1568 * s) * Math.floor(784 * s)) / 750));
    expect(anthropicImageTokens({ imageUrl: png(3000, 1500) })).toBeLessThanOrEqual(ANTHROPIC_MAX_IMAGE_TOKENS);
    expect(anthropicImageTokens({ imageUrl: 'https://example.com/cat.png' })).toBe(ANTHROPIC_MAX_IMAGE_TOKENS);
  });

  it('adds up the images of every message, leaving text parts out', () => {
    const messages = [
      { parts: [{ imageUrl: '', imageDetail: '' }, { imageUrl: png(100, 100), imageDetail: 'low' }] },
      {},
      { parts: [{ imageUrl: png(100, 100), imageDetail: 'low' }] },
    ];
    expect(imagesTokens(messages, openAiImageTokens)).toBe(170);
  });
});
