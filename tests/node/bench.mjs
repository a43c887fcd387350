// Queue throughput benchmark helper (not a test); the Node worker it is compared with is
// benches/sharp/worker.mjs.
//   node bench.mjs produce '<json {queue, prefix, count, baseUrl, maskUrl, renderOptions,
//                                  designPrefix, tenants}>'
//     adds `count` jobs with addBulk, waits for all completions through QueueEvents and prints
//     {"jobs": n, "failed": f, "seconds": s, "jobsPerSecond": r}.
//   node bench.mjs sink '<json {port}>'
//     an OTLP/HTTP collector stand-in for the traced worker: answers every export with 200 and,
//     on SIGTERM, prints {"requests": n, "bytes": b}.
import { Queue, QueueEvents } from 'bullmq';

const [mode, raw] = process.argv.slice(2);
const spec = JSON.parse(raw);
const connection = { host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null };

if (mode === 'produce') {
  const queue = new Queue(spec.queue, { connection, prefix: spec.prefix });
  const events = new QueueEvents(spec.queue, { connection, prefix: spec.prefix });
  await events.waitUntilReady();
  let done = 0;
  let failed = 0;
  let finish;
  const all = new Promise((resolve) => { finish = resolve; });
  const count = (event) => { done += 1; if (done >= spec.count) finish(); };
  events.on('completed', count);
  events.on('failed', ({ failedReason }) => { console.error('failed:', failedReason); failed += 1; count(); });
  const tenants = spec.tenants ?? 1000;
  const jobs = Array.from({ length: spec.count }, (_, i) => ({
    name: 'render',
    data: {
      designId: `${spec.designPrefix}${i}`,
      prompt: 'bench',
      baseTextureUrl: spec.baseUrl,
      maskUrl: spec.maskUrl,
      tenantId: `bench-${i % tenants}`,
      renderOptions: spec.renderOptions,
    },
    opts: { attempts: 1, removeOnComplete: true },
  }));
  const started = performance.now();
  await queue.addBulk(jobs);
  await all;
  const seconds = (performance.now() - started) / 1000;
  console.log(JSON.stringify({ jobs: spec.count, failed, seconds, jobsPerSecond: spec.count / seconds }));
  await events.close();
  await queue.close();
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
