// Queue throughput benchmark helper (not a test).
//   node bench.mjs produce '<json {queue, prefix, count, baseUrl, designPrefix, tenants}>'
//     adds `count` jobs with addBulk, waits for all completions through QueueEvents and prints
//     {"jobs": n, "seconds": s, "jobsPerSecond": r}.
//   node bench.mjs worker '<json {queue, prefix, concurrency, databaseUrl, schema}>'
//     a Node BullMQ worker doing the Rust worker's bookkeeping without the image work: parse the
//     payload, take the tenant lease with the same Lua as src/tenancy.rs, mark the Design
//     PROCESSING, write the COMPLETED row (URLs, cost, metadata) with the same SQL as
//     src/store/postgres.rs, release the lease, PUBLISH the completed event.
//   node bench.mjs sink '<json {port}>'
//     an OTLP/HTTP collector stand-in for the traced worker: answers every export with 200 and,
//     on SIGTERM, prints {"requests": n, "bytes": b}.
import { Queue, QueueEvents, Worker } from 'bullmq';
import IORedis from 'ioredis';
import pg from 'pg';

const [mode, raw] = process.argv.slice(2);
const spec = JSON.parse(raw);
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

if (mode === 'produce') {
  const queue = new Queue(spec.queue, { connection, prefix: spec.prefix });
  const events = new QueueEvents(spec.queue, { connection, prefix: spec.prefix });
  await events.waitUntilReady();
  let done = 0;
  let finish;
  const all = new Promise((resolve) => { finish = resolve; });
  const count = (event) => { done += 1; if (done >= spec.count) finish(); };
  events.on('completed', count);
  events.on('failed', ({ failedReason }) => { console.error('failed:', failedReason); count(); });
  const tenants = spec.tenants ?? 1000;
  const jobs = Array.from({ length: spec.count }, (_, i) => ({
    name: 'render',
    data: {
      designId: `${spec.designPrefix}${i}`,
      prompt: 'bench',
      baseTextureUrl: spec.baseUrl,
      tenantId: `bench-${i % tenants}`,
      renderOptions: { size: '64x64' },
    },
    opts: { attempts: 1, removeOnComplete: true },
  }));
  const started = performance.now();
  await queue.addBulk(jobs);
  await all;
  const seconds = (performance.now() - started) / 1000;
  console.log(JSON.stringify({ jobs: spec.count, seconds, jobsPerSecond: spec.count / seconds }));
  await events.close();
  await queue.close();
} else if (mode === 'worker') {
  const redis = new IORedis(connection);
  redis.defineCommand('acquireSlot', { numberOfKeys: 1, lua: ACQUIRE });
  // The same pool size as the Rust worker (8 connections), on the run's schema.
  const db = new pg.Pool({ connectionString: spec.databaseUrl, max: 8, options: `-c search_path="${spec.schema}"` });
  const worker = new Worker(
    spec.queue,
    async (job) => {
      const { designId, tenantId } = job.data;
      if (typeof designId !== 'string' || typeof tenantId !== 'string') throw new Error('invalid payload');
      const key = `${spec.prefix}:${spec.queue}:tenant-slots:${tenantId}`;
      if ((await redis.acquireSlot(key, job.id, 2, 30000)) !== 1) throw new Error('saturated');
      const processing = await db.query(
        `UPDATE "Design" SET "status" = 'PROCESSING'::"DesignStatus", "updatedAt" = $3 WHERE "id" = $1 AND "tenantId" = $2`,
        [designId, tenantId, new Date()],
      );
      if (processing.rowCount === 0) throw new Error('design not found');
      const url = (kind) => `file:///storage/designs/${designId}/${kind}.png`;
      const result = {
        designId, status: 'COMPLETED', compositeTextureUrl: url('composite'), previewUrl: url('preview'),
        highResUrl: url('highres'), costTokens: 0, costCents: 0,
      };
      await db.query(
        `UPDATE "Design" SET "status" = 'COMPLETED'::"DesignStatus", "compositeTextureUrl" = $3,
           "previewUrl" = $4, "highResUrl" = $5, "costTokens" = GREATEST("costTokens", $6),
           "costCents" = GREATEST("costCents", $7),
           "metadata" = COALESCE("metadata", '{}'::jsonb) || $8::jsonb, "updatedAt" = $9
         WHERE "id" = $1 AND "tenantId" = $2`,
        [designId, tenantId, result.compositeTextureUrl, result.previewUrl, result.highResUrl, 0, 0,
          JSON.stringify({ provider: 'none', jobId: job.id }), new Date()],
      );
      await redis.zrem(key, job.id);
      const event = { event: 'design.render.completed', version: 1, jobId: job.id, designId, tenantId, attemptsMade: 1, ...result, timestamp: new Date().toISOString() };
      await redis.publish(event.event, JSON.stringify(event));
      return result;
    },
    { connection, prefix: spec.prefix, concurrency: spec.concurrency },
  );
  process.on('SIGTERM', async () => { await worker.close(); await redis.quit(); await db.end(); process.exit(0); });
} else if (mode === 'sink') {
  const http = await import('node:http');
  let requests = 0;
  let bytes = 0;
  const server = http.createServer((request, response) => {
    request.on('data', (chunk) => { bytes += chunk.length; });
    request.on('end', () => {
      requests += 1;
      response.writeHead(200, { 'content-type': 'application/x-protobuf' });
      response.end();
    });
  });
  server.listen(spec.port, '127.0.0.1');
  process.on('SIGTERM', () => {
    console.log(JSON.stringify({ requests, bytes }));
    process.exit(0);
  });
} else {
  throw new Error(`unknown mode ${mode}`);
}
