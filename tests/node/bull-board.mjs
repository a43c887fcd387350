// Bull Board, the dashboard many Node teams put on their BullMQ queues, over one of our queues:
// mounts @bull-board/express on a loopback port, reads the completed jobs through the board's
// own JSON API (the one its UI calls), then prints one JSON object with what the board returned.
// Usage: node bull-board.mjs '<json: {queue, prefix, port?, timeoutMs?}>'
//
// Routes (@bull-board/api, src/routes.ts):
//   GET <base>/api/queues?activeQueue=<name>&status=completed&page=1&jobsPerPage=<n>
//       -> {queues: [{name, counts, pagination, jobs: [{id, name, data, returnValue, ...}]}]}
//   GET <base>/api/queues/<name>/<jobId> -> {job, status}   (the job page: its current state)
import express from 'express';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Queue } from 'bullmq';

const spec = JSON.parse(process.argv[2]);
const timer = setTimeout(() => {
  console.error('bull-board timed out');
  process.exit(2);
}, spec.timeoutMs ?? 60000);

const BASE = '/board';
const connection = { host: '127.0.0.1', port: spec.port ?? 6379, maxRetriesPerRequest: null };
const queue = new Queue(spec.queue, { connection, prefix: spec.prefix });
const serverAdapter = new ExpressAdapter();
serverAdapter.setBasePath(BASE);
createBullBoard({ queues: [new BullMQAdapter(queue)], serverAdapter });
const app = express();
app.use(BASE, serverAdapter.getRouter());
const server = await new Promise((resolve, reject) => {
  const listening = app.listen(0, '127.0.0.1', (error) => (error ? reject(error) : resolve(listening)));
});
const origin = `http://127.0.0.1:${server.address().port}`;

async function getJson(path) {
  const response = await fetch(origin + path, { headers: { accept: 'application/json' } });
  const text = await response.text();
  if (!response.ok) {
    throw new Error(`GET ${path} answered ${response.status}: ${text}`);
  }
  return JSON.parse(text);
}

try {
  // The UI's entry page: the board still serves its app shell.
  const page = await fetch(`${origin}${BASE}/`);
  const ui = { status: page.status, contentType: page.headers.get('content-type') };
  await page.arrayBuffer();

  const name = encodeURIComponent(spec.queue);
  const listing = await getJson(
    `${BASE}/api/queues?activeQueue=${name}&status=completed&page=1&jobsPerPage=${spec.jobsPerPage ?? 50}`,
  );
  const shown = listing.queues.find((q) => q.name === spec.queue);
  if (!shown) {
    throw new Error(`the board does not list queue ${spec.queue}: ${JSON.stringify(listing)}`);
  }
  const jobs = [];
  for (const job of shown.jobs) {
    const detail = await getJson(`${BASE}/api/queues/${name}/${encodeURIComponent(job.id)}`);
    jobs.push({
      id: job.id,
      name: job.name,
      data: job.data,
      returnValue: job.returnValue,
      state: detail.status,
      attempts: job.attempts,
      failedReason: job.failedReason ?? null,
    });
  }
  console.log(
    JSON.stringify({ ui, queue: shown.name, counts: shown.counts, pagination: shown.pagination, jobs }),
  );
} finally {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await queue.close();
  clearTimeout(timer);
}
