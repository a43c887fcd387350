// libvips (sharp) doing the post-processing of benches/postprocess.rs on the same inputs, as the
// TypeScript worker of the spec would: composite (which is also the 2048² high-res image), a
// 512² preview, normal and roughness maps at 2048², and four PNGs with sharp's default
// settings (zlib level 6, no filtering), alpha dropped from the opaque images as ours does.
// Inputs come from `design-render bench-postprocess` (target/bench-inputs/). With --json it
// also encodes design-render's outputs found there, to compare the encoders on equal pixels.
//
// Run: (cd benches/sharp && npm ci && node bench.js)          step by step, for people
//      node bench.js --json --iterations 5                    one JSON line, for
//                                                             scripts/bench-postprocess.sh
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const sharp = require('sharp');

const inputs = path.join(__dirname, '..', '..', 'target', 'bench-inputs');
const { decode, composite, resize, normalMap, roughnessMap, png, raw } = require('./pipeline.js');

const option = (name, fallback) => {
  const index = process.argv.indexOf(name);
  return index === -1 ? fallback : process.argv[index + 1];
};
const json = process.argv.includes('--json');
const iterations = Number(option('--iterations', 10));

const loadRaw = (file, channels) => decode(path.join(inputs, file), channels);
const preview = (image) => resize(image, 512, 512);
// The composite and preview are opaque: RGB, as design-render writes them.
const encodeOpaque = (image) => sharp(image.data, raw(image.width, image.height, 4)).removeAlpha().png().toBuffer();

async function allSteps(base, generated, hole) {
  const blended = await composite(base, generated, hole);
  const [small, normal, rough] = await Promise.all([preview(blended), normalMap(blended), roughnessMap(blended)]);
  const [compositePng, previewPng, normalPng, roughnessPng] = await Promise.all([
    encodeOpaque(blended),
    encodeOpaque(small),
    png(normal),
    png(rough),
  ]);
  return { composite: compositePng, preview: previewPng, normal: normalPng, roughness: roughnessPng };
}

async function samples(runs, fn) {
  await fn(); // warm-up
  const times = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return times;
}

function report(name, times) {
  const sorted = [...times].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  console.log(`${name.padEnd(22)} median ${median.toFixed(1)} ms  (min ${sorted[0].toFixed(1)}, max ${sorted[sorted.length - 1].toFixed(1)}, n=${times.length})`);
}

(async () => {
  const [base, generated, hole] = await Promise.all([loadRaw('base.png', 4), loadRaw('generated.png', 4), loadRaw('hole.png', 1)]);
  const threads = sharp.concurrency();
  if (json) {
    let outputs;
    const ms = await samples(iterations, async () => {
      outputs = await allSteps(base, generated, hole);
    });
    const bytes = {};
    // design-render's own outputs (written by `design-render bench-postprocess`) encoded by
    // sharp with its defaults: the two encoders on the very same pixels.
    const reencoded = {};
    for (const [name, buffer] of Object.entries(outputs)) {
      bytes[name] = buffer.length;
      fs.writeFileSync(path.join(inputs, `sharp-${name}.png`), buffer);
      const ours = path.join(inputs, `design-render-${name}.png`);
      if (fs.existsSync(ours)) {
        reencoded[name] = (await sharp(ours).png().toBuffer()).length;
      }
    }
    console.log(JSON.stringify({ side: 'sharp', threads, ms, bytes, reencoded }));
    return;
  }
  const blended = await composite(base, generated, hole);
  report('composite', await samples(iterations, () => composite(base, generated, hole)));
  report('preview_512', await samples(iterations, () => preview(blended)));
  report('normal_map', await samples(iterations, () => normalMap(blended)));
  report('roughness_map', await samples(iterations, () => roughnessMap(blended)));
  report('encode_composite_png', await samples(iterations, () => encodeOpaque(blended)));
  report('all_steps', await samples(iterations, () => allSteps(base, generated, hole)));
  console.log(`libvips ${sharp.versions.vips}, sharp ${sharp.versions.sharp}, threads ${threads}`);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
