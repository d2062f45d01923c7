// The board app's service worker. It keeps the app shell (the page, scripts, styles and the
// client-wasm module) of this version in the Cache API, so a board opens with no network: the
// board itself then comes from IndexedDB (client-wasm), and edits are kept there until the
// server has them.
//
// - Pages (`/`, `/b/{board}`): network first, so a new version is picked up at once; the
//   cached shell when the server cannot be reached. Every page is the same shell.
// - `/app/{version}/...`: cache first (the names carry the version, so they never change).
// - The API and the WebSocket are never cached.
const VERSION = '__APP_VERSION__'
const ASSETS = __APP_ASSETS__
const CACHE = `board-app-${VERSION}`

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(ASSETS)).then(() => self.skipWaiting()))
})

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) if (key.startsWith('board-app-') && key !== CACHE) await caches.delete(key)
    await self.clients.claim()
  })())
})

self.addEventListener('fetch', (event) => {
  const req = event.request
  const url = new URL(req.url)
  if (req.method !== 'GET' || url.origin !== self.location.origin) return
  if (url.pathname.startsWith('/app/')) {
    event.respondWith(caches.match(req, { ignoreSearch: true }).then((hit) => hit || fetch(req)))
  } else if (req.mode === 'navigate' && (url.pathname === '/' || url.pathname.startsWith('/b/'))) {
    event.respondWith((async () => {
      try {
        return await fetch(req)
      } catch (e) {
        const shell = await caches.match('/', { cacheName: CACHE })
        if (shell) return shell
        throw e
      }
    })())
  }
})
