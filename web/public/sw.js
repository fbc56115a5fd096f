// The fan app's service worker: keeps the app shell (index + hashed assets) so the wallet and a stored ticket
// QR open without a network. API calls always go to the network; the app keeps its own data in IndexedDB.
const CACHE = 'entrada-fan-v1';
const INDEX = '/';
const SKIP = ['/api/', '/sandbox/', '/scan', '/.well-known/'];

async function precache() {
  const cache = await caches.open(CACHE);
  const res = await fetch(INDEX, { cache: 'no-cache' });
  const html = await res.clone().text();
  await cache.put(INDEX, res);
  const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]);
  await cache.addAll([...new Set(assets), '/manifest.webmanifest', '/icon-192.png']);
}

self.addEventListener('install', (e) => e.waitUntil(precache().then(() => self.skipWaiting())));
self.addEventListener('activate', (e) =>
  e.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('entrada-fan-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  ),
);
self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== 'GET' || url.origin !== location.origin) return;
  if (SKIP.some((p) => url.pathname.startsWith(p))) return;
  if (e.request.mode === 'navigate') {
    e.respondWith(
      fetch(e.request)
        .then((res) => {
          if (res.ok) caches.open(CACHE).then((c) => c.put(INDEX, res.clone()));
          return res;
        })
        .catch(() => caches.match(INDEX)),
    );
    return;
  }
  e.respondWith(
    caches.match(e.request).then(
      (hit) =>
        hit ||
        fetch(e.request).then((res) => {
          if (res.ok && url.pathname.startsWith('/assets/')) {
            const copy = res.clone();
            caches.open(CACHE).then((c) => c.put(e.request, copy));
          }
          return res;
        }),
    ),
  );
});
