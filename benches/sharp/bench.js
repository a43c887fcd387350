// libvips (sharp) doing the steps of benches/postprocess.rs on the same inputs, as the
// TypeScript worker of the spec would: composite, preview, normal map, roughness map, PNG.
// Inputs come from `cargo bench --bench postprocess` (target/bench-inputs/).
// Run: (cd benches/sharp && npm ci && node bench.js)
'use strict';
const path = require('node:path');
const sharp = require('sharp');

const inputs = path.join(__dirname, '..', '..', 'target', 'bench-inputs');
const { decode, composite, resize, normalMap, roughnessMap, png } = require('./pipeline.js');

const loadRaw = (file, channels) => decode(path.join(inputs, file), channels);
const preview = (composite) => resize(composite, 512, 512);
// The settings of our encoder, for a like-for-like time.
const encode = (image) => png(image, { compressionLevel: 2, adaptiveFiltering: true });

async function allSteps(base, generated, hole) {
  const blended = await composite(base, generated, hole);
  const [small, normal, rough] = await Promise.all([preview(blended), normalMap(blended), roughnessMap(blended)]);
  const encoded = await Promise.all([encode(blended), encode(small), encode(normal), encode(rough)]);
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
  await time('encode_composite_png', runs, () => encode(blended));
  await time('all_steps', runs, () => allSteps(base, generated, hole));
  console.log(`libvips ${sharp.versions.vips}, sharp ${sharp.versions.sharp}, threads ${sharp.concurrency()}`);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
