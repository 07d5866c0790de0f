// Service worker: keeps every file of the app in a cache when it is installed, then answers
// every request of the app from that cache, so the app works with the network off. A new export
// has a new VERSION (a hash of its files), which replaces the cache.
const VERSION = '__VERSION__';
const ASSETS = __ASSETS__;
const CACHE = `mineral-zoo ${self.registration.scope} ${VERSION}`;

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE)
    .then((cache) => cache.addAll(ASSETS.map((url) => new Request(url, { cache: 'reload' }))))
    .then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  const mine = `mineral-zoo ${self.registration.scope} `;
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith(mine) && k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET' || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith(caches.open(CACHE).then(async (cache) => {
    const hit = await cache.match(request, { ignoreSearch: true })
      || (request.mode === 'navigate' ? await cache.match('./') : undefined);
    return hit || fetch(request);
  }));
});
