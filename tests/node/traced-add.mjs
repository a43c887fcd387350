// Producer side of the tracing test: adds jobs the way a traced Node backend does, with
// `telemetry: new BullMQOtel(...)` and an OpenTelemetry SDK registered (W3C propagation and
// async context), so each job's `opts.tm` carries the producer span's context. The SDK keeps the
// finished spans in memory; the script prints, per job, its id and the PRODUCER span's ids.
// Usage: node traced-add.mjs '<json: {port, queue, prefix, jobs: [{name, data, opts}]}>'
import { context, propagation, trace, SpanKind } from '@opentelemetry/api';
import { AsyncHooksContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Queue } from 'bullmq';
import { BullMQOtel } from 'bullmq-otel';

const spec = JSON.parse(process.argv[2]);
const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
context.setGlobalContextManager(new AsyncHooksContextManager().enable());
propagation.setGlobalPropagator(new W3CTraceContextPropagator());
trace.setGlobalTracerProvider(provider);

const connection = { host: '127.0.0.1', port: spec.port ?? 6379, maxRetriesPerRequest: null };
const queue = new Queue(spec.queue, { connection, prefix: spec.prefix, telemetry: new BullMQOtel('node-backend') });
const added = [];
for (const job of spec.jobs) {
  added.push(await queue.add(job.name ?? 'render', job.data, job.opts ?? {}));
}
await provider.forceFlush();
const producers = exporter.getFinishedSpans().filter((span) => span.kind === SpanKind.PRODUCER);
const jobs = added.map((job) => {
  const span = producers.find((candidate) => candidate.attributes['bullmq.job.id'] === job.id);
  const ids = span?.spanContext();
  return { id: job.id, traceId: ids?.traceId, spanId: ids?.spanId, spanName: span?.name, tm: job.opts.telemetry?.metadata };
});
console.log(JSON.stringify({ jobs }));
await queue.close();
await provider.shutdown();
