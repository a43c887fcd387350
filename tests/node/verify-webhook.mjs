// An independent check of webhook signatures, as a Node receiver would write it with only
// node:crypto (Standard Webhooks: HMAC-SHA256 over "<id>.<timestamp>.<body>" with the base64 key
// after `whsec_`, sent as space-separated `v1,<base64>` entries; timestamps within 5 minutes).
// Usage: node verify-webhook.mjs '<json {secret, deliveries: [{id, timestamp, body, signature}]}>'
// Prints {"valid": [true|false, …]}.
import { createHmac, timingSafeEqual } from 'node:crypto';

const spec = JSON.parse(process.argv[2]);
const key = Buffer.from(spec.secret.replace(/^whsec_/, ''), 'base64');
const now = Math.floor(Date.now() / 1000);
const valid = spec.deliveries.map(({ id, timestamp, body, signature }) => {
  if (Math.abs(now - Number(timestamp)) > 300) return false;
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest();
  return signature.split(' ').some((entry) => {
    const [version, value] = entry.split(',');
    if (version !== 'v1' || !value) return false;
    const given = Buffer.from(value, 'base64');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
});
console.log(JSON.stringify({ valid }));
