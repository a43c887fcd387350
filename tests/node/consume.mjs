// Consumer side: a Node BullMQ Worker that processes `count` jobs (e.g. added by
// `design-render enqueue`) and prints what it received as JSON.
// Usage: node consume.mjs '<json: {port, queue, prefix, count, timeoutMs}>'
import { Worker } from 'bullmq';

const spec = JSON.parse(process.argv[2]);
const connection = { host: '127.0.0.1', port: spec.port ?? 6379, maxRetriesPerRequest: null };
const received = [];
const timer = setTimeout(() => {
  console.error('consumer timed out');
  process.exit(2);
}, spec.timeoutMs ?? 60000);
let finish;
const done = new Promise((resolve) => { finish = resolve; });
const worker = new Worker(
  spec.queue,
  async (job) => {
    received.push({ id: job.id, name: job.name, data: job.data, attempts: job.opts.attempts, backoff: job.opts.backoff });
    return { processedBy: 'node', designId: job.data.designId };
  },
  { connection, prefix: spec.prefix },
);
worker.on('completed', () => {
  if (received.length >= spec.count) finish();
});
await done;
clearTimeout(timer);
await worker.close();
console.log(JSON.stringify(received));
