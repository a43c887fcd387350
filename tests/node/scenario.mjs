// Producer side of the compatibility tests: adds jobs with Node's BullMQ Queue.add, waits for
// each to finish through QueueEvents, then prints one JSON object describing what Node sees.
// Usage: node scenario.mjs '<json: {port, clusterPorts, queue, prefix, jobs: [{name, data, opts}], timeoutMs}>'
// With `clusterPorts` it talks to a Redis Cluster on 127.0.0.1 through ioredis' Cluster client
// (the prefix must then carry a hash tag, e.g. `{bull}`).
import { Queue, QueueEvents, Job } from 'bullmq';
import { Cluster } from 'ioredis';

const spec = JSON.parse(process.argv[2]);
const connection = spec.clusterPorts
  ? new Cluster(
      spec.clusterPorts.map((port) => ({ host: '127.0.0.1', port })),
      { redisOptions: { maxRetriesPerRequest: null } },
    )
  : { host: '127.0.0.1', port: spec.port ?? 6379, maxRetriesPerRequest: null };
const queue = new Queue(spec.queue, { connection, prefix: spec.prefix });
const events = new QueueEvents(spec.queue, { connection, prefix: spec.prefix });
const seen = [];
for (const name of ['completed', 'failed', 'delayed']) {
  events.on(name, (args) => seen.push({ event: name, ...args }));
}
const timer = setTimeout(() => {
  console.error('scenario timed out');
  process.exit(2);
}, spec.timeoutMs ?? 60000);

await events.waitUntilReady();
const added = [];
for (const job of spec.jobs) {
  added.push(await queue.add(job.name ?? 'render', job.data, job.opts ?? {}));
}
const results = [];
for (const job of added) {
  let outcome = 'completed';
  try {
    await job.waitUntilFinished(events, spec.timeoutMs ?? 60000);
  } catch (error) {
    outcome = `rejected: ${error.message}`;
  }
  const stored = await Job.fromId(queue, job.id);
  results.push({
    id: job.id,
    outcome,
    state: await stored.getState(),
    returnvalue: stored.returnvalue,
    attemptsMade: stored.attemptsMade,
    failedReason: stored.failedReason,
    finishedOn: stored.finishedOn,
  });
}
// QueueEvents may deliver the last event just after waitUntilFinished resolves.
const wanted = added.length;
const deadline = Date.now() + 5000;
while (seen.filter((e) => e.event === 'completed' || e.event === 'failed').length < wanted && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}
clearTimeout(timer);
console.log(JSON.stringify({ results, events: seen }));
await events.close();
await queue.close();
if (spec.clusterPorts) await connection.quit();
