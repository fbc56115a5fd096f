// Sets up the demo event for scanning right now and prints a scanner enrolment code:
//   node web/scripts/demo-scanner.mjs ORGANIZER_EMAIL PASSWORD [BASE_URL]
// It opens the doors now (the demo's doors open two hours before a show a month away), creates the zone of the
// General tickets ("pista") and a gate in it, and a scanner device for that gate.
const [email, password, base = 'http://127.0.0.1:8080'] = process.argv.slice(2);
if (!email || !password) {
  console.error('usage: node web/scripts/demo-scanner.mjs ORGANIZER_EMAIL PASSWORD [BASE_URL]');
  process.exit(2);
}
async function call(method, path, token, body) {
  const r = await fetch(base + path, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
const { access_token: token } = await call('POST', '/api/v1/auth/login', null, { email, password });
const me = await call('GET', '/api/v1/me', token);
const org = me.organizations[0].organization_id;
const events = await call('GET', `/api/v1/organizations/${org}/events`, token);
const event = events.items.find((e) => e.status === 'on_sale') ?? events.items[0];
await call('PATCH', `/api/v1/events/${event.id}`, token, { doors_open_at: null });
const zones = (await call('GET', `/api/v1/events/${event.id}/zones`, token)).zones;
const zone = zones.find((z) => z.name === 'pista') ?? (await call('POST', `/api/v1/events/${event.id}/zones`, token, { name: 'pista' }));
const gates = (await call('GET', `/api/v1/events/${event.id}/gates`, token)).gates;
const gate =
  gates.find((g) => g.name === 'Puerta Pista') ??
  (await call('POST', `/api/v1/events/${event.id}/gates`, token, { name: 'Puerta Pista', zone_id: zone.id }));
const device = await call('POST', `/api/v1/events/${event.id}/devices`, token, { name: 'Demo scanner', gate_ids: [gate.id] });
console.log(`${event.name}: doors open now; gate "${gate.name}" admits General tickets.`);
console.log(`Scanner enrolment code: ${device.enrolment_code}  (enter it at ${base}/scan/)`);
