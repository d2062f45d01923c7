// The test page's service worker: caches the page and client-wasm's files when installed and
// serves them cache-first, so that a page opened with no network still loads (the board itself
// then comes from IndexedDB).
const CACHE = 'client-wasm-test-v1'
const SHELL = ['/', '/pkg/client_wasm.js', '/pkg/client_wasm_bg.wasm']

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()))
})
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()))
self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url)
  if (event.request.method !== 'GET' || url.origin !== self.location.origin) return
  event.respondWith(caches.match(event.request, { ignoreSearch: true }).then((hit) => hit || fetch(event.request)))
})
