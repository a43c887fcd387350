// The post-processing steps of design-render done with libvips (sharp), as the spec's
// TypeScript worker would do them: blend the provider's image over the base through a feathered
// mask, resample to the high-res and preview sizes, derive normal and roughness maps, encode PNG.
// Shared by the post-processing comparison (bench.js) and the Node queue worker (worker.mjs).
'use strict';
const sharp = require('sharp');

sharp.concurrency(require('node:os').availableParallelism());
sharp.cache(false);

const raw = (width, height, channels) => ({ raw: { width, height, channels } });

/** Decodes an encoded image to raw 8-bit samples: RGBA, or one grey channel. */
async function decode(input, channels) {
  const image = sharp(input);
  const pipeline = channels === 1 ? image.greyscale().extractChannel(0) : image.ensureAlpha();
  const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

/**
 * The provider's image (any size, RGBA) resized to the base and blended over it through the
 * mask (white = regenerate) feathered by a blur of about the worker's default radius.
 */
async function composite(base, generated, hole) {
  const { width, height } = base;
  const upscaled = await sharp(generated.data, raw(generated.width, generated.height, generated.channels))
    .resize(width, height, { kernel: 'lanczos3', fit: 'fill' })
    .removeAlpha()
    .raw()
    .toBuffer();
  // Two box passes of radius 4 are close to a Gaussian with sigma ~3.2.
  const feathered = await sharp(hole.data, raw(hole.width, hole.height, 1))
    .resize(width, height, { fit: 'fill' })
    .blur(3.2)
    .raw()
    .toBuffer();
  const overlay = await sharp(upscaled, raw(width, height, 3))
    .joinChannel(feathered, raw(width, height, 1))
    .raw()
    .toBuffer();
  const data = await sharp(base.data, raw(width, height, 4))
    .composite([{ input: overlay, ...raw(width, height, 4) }])
    .raw()
    .toBuffer();
  return { data, width, height, channels: 4 };
}

/** An RGBA image resampled with Lanczos-3. */
async function resize(image, width, height) {
  const data = await sharp(image.data, raw(image.width, image.height, 4))
    .resize(width, height, { kernel: 'lanczos3', fit: 'fill' })
    .raw()
    .toBuffer();
  return { data, width, height, channels: 4 };
}

async function slopes(image) {
  const luma = sharp(image.data, raw(image.width, image.height, 4)).removeAlpha().greyscale();
  const kernel = (k) => ({ width: 3, height: 3, kernel: k, scale: 8, offset: 128 });
  const [dx, dy] = await Promise.all([
    luma.clone().convolve(kernel([-1, 0, 1, -2, 0, 2, -1, 0, 1])).raw().toBuffer(),
    luma.clone().convolve(kernel([-1, -2, -1, 0, 0, 0, 1, 2, 1])).raw().toBuffer(),
  ]);
  return { dx, dy };
}

// libvips has no per-pixel vector normalisation, so that part is plain JavaScript, as it
// would be in the TypeScript worker.
async function normalMap(image, strength = 2) {
  const { dx, dy } = await slopes(image);
  const pixels = image.width * image.height;
  const out = Buffer.allocUnsafe(pixels * 3);
  for (let i = 0; i < pixels; i++) {
    const nx = (-(dx[i] - 128) / 255) * strength;
    const ny = ((dy[i] - 128) / 255) * strength;
    const inv = 1 / Math.sqrt(nx * nx + ny * ny + 1);
    out[3 * i] = Math.round((nx * inv * 0.5 + 0.5) * 255);
    out[3 * i + 1] = Math.round((ny * inv * 0.5 + 0.5) * 255);
    out[3 * i + 2] = Math.round((inv * 0.5 + 0.5) * 255);
  }
  return { data: out, width: image.width, height: image.height, channels: 3 };
}

async function roughnessMap(image) {
  const luma = await sharp(image.data, raw(image.width, image.height, 4)).removeAlpha().greyscale().raw().toBuffer();
  const { dx, dy } = await slopes(image);
  const pixels = image.width * image.height;
  const out = Buffer.allocUnsafe(pixels);
  for (let i = 0; i < pixels; i++) {
    const gx = (dx[i] - 128) / 255;
    const gy = (dy[i] - 128) / 255;
    const detail = Math.min(1, Math.sqrt(gx * gx + gy * gy) * 4);
    out[i] = Math.round((0.25 + 0.5 * (1 - luma[i] / 255) + 0.25 * detail) * 255);
  }
  return { data: out, width: image.width, height: image.height, channels: 1 };
}

/** PNG with sharp's defaults (zlib level 6, no adaptive filtering), unless `options` says otherwise. */
const png = (image, options = {}) =>
  sharp(image.data, raw(image.width, image.height, image.channels)).png(options).toBuffer();

module.exports = { decode, composite, resize, normalMap, roughnessMap, png, raw };
