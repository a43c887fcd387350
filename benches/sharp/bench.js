// libvips (sharp) doing the steps of benches/postprocess.rs on the same inputs, as the
// TypeScript worker of the spec would: composite, preview, normal map, roughness map, PNG.
// Inputs come from `cargo bench --bench postprocess` (target/bench-inputs/).
// Run: (cd benches/sharp && npm ci && node bench.js)
'use strict';
const path = require('node:path');
const sharp = require('sharp');

const SIDE = 2048;
const inputs = path.join(__dirname, '..', '..', 'target', 'bench-inputs');
sharp.concurrency(require('node:os').availableParallelism());
sharp.cache(false);

const raw = (width, height, channels) => ({ raw: { width, height, channels } });

async function loadRaw(file, channels) {
  const image = sharp(path.join(inputs, file));
  const pipeline = channels === 1 ? image.greyscale().extractChannel(0) : image.ensureAlpha();
  const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

async function composite(base, generated, hole) {
  const upscaled = await sharp(generated.data, raw(generated.width, generated.height, 4))
    .resize(SIDE, SIDE, { kernel: 'lanczos3' })
    .removeAlpha()
    .raw()
    .toBuffer();
  // Two box passes of radius 4 are close to a Gaussian with sigma ~3.2.
  const feathered = await sharp(hole.data, raw(SIDE, SIDE, 1)).blur(3.2).raw().toBuffer();
  const overlay = await sharp(upscaled, raw(SIDE, SIDE, 3)).joinChannel(feathered, raw(SIDE, SIDE, 1)).raw().toBuffer();
  return sharp(base.data, raw(SIDE, SIDE, 4))
    .composite([{ input: overlay, ...raw(SIDE, SIDE, 4) }])
    .raw()
    .toBuffer();
}

const preview = (composite) =>
  sharp(composite, raw(SIDE, SIDE, 4)).resize(512, 512, { kernel: 'lanczos3' }).raw().toBuffer();

async function slopes(composite) {
  const luma = sharp(composite, raw(SIDE, SIDE, 4)).removeAlpha().greyscale();
  const kernel = (k) => ({ width: 3, height: 3, kernel: k, scale: 8, offset: 128 });
  const [dx, dy] = await Promise.all([
    luma.clone().convolve(kernel([-1, 0, 1, -2, 0, 2, -1, 0, 1])).raw().toBuffer(),
    luma.clone().convolve(kernel([-1, -2, -1, 0, 0, 0, 1, 2, 1])).raw().toBuffer(),
  ]);
  return { dx, dy };
}

// libvips has no per-pixel vector normalisation, so that part is plain JavaScript, as it
// would be in the TypeScript worker.
async function normalMap(composite, strength = 2) {
  const { dx, dy } = await slopes(composite);
  const out = Buffer.allocUnsafe(SIDE * SIDE * 3);
  for (let i = 0; i < SIDE * SIDE; i++) {
    const nx = (-(dx[i] - 128) / 255) * strength;
    const ny = ((dy[i] - 128) / 255) * strength;
    const inv = 1 / Math.sqrt(nx * nx + ny * ny + 1);
    out[3 * i] = Math.round((nx * inv * 0.5 + 0.5) * 255);
    out[3 * i + 1] = Math.round((ny * inv * 0.5 + 0.5) * 255);
    out[3 * i + 2] = Math.round((inv * 0.5 + 0.5) * 255);
  }
  return out;
}

async function roughnessMap(composite) {
  const luma = await sharp(composite, raw(SIDE, SIDE, 4)).removeAlpha().greyscale().raw().toBuffer();
  const { dx, dy } = await slopes(composite);
  const out = Buffer.allocUnsafe(SIDE * SIDE);
  for (let i = 0; i < SIDE * SIDE; i++) {
    const gx = (dx[i] - 128) / 255;
    const gy = (dy[i] - 128) / 255;
    const detail = Math.min(1, Math.sqrt(gx * gx + gy * gy) * 4);
    out[i] = Math.round((0.25 + 0.5 * (1 - luma[i] / 255) + 0.25 * detail) * 255);
  }
  return out;
}

const png = (data, channels, width = SIDE, height = SIDE) =>
  sharp(data, raw(width, height, channels)).png({ compressionLevel: 2, adaptiveFiltering: true }).toBuffer();

async function allSteps(base, generated, hole) {
  const blended = await composite(base, generated, hole);
  const [small, normal, rough] = await Promise.all([preview(blended), normalMap(blended), roughnessMap(blended)]);
  const encoded = await Promise.all([png(blended, 4), png(small, 4, 512, 512), png(normal, 3), png(rough, 1)]);
  return encoded.reduce((sum, b) => sum + b.length, 0);
}

async function time(name, runs, fn) {
  await fn(); // warm-up
  const samples = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    await fn();
    samples.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  samples.sort((a, b) => a - b);
  console.log(`${name.padEnd(22)} median ${samples[Math.floor(runs / 2)].toFixed(1)} ms  (min ${samples[0].toFixed(1)}, n=${runs})`);
}

(async () => {
  const [base, generated, hole] = await Promise.all([loadRaw('base.png', 4), loadRaw('generated.png', 4), loadRaw('hole.png', 1)]);
  const blended = await composite(base, generated, hole);
  const runs = 10;
  await time('composite', runs, () => composite(base, generated, hole));
  await time('preview_512', runs, () => preview(blended));
  await time('normal_map', runs, () => normalMap(blended));
  await time('roughness_map', runs, () => roughnessMap(blended));
  await time('encode_composite_png', runs, () => png(blended, 4));
  await time('all_steps', runs, () => allSteps(base, generated, hole));
  console.log(`libvips ${sharp.versions.vips}, sharp ${sharp.versions.sharp}, threads ${sharp.concurrency()}`);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
