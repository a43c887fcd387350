// The spec's render worker in Node.js (BullMQ + sharp), the baseline of scripts/bench-queue.sh:
// per job it takes the tenant slot (the same Lua as src/tenancy), marks the Design PROCESSING,
// downloads the base and the mask, asks the OpenAI image-edit endpoint (the benchmark's loopback
// mock) with the mask turned into OpenAI's alpha mask, blends the answer over the base, writes
// the composite, the 2048² high-res, the 512² preview and the normal and roughness maps as PNG
// (sharp's default encoder settings) to local storage, records the COMPLETED row with the same
// SQL as src/store/postgres.rs, releases the slot and publishes the completed event.
//   node worker.mjs '<json {queue, prefix, concurrency, databaseUrl, schema, storageDir, openaiBaseUrl}>'
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Worker } from 'bullmq';
import IORedis from 'ioredis';
import pg from 'pg';

const require = createRequire(import.meta.url);
const sharp = require('sharp');
const { decode, composite, resize, normalMap, roughnessMap, png, raw } = require('./pipeline.js');

const spec = JSON.parse(process.argv[2]);
const connection = { host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null };

const ACQUIRE = `
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now_ms + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease * 2)
  return 1
end
return 0`;

const redis = new IORedis(connection);
redis.defineCommand('acquireSlot', { numberOfKeys: 1, lua: ACQUIRE });
// The same pool size as the Rust worker (8 connections), on the run's schema.
const db = new pg.Pool({ connectionString: spec.databaseUrl, max: 8, options: `-c search_path="${spec.schema}"` });

async function download(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
  return Buffer.from(await response.arrayBuffer());
}

// OpenAI edits only where the mask is transparent; ours is white where the image changes.
async function alphaMask(mask, width, height) {
  const alpha = await sharp(mask).resize(width, height, { fit: 'fill' }).greyscale().negate().raw().toBuffer();
  const black = Buffer.alloc(width * height * 3);
  return sharp(black, raw(width, height, 3)).joinChannel(alpha, raw(width, height, 1)).png().toBuffer();
}

async function inpaint(base, mask, prompt) {
  const form = new FormData();
  form.append('model', 'gpt-image-1.5');
  form.append('prompt', prompt);
  form.append('size', '1024x1024');
  form.append('image', new Blob([base], { type: 'image/png' }), 'image.png');
  form.append('mask', new Blob([mask], { type: 'image/png' }), 'mask.png');
  const response = await fetch(`${spec.openaiBaseUrl}/images/edits`, {
    method: 'POST',
    headers: { authorization: 'Bearer sk-bench' },
    body: form,
  });
  if (!response.ok) throw new Error(`OpenAI answered ${response.status}`);
  const body = await response.json();
  return { image: Buffer.from(body.data[0].b64_json, 'base64'), tokens: body.usage?.total_tokens ?? 0 };
}

async function render(job) {
  const { designId, tenantId, prompt, baseTextureUrl, maskUrl, renderOptions = {} } = job.data;
  if (typeof designId !== 'string' || typeof tenantId !== 'string') throw new Error('invalid payload');
  const [baseBytes, maskBytes] = await Promise.all([download(baseTextureUrl), download(maskUrl)]);
  const base = await decode(baseBytes, 4);
  const hole = await decode(maskBytes, 1);
  const provider = await inpaint(baseBytes, await alphaMask(maskBytes, base.width, base.height), prompt);
  const blended = await composite(base, await decode(provider.image, 4), hole);
  const [width, height] = (renderOptions.size ?? '2048x2048').split('x').map(Number);
  const [highRes, preview] = await Promise.all([resize(blended, width, height), resize(blended, 512, 512)]);
  const [normal, roughness] = await Promise.all([
    renderOptions.generateNormalMap ? normalMap(highRes) : null,
    renderOptions.generateRoughnessMap ? roughnessMap(highRes) : null,
  ]);
  const outputs = { composite: blended, highres: highRes, preview, normal, roughness };
  const directory = path.join(spec.storageDir, 'designs', designId);
  await mkdir(directory, { recursive: true });
  const urls = {};
  await Promise.all(
    Object.entries(outputs)
      .filter(([, image]) => image)
      .map(async ([name, image]) => {
        const file = path.join(directory, `${name}.png`);
        await writeFile(file, await png(image));
        urls[name] = `file://${file}`;
      }),
  );
  return { urls, tokens: provider.tokens };
}

const worker = new Worker(
  spec.queue,
  async (job) => {
    const { designId, tenantId } = job.data;
    const key = `${spec.prefix}:${spec.queue}:tenant-slots:${tenantId}`;
    if ((await redis.acquireSlot(key, job.id, 2, 30000)) !== 1) throw new Error('saturated');
    try {
      const processing = await db.query(
        `UPDATE "Design" SET "status" = 'PROCESSING'::"DesignStatus", "updatedAt" = $3 WHERE "id" = $1 AND "tenantId" = $2`,
        [designId, tenantId, new Date()],
      );
      if (processing.rowCount === 0) throw new Error('design not found');
      const { urls, tokens } = await render(job);
      // gpt-image-1.5 output tokens at $32 per million, in cents.
      const costCents = Math.ceil((tokens * 32) / 10000);
      const result = {
        designId, status: 'COMPLETED', compositeTextureUrl: urls.composite, previewUrl: urls.preview,
        highResUrl: urls.highres, costTokens: tokens, costCents,
      };
      await db.query(
        `UPDATE "Design" SET "status" = 'COMPLETED'::"DesignStatus", "compositeTextureUrl" = $3,
           "previewUrl" = $4, "highResUrl" = $5, "costTokens" = GREATEST("costTokens", $6),
           "costCents" = GREATEST("costCents", $7),
           "metadata" = COALESCE("metadata", '{}'::jsonb) || $8::jsonb, "updatedAt" = $9
         WHERE "id" = $1 AND "tenantId" = $2`,
        [designId, tenantId, urls.composite, urls.preview, urls.highres, tokens, costCents,
          JSON.stringify({ provider: 'openai', jobId: job.id, normalMapUrl: urls.normal, roughnessMapUrl: urls.roughness }),
          new Date()],
      );
      const event = { event: 'design.render.completed', version: 1, jobId: job.id, designId, tenantId, attemptsMade: 1, ...result, timestamp: new Date().toISOString() };
      await redis.publish(event.event, JSON.stringify(event));
      return result;
    } finally {
      await redis.zrem(key, job.id);
    }
  },
  { connection, prefix: spec.prefix, concurrency: spec.concurrency },
);
process.on('SIGTERM', async () => {
  await worker.close();
  await redis.quit();
  await db.end();
  process.exit(0);
});
