// Queue throughput benchmark helper (not a test); the Node worker it is compared with is
// benches/sharp/worker.mjs.
//   node bench.mjs produce '<json {queue, prefix, count, baseUrl, maskUrl, renderOptions,
//                                  designPrefix, tenants}>'
//     adds `count` jobs with addBulk, waits for all completions through QueueEvents and prints
//     {"jobs": n, "failed": f, "seconds": s, "jobsPerSecond": r}.
//   node bench.mjs fill '<json {queue, prefix, completed, failed, waiting}>'
//     fills a queue for the dashboard benchmark: `completed` jobs that a Node worker completes
//     and `failed` ones it fails with an error code, then `waiting` jobs left waiting in the
//     paused queue; prints the job counts.
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
} else if (mode === 'fill') {
  const { Worker } = await import('bullmq');
  const queue = new Queue(spec.queue, { connection, prefix: spec.prefix });
  const job = (i) => ({
    name: 'render',
    data: {
      designId: `bench-d-${i}`,
      prompt: 'bench',
      baseTextureUrl: 'http://127.0.0.1:9/base.png',
      tenantId: `bench-${i % 100}`,
    },
    opts: { attempts: 1 },
  });
  const addRange = async (from, to) => {
    for (let start = from; start < to; start += 1000) {
      const end = Math.min(start + 1000, to);
      await queue.addBulk(Array.from({ length: end - start }, (_, k) => job(start + k)));
    }
  };
  const finished = spec.completed + spec.failed;
  await addRange(0, finished);
  let seen = 0;
  let finish;
  const all = new Promise((resolve) => { finish = resolve; });
  const codes = ['provider_unavailable', 'asset_not_found', 'design_not_found'];
  const worker = new Worker(
    spec.queue,
    async (j) => {
      const i = Number(j.data.designId.slice('bench-d-'.length));
      if (i % finished < spec.failed) throw new Error(`bench failure [${codes[i % codes.length]}]`);
      return { designId: j.data.designId, status: 'COMPLETED' };
    },
    { connection, prefix: spec.prefix, concurrency: 200 },
  );
  const count = () => { seen += 1; if (seen >= finished) finish(); };
  worker.on('completed', count);
  worker.on('failed', count);
  if (finished > 0) await all;
  await worker.close();
  await queue.pause();
  await addRange(finished, finished + spec.waiting);
  console.log(JSON.stringify(await queue.getJobCounts()));
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
