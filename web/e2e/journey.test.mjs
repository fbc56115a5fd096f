// End to end in real headless Chromium against a real `entrada serve --demo`: a fan signs up, buys through
// the sandbox's checkout page, sees the ticket in the wallet and opens its rotating QR; a scanner enrolled in a
// second browser context admits it once and refuses it again; taken offline, the scanner admits a second ticket
// on its own and uploads the scan when the network is back. A gift moves a ticket and the old holder's QR stops
// admitting; a holder lists a ticket within the price cap and another fan buys it. Both apps install (manifest, service worker) and fit
// a 360×740 screen. Screenshots of the key screens go to e2e/artifacts/.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';
import jsQR from 'jsqr';
import { secp256k1 } from '@noble/curves/secp256k1';
import { keccak_256 } from '@noble/hashes/sha3';
import { startServer } from '../scripts/server.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const artifacts = join(here, 'artifacts');
mkdirSync(artifacts, { recursive: true });
const VIEWPORT = { width: 360, height: 740 };

let server;
let browser;
let org; // { token, eventId }
let fan; // page
let scanner; // page
let scannerContext;
let fanContext;
let gateName = 'Puerta 1';
let gateId;
let resoldTicketId;
let firstAccess;

async function json(method, path, token, body, headers = {}) {
  const r = await fetch(server.base + path, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Waits for the scanner's full-screen verdict and checks its reason. */
async function verdict(page, reason) {
  const v = page.getByTestId('verdict');
  await v.waitFor();
  assert.equal(await v.getAttribute('data-reason'), reason, await v.innerText());
  return v;
}

const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });

async function fitsScreen(page) {
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= VIEWPORT.width, `the page is ${width}px wide on a ${VIEWPORT.width}px screen`);
}

before(async () => {
  // Access tokens live 65 s, so the apps refresh them quietly (a minute ahead) all through the journey.
  server = await startServer({ demo: true, env: { ENTRADA_IDENTITY__ACCESS_TTL_SECONDS: '65' } });
  const out = server.output();
  const eventId = /Demo event on sale: \S+\/api\/v1\/events\/([0-9a-f-]{36})/.exec(out)?.[1];
  const [, email, password] = /Demo organizer: (\S+) \/ (\S+)/.exec(out) ?? [];
  assert.ok(eventId && email && password, `demo ids in the output:\n${out}`);
  org = { email, password };
  const login = await json('POST', '/api/v1/auth/login', null, { email, password });
  org = { ...org, token: login.access_token, eventId };
  // Doors open now, so the gate admits today rather than on the demo's date.
  await json('PATCH', `/api/v1/events/${eventId}`, org.token, { doors_open_at: null });
  // launch() gives the browser a fresh temporary profile; each context below is a separate, empty one.
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('a fan signs up, buys three demo tickets through the sandbox page and sees them in the wallet', async () => {
  fanContext = await browser.newContext({ viewport: VIEWPORT, locale: 'en-US' });
  fan = await fanContext.newPage();
  fan.on('pageerror', (e) => console.error('fan page error:', e));
  fan.on('console', (m) => m.type() === 'error' && console.error('fan console:', m.text()));
  await fan.goto(server.base + '/');
  await fan.getByRole('heading', { name: 'Events', exact: true }).waitFor();
  await fan.getByRole('link', { name: /Noche|Concierto|Demo|Festival/ }).first().waitFor();
  await fitsScreen(fan);
  await shot(fan, '01-events');
  await fan.getByPlaceholder('Search events').fill('zzz-nothing');
  await fan.getByText('No events found.').waitFor();
  await fan.getByPlaceholder('Search events').fill('Noche');
  await fan.getByRole('link', { name: /Noche/ }).first().waitFor();

  await fan.getByRole('link', { name: 'Log in' }).click();
  await fan.getByRole('link', { name: 'New here? Sign up' }).click();
  await fan.getByLabel('Name').fill('Ana Fan');
  await fan.getByLabel('Email').fill(`ana-${Date.now()}@example.com`);
  await fan.getByLabel('Password').fill('a long passphrase');
  await fan.getByRole('button', { name: 'Sign up' }).click();
  await fan.getByRole('heading', { name: 'Wallet', exact: true }).waitFor();
  await fan.getByText('No tickets yet.').waitFor();
  firstAccess = await fan.evaluate(() => JSON.parse(localStorage.getItem('entrada.session')).access);

  // A declined card: the order page says why.
  await fan.goto(`${server.base}/events/${org.eventId}`);
  const general = fan.getByTestId('ticket-type').filter({ hasText: 'General' });
  await general.locator('select').selectOption('1');
  await fan.getByRole('button', { name: 'Buy' }).click();
  await fan.waitForURL(/\/sandbox\/checkout\//);
  await fan.locator('#card').fill('4000000000000002');
  await fan.locator('button[type=submit]').click();
  await fan.waitForURL(/\/orders\//);
  await fan.getByText('Your card was declined.').waitFor({ timeout: 30_000 });
  await shot(fan, '02b-card-declined');

  await fan.goto(`${server.base}/events/${org.eventId}`);
  await general.locator('select').selectOption('3');
  await fitsScreen(fan);
  await shot(fan, '02-event');
  await fan.getByRole('button', { name: 'Buy' }).click();

  // The sandbox provider's hosted checkout page.
  await fan.waitForURL(/\/sandbox\/checkout\//);
  await fan.locator('#card').fill('4242424242424242');
  await fan.locator('button[type=submit]').click();
  await fan.waitForURL(/\/orders\//);
  await fan.locator('[data-testid=order][data-status=paid]').waitFor({ timeout: 30_000 });
  await shot(fan, '03-order-paid');

  await fan.getByRole('link', { name: 'Go to wallet' }).click();
  const cards = fan.getByTestId('ticket-card');
  await cards.nth(2).waitFor();
  assert.equal(await cards.count(), 3);
  // Once the chain pipeline reports a ticket's token, its card shows the token id.
  const access = await fan.evaluate(() => JSON.parse(localStorage.getItem('entrada.session')).access);
  const mine = await json('GET', '/api/v1/me/tickets', access);
  for (const ticket of mine.items.filter((x) => x.chain?.token_id != null)) {
    const card = fan.locator(`[data-testid=ticket-card][data-ticket="${ticket.id}"]`);
    assert.equal(await card.getByTestId('token-id').innerText(), String(ticket.chain.token_id));
  }
  // The wallet names the custodial address the tokens are minted to.
  await fan.getByTestId('wallets').getByText(/0x[0-9a-fA-F]{40}/).waitFor();
  await fitsScreen(fan);
  await shot(fan, '04-wallet');
});

let firstQr;

test('the ticket screen shows a QR signed on the device, decoding to the same text, redrawn at every 15 s step', async () => {
  await fan.getByTestId('ticket-card').first().getByRole('link', { name: 'Show QR' }).click();
  const qr = fan.locator('[data-testid=qr][data-qr^="EN1:"]');
  await qr.waitFor({ timeout: 15_000 });
  firstQr = await qr.getAttribute('data-qr');
  const step = Number(await qr.getAttribute('data-step'));
  assert.ok(Math.abs(step - Math.floor(Date.now() / 15000)) <= 1, 'the proof is for the current 15 s step');
  // The drawn code is a real QR carrying exactly that text (decoded here, from the page's pixels).
  const size = 600;
  const pixels = await fan.evaluate(async (size) => {
    const svg = document.querySelector('[data-testid=qr] svg');
    const img = new Image();
    img.src = 'data:image/svg+xml;base64,' + btoa(new XMLSerializer().serializeToString(svg));
    await img.decode();
    const c = document.createElement('canvas');
    c.width = c.height = size;
    const ctx = c.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, size, size);
    ctx.drawImage(img, 0, 0, size, size);
    return Array.from(ctx.getImageData(0, 0, size, size).data);
  }, size);
  const decoded = jsQR(Uint8ClampedArray.from(pixels), size, size)?.data ?? null;
  assert.equal(decoded, firstQr);
  await fitsScreen(fan);
  await shot(fan, '05-ticket-qr');
  // At the next 15 s step the device signs a new proof and the code is redrawn.
  await fan.waitForFunction((s) => document.querySelector('[data-testid=qr]')?.dataset.step !== s, String(step), {
    timeout: 20_000,
  });
  const rotated = await qr.getAttribute('data-qr');
  assert.notEqual(rotated, firstQr);
  assert.equal(Number(await qr.getAttribute('data-step')), step + 1);
  firstQr = rotated;
});

test('a scanner enrols with its one-time code, admits the QR once and refuses it again as already used', async () => {
  const zone = await json('POST', `/api/v1/events/${org.eventId}/zones`, org.token, { name: 'pista' });
  const gate = await json('POST', `/api/v1/events/${org.eventId}/gates`, org.token, { name: gateName, zone_id: zone.id });
  gateId = gate.id;
  const device = await json('POST', `/api/v1/events/${org.eventId}/devices`, org.token, {
    name: 'Scanner 1',
    gate_ids: [gate.id],
  });
  scannerContext = await browser.newContext({ viewport: VIEWPORT, locale: 'en-US' });
  scanner = await scannerContext.newPage();
  scanner.on('pageerror', (e) => console.error('scanner page error:', e));
  scanner.on('console', (m) => m.type() === 'error' && console.error('scanner console:', m.text()));
  await scanner.goto(server.base + '/scan/');
  await scanner.getByLabel('One-time code').fill('not-a-code');
  await scanner.getByRole('button', { name: 'Enrol', exact: true }).click();
  await scanner.getByRole('alert').waitFor();
  assert.match(await scanner.getByRole('alert').innerText(), /not valid|already used/i);
  await scanner.getByLabel('One-time code').fill(device.enrolment_code);
  await scanner.getByRole('button', { name: 'Enrol', exact: true }).click();
  await scanner.getByRole('button', { name: new RegExp(gateName) }).click();
  await scanner.getByTestId('gate').filter({ hasText: gateName }).waitFor();
  await fitsScreen(scanner);
  await shot(scanner, '06-scanner-ready');

  const wedge = scanner.getByLabel(/Scanner input/);
  await wedge.fill(firstQr);
  await wedge.press('Enter');
  await verdict(scanner, 'ok');
  await shot(scanner, '07-scanner-admit');
  // Ready for the next scan in under a second.
  await scanner.getByTestId('verdict').waitFor({ state: 'detached', timeout: 1000 });

  await wedge.fill(firstQr);
  await wedge.press('Enter');
  await verdict(scanner, 'already_used');
  assert.match(await scanner.getByTestId('verdict').innerText(), /Already used/);
  await shot(scanner, '08-scanner-already-used');
  assert.equal(await scanner.getByTestId('admitted').innerText(), '1');
  assert.equal(await scanner.getByTestId('rejected').innerText(), '1');
});

test('offline, the scanner verifies in the browser, queues the admission and uploads it when back online', async () => {
  await scanner.getByTestId('verdict').waitFor({ state: 'detached' });
  await fan.goto(server.base + '/wallet');
  await fan.getByTestId('ticket-card').nth(1).getByRole('link', { name: 'Show QR' }).click();
  const qr = fan.locator('[data-testid=qr][data-qr^="EN1:"]');
  await qr.waitFor();
  const secondQr = await qr.getAttribute('data-qr');
  assert.notEqual(secondQr, firstQr);

  await scannerContext.setOffline(true);
  await scanner.getByTestId('net').filter({ hasText: 'Offline' }).waitFor();
  const wedge = scanner.getByLabel(/Scanner input/);
  await wedge.fill(secondQr);
  await wedge.press('Enter');
  await verdict(scanner, 'ok');
  assert.match(await scanner.getByTestId('verdict').innerText(), /Offline/);
  await scanner.getByTestId('verdict').waitFor({ state: 'detached' });
  assert.equal(await scanner.getByTestId('queued').innerText(), '1');
  // The same code again, still offline: this device remembers it admitted the ticket.
  await wedge.fill(secondQr);
  await wedge.press('Enter');
  await verdict(scanner, 'already_used');
  await shot(scanner, '09-scanner-offline');
  // Reopened with no network, the scanner comes back from its service worker with its queue intact.
  await scanner.getByTestId('verdict').waitFor({ state: 'detached' });
  await scanner.reload();
  await scanner.getByTestId('net').filter({ hasText: 'Offline' }).waitFor();
  // Both offline scans wait for upload: the admission and the refused repeat.
  await scanner.getByTestId('queued').filter({ hasText: /^2$/ }).waitFor();

  await scannerContext.setOffline(false);
  await scanner.getByTestId('queued').filter({ hasText: /^0$/ }).waitFor({ timeout: 20_000 });
  const stats = await json('GET', `/api/v1/events/${org.eventId}/checkin/stats`, org.token);
  assert.equal(stats.admitted_tickets, 2, 'both tickets are recorded as admitted on the server');
  assert.equal(await scanner.getByTestId('conflicts').innerText(), '0');
});

test('a gift moves a ticket to a second fan: the first fan\'s QR is refused, the new holder\'s admits', async () => {
  await scanner.getByTestId('verdict').waitFor({ state: 'detached' });
  await fan.goto(server.base + '/wallet');
  const card = fan.getByTestId('ticket-card').nth(2);
  const ticketId = await card.getAttribute('data-ticket');
  // The first fan keeps the ticket's screen open in a tab: it goes on signing fresh proofs of the old credential.
  const oldTab = await fanContext.newPage();
  await oldTab.goto(`${server.base}/tickets/${ticketId}`);
  await oldTab.locator('[data-testid=qr][data-qr^="EN1:"]').waitFor();

  const bea = `bea-${Date.now()}@example.com`;
  await json('POST', '/api/v1/auth/register', null, { email: bea, password: 'bea passphrase 123', display_name: 'Bea' });
  await fan.goto(server.base + '/wallet');
  const mine = fan.locator(`[data-testid=ticket-card][data-ticket="${ticketId}"]`);
  await mine.getByRole('button', { name: 'Give' }).click();
  await mine.getByLabel('Recipient email').fill(bea);
  await mine.getByRole('button', { name: 'Send gift' }).click();
  const answer = mine.locator('.ok, [role=alert]');
  await answer.waitFor();
  assert.match(await answer.innerText(), /Gift offered/);
  await fan.getByTestId('gift-out').waitFor();
  await shot(fan, '11-gift-offered');

  const beaContext = await browser.newContext({ viewport: VIEWPORT, locale: 'es-ES' });
  const beaPage = await beaContext.newPage();
  await beaPage.goto(server.base + '/login');
  await beaPage.getByLabel('Correo').fill(bea);
  await beaPage.getByLabel('Contraseña').fill('bea passphrase 123');
  await beaPage.getByRole('button', { name: 'Entrar' }).click();
  await beaPage.getByTestId('gift-in').waitFor();
  await fitsScreen(beaPage);
  await shot(beaPage, '12-gift-incoming-es');
  await beaPage.getByRole('button', { name: 'Aceptar' }).click();
  await beaPage.locator(`[data-testid=ticket-card][data-ticket="${ticketId}"]`).waitFor();
  await beaPage.getByTestId('gift-in').waitFor({ state: 'detached' });

  const oldQr = await oldTab.locator('[data-testid=qr]').getAttribute('data-qr');
  await oldTab.close();
  const wedge = scanner.getByLabel(/Scanner input/);
  await wedge.fill(oldQr);
  await wedge.press('Enter');
  await verdict(scanner, 'superseded_generation');
  await shot(scanner, '13-scanner-old-holder');
  await scanner.getByTestId('verdict').waitFor({ state: 'detached' });

  await beaPage.locator(`[data-testid=ticket-card][data-ticket="${ticketId}"]`).getByRole('link', { name: 'Mostrar QR' }).click();
  const beaQr = beaPage.locator('[data-testid=qr][data-qr^="EN1:"]');
  await beaQr.waitFor();
  await wedge.fill(await beaQr.getAttribute('data-qr'));
  await wedge.press('Enter');
  await verdict(scanner, 'ok');
  await beaContext.close();
});

test('resale: a holder lists a ticket within the cap, another fan buys it through the sandbox page', async () => {
  const carl = `carl-${Date.now()}@example.com`;
  const reg = await json('POST', '/api/v1/auth/register', null, {
    email: carl,
    password: 'carl passphrase 123',
    display_name: 'Carl',
  });
  const event = await json('GET', `/api/v1/events/${org.eventId}`);
  const general = event.ticket_types.find((x) => x.name === 'General');
  const hold = await json('POST', '/api/v1/holds', reg.access_token, {
    event_id: org.eventId,
    items: [{ ticket_type_id: general.id, quantity: 1 }],
  });
  const order = await json('POST', '/api/v1/orders', reg.access_token, { hold_id: hold.id }, { 'Idempotency-Key': `carl-${Date.now()}` });
  await json('POST', new URL(order.checkout_url).pathname, null, { card: '4242424242424242' });
  for (let i = 0; i < 100 && (await json('GET', `/api/v1/orders/${order.id}`, reg.access_token)).status !== 'paid'; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }

  const carlContext = await browser.newContext({ viewport: VIEWPORT, locale: 'en-US' });
  const carlPage = await carlContext.newPage();
  await carlPage.goto(server.base + '/login');
  await carlPage.getByLabel('Email').fill(carl);
  await carlPage.getByLabel('Password').fill('carl passphrase 123');
  await carlPage.getByRole('button', { name: 'Log in' }).click();
  const card = carlPage.getByTestId('ticket-card').first();
  await card.getByRole('button', { name: 'Sell' }).click();
  const price = card.getByLabel(/Price/);
  await price.fill('999');
  await card.getByRole('button', { name: 'List for resale' }).click();
  assert.match(await card.getByRole('alert').innerText(), /above the cap/);
  await price.fill('48');
  await card.getByRole('button', { name: 'List for resale' }).click();
  await card.getByRole('button', { name: 'Withdraw' }).waitFor();
  await shot(carlPage, '14-resale-listed');

  await fan.goto(`${server.base}/events/${org.eventId}`);
  const offer = fan.getByTestId('listing').first();
  await offer.waitFor();
  await shot(fan, '15-resale-offer');
  await offer.getByRole('button', { name: 'Buy' }).click();
  await fan.waitForURL(/\/sandbox\/checkout\//);
  await fan.locator('#card').fill('4242424242424242');
  await fan.locator('button[type=submit]').click();
  await fan.waitForURL(/\/resale\/purchases\//);
  await fan.locator('[data-testid=purchase][data-status=completed]').waitFor({ timeout: 30_000 });
  await shot(fan, '16-resale-bought');
  await fan.getByRole('link', { name: 'Go to wallet' }).click();
  resoldTicketId = await card.getAttribute('data-ticket');
  await fan.locator(`[data-testid=ticket-card][data-ticket="${resoldTicketId}"]`).waitFor();
  await carlContext.close();
});

test('an offline admission that collides with an online one at another device is shown as a conflict', async () => {
  await fan.locator(`[data-testid=ticket-card][data-ticket="${resoldTicketId}"]`).getByRole('link', { name: 'Show QR' }).click();
  const qr = fan.locator('[data-testid=qr][data-qr^="EN1:"]');
  await qr.waitFor();
  const text = await qr.getAttribute('data-qr');
  // A second scanner at the same gate admits the ticket online first.
  const other = await json('POST', `/api/v1/events/${org.eventId}/devices`, org.token, { name: 'Scanner 2', gate_ids: [gateId] });
  const enrolled = await json('POST', '/api/v1/scanner/enrol', null, { code: other.enrolment_code });
  const online = await json('POST', '/api/v1/scanner/scan', null, { payload: text, gate_id: gateId, nonce: 'other-1' }, {
    authorization: `Device ${enrolled.device_token}`,
  });
  assert.equal(online.reason, 'ok');

  await scannerContext.setOffline(true);
  await scanner.getByTestId('net').filter({ hasText: 'Offline' }).waitFor();
  const wedge = scanner.getByLabel(/Scanner input/);
  await wedge.fill(text);
  await wedge.press('Enter');
  await verdict(scanner, 'ok');
  await scannerContext.setOffline(false);
  await scanner.getByTestId('conflicts').filter({ hasText: /^1$/ }).waitFor({ timeout: 20_000 });
  await scanner.getByTestId('conflict-list').waitFor();
  await scanner.getByTestId('queued').filter({ hasText: /^0$/ }).waitFor();
  await scanner.getByTestId('verdict').waitFor({ state: 'detached' });
  await shot(scanner, '17-scanner-conflict');
});

/** A one-frame YUV4MPEG2 video of an RGBA image, for Chromium's fake camera. */
function y4m(rgba, w, h) {
  const y = Buffer.alloc(w * h);
  const u = Buffer.alloc((w / 2) * (h / 2));
  const v = Buffer.alloc((w / 2) * (h / 2));
  for (let j = 0; j < h; j++) {
    for (let i = 0; i < w; i++) {
      const o = (j * w + i) * 4;
      const [r, g, b] = [rgba[o], rgba[o + 1], rgba[o + 2]];
      y[j * w + i] = Math.round(0.299 * r + 0.587 * g + 0.114 * b);
      if (j % 2 === 0 && i % 2 === 0) {
        const k = (j / 2) * (w / 2) + i / 2;
        u[k] = Math.round(128 - 0.168736 * r - 0.331264 * g + 0.5 * b);
        v[k] = Math.round(128 + 0.5 * r - 0.418688 * g - 0.081312 * b);
      }
    }
  }
  const header = Buffer.from(`YUV4MPEG2 W${w} H${h} F5:1 Ip A1:1 C420jpeg\n`);
  return Buffer.concat([header, Buffer.from('FRAME\n'), y, u, v]);
}

test('the scanner reads a QR shown to its camera', async () => {
  await fan.goto(server.base + '/wallet');
  await fan.getByTestId('ticket-card').first().getByRole('link', { name: 'Show QR' }).click();
  await fan.locator('[data-testid=qr][data-qr^="EN1:"]').waitFor();
  // The code as drawn on the fan's screen, turned into the frames of a fake camera.
  const size = 640;
  const pixels = await fan.evaluate(async (size) => {
    const svg = document.querySelector('[data-testid=qr] svg');
    const img = new Image();
    img.src = 'data:image/svg+xml;base64,' + btoa(new XMLSerializer().serializeToString(svg));
    await img.decode();
    const c = document.createElement('canvas');
    c.width = c.height = size;
    const ctx = c.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, size, size);
    ctx.drawImage(img, 80, 80, size - 160, size - 160);
    return Array.from(ctx.getImageData(0, 0, size, size).data);
  }, size);
  const dir = mkdtempSync(join(tmpdir(), 'entrada-camera-'));
  const video = join(dir, 'qr.y4m');
  writeFileSync(video, y4m(pixels, size, size));
  const camBrowser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
      `--use-file-for-fake-video-capture=${video}`,
    ],
  });
  try {
    const device = await json('POST', `/api/v1/events/${org.eventId}/devices`, org.token, {
      name: 'Camera scanner',
      gate_ids: [gateId],
    });
    const ctx = await camBrowser.newContext({ viewport: VIEWPORT, locale: 'en-US', permissions: ['camera'] });
    const cam = await ctx.newPage();
    await cam.goto(server.base + '/scan/');
    await cam.getByLabel('One-time code').fill(device.enrolment_code);
    await cam.getByRole('button', { name: 'Enrol', exact: true }).click();
    await cam.getByRole('button', { name: new RegExp(gateName) }).click();
    await cam.getByRole('button', { name: 'Start camera' }).click();
    // That ticket was admitted earlier: what matters is that the camera read and verified it.
    const v = cam.getByTestId('verdict');
    await v.waitFor({ timeout: 20_000 });
    assert.equal(await v.getAttribute('data-reason'), 'already_used', await v.innerText());
    await shot(cam, '18-scanner-camera');
  } finally {
    await camBrowser.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('both apps install: manifests load and service workers take control', async () => {
  for (const [page, manifest] of [
    [fan, '/manifest.webmanifest'],
    [scanner, '/scan/manifest.webmanifest'],
  ]) {
    const href = await page.locator('link[rel=manifest]').getAttribute('href');
    assert.equal(href, manifest);
    const m = await (await fetch(server.base + manifest)).json();
    assert.ok(m.name && m.start_url && m.icons.length >= 2);
    const scope = await page.evaluate(async () => (await navigator.serviceWorker.ready).scope);
    assert.ok(scope.startsWith(server.base));
  }
});

test('the ticket QR still opens with no network once its credential is on the device', async () => {
  await fan.goto(server.base + '/wallet');
  await fan.getByTestId('ticket-card').first().getByRole('link', { name: 'Show QR' }).click();
  await fan.locator('[data-testid=qr][data-qr^="EN1:"]').waitFor();
  await fanContext.setOffline(true);
  await fan.reload();
  const qr = fan.locator('[data-testid=qr][data-qr^="EN1:"]');
  await qr.waitFor({ timeout: 15_000 });
  await fan.getByText('Offline: the code still works.').waitFor();
  await shot(fan, '10-ticket-offline');
  await fanContext.setOffline(false);
});

test('the session was refreshed quietly along the way and still works', async () => {
  await fan.goto(server.base + '/wallet');
  await fan.getByTestId('ticket-card').first().waitFor();
  const access = await fan.evaluate(() => JSON.parse(localStorage.getItem('entrada.session')).access);
  assert.notEqual(access, firstAccess);
  assert.equal(await fan.getByRole('button', { name: 'Log out' }).count(), 1);
});

test('the server keeps API paths as problems and serves the apps with the right caching', async () => {
  const r = await fetch(server.base + '/api/v1/nope');
  assert.equal(r.status, 404);
  assert.equal(r.headers.get('content-type'), 'application/problem+json');
  const index = await fetch(server.base + '/wallet');
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type'), /text\/html/);
  assert.equal(index.headers.get('cache-control'), 'no-cache');
  const scan = await fetch(server.base + '/scan/anything');
  assert.match(await scan.text(), /scan/);
  const html = await (await fetch(server.base + '/')).text();
  const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)[1];
  const a = await fetch(server.base + asset);
  assert.match(a.headers.get('content-type'), /javascript/);
  assert.match(a.headers.get('cache-control'), /immutable/);
  assert.match(index.headers.get('content-security-policy'), /default-src 'self'/);
});

test("the README's demo scanner helper opens the doors and prints a working enrolment code", async () => {
  const script = join(here, '../scripts/demo-scanner.mjs');
  const out = execFileSync('node', [script, org.email, org.password, server.base]).toString();
  const code = /Scanner enrolment code: (\S+)/.exec(out)?.[1];
  assert.ok(code, out);
  const enrolled = await json('POST', '/api/v1/scanner/enrol', null, { code });
  assert.equal(enrolled.event_id, org.eventId);
});

/** An EIP-55 address and an EIP-191 `personal_sign` made with a real secp256k1 key, as a browser wallet does. */
function ethereumKey(seedByte) {
  const priv = new Uint8Array(32).fill(seedByte);
  const raw = Buffer.from(keccak_256(secp256k1.getPublicKey(priv, false).slice(1))).subarray(12).toString('hex');
  const hash = Buffer.from(keccak_256(Buffer.from(raw))).toString('hex');
  const address = '0x' + [...raw].map((c, i) => (parseInt(hash[i], 16) >= 8 ? c.toUpperCase() : c)).join('');
  const sign = (message) => {
    const bytes = Buffer.from(message, 'utf8');
    const digest = keccak_256(Buffer.concat([Buffer.from(`\x19Ethereum Signed Message:\n${bytes.length}`), bytes]));
    const sig = secp256k1.sign(digest, priv);
    return '0x' + sig.toCompactHex() + (27 + sig.recovery).toString(16);
  };
  return { address, sign };
}

test('a fan links a browser wallet by signing in with Ethereum and exports a ticket to it', async () => {
  await json('PATCH', `/api/v1/events/${org.eventId}`, org.token, { resale_policy: { export_allowed: true } });
  const key = ethereumKey(7);
  // An injected EIP-1193 wallet whose signatures come from the key above.
  await fanContext.exposeFunction('testWalletSign', (message) => key.sign(message));
  await fanContext.addInitScript((address) => {
    window.ethereum = {
      async request({ method, params }) {
        if (method === 'eth_requestAccounts') return [address];
        if (method === 'personal_sign') return window.testWalletSign(params[0]);
        throw new Error(`unsupported ${method}`);
      },
    };
  }, key.address);
  await fan.goto(server.base + '/wallet');
  const wallets = fan.getByTestId('wallets');
  await wallets.getByRole('button', { name: 'Link a browser wallet' }).click();
  await wallets.getByText(key.address).waitFor();
  await shot(fan, '19-wallet-linked');

  const card = fan.getByTestId('ticket-card').first();
  await card.getByRole('button', { name: 'Export' }).click();
  await card.getByRole('button', { name: 'Export', exact: true }).last().click();
  const answer = card.locator('.panel .ok, .panel [role=alert]');
  await answer.first().waitFor();
  assert.match(await answer.first().innerText(), /Exported/);
});
