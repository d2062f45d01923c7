import { startStatic, launchBrowser, openPage } from './harness.mjs'
import { startServer, Y, waitFor } from '../interop/harness.mjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
const server = await startServer(`sqlite:///tmp/dbg-${Date.now()}.db`)
const web = await startStatic(); const b = await launchBrowser()
const board = 'dbg' + Date.now()
const doc = new Y.Doc()
const provider = new WebsocketProvider(server.syncUrl, board, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
await waitFor(() => provider.synced)
doc.transact(() => { for (let i = 0; i < 10000; i++) { const o = new Y.Map(); doc.getMap('objects').set(`o${i}`, o); o.set('kind', 'sticky'); o.set('pos', [i, i]); o.set('size', [25, 25]); o.set('z', `a${i}`); o.set('color', '#ffe082'); const t = new Y.Text(); o.set('text', t); t.insert(0, `note ${i}`) } })
const ctx = await b.newContext()
let p = await openPage(ctx, web.url)
await p.evaluate(async (o) => { window.c = await window.lib.BoardClient.open(o) }, { url: server.syncUrl, board })
await p.waitForFunction(() => window.c.status().state === 'online' && window.c.board().objects.length === 10000, null, { timeout: 60000 })
await p.evaluate(() => window.c.flushed()); await p.close()
await ctx.setOffline(true)
for (let i = 0; i < 3; i++) {
  p = await openPage(ctx, web.url)
  console.log(await p.evaluate(async (o) => {
    const t0 = performance.now()
    const db = await new Promise((res, rej) => { const r = indexedDB.open(`board-sync:${o.url}:${o.board}`); r.onsuccess = () => res(r.result); r.onerror = rej })
    const all = await new Promise((res) => { const r = db.transaction('log').objectStore('log').getAll(); r.onsuccess = () => res(r.result) })
    const t1 = performance.now(); db.close()
    const t2 = performance.now()
    const c = await window.lib.BoardClient.open({ ...o, connect: false })
    const t3 = performance.now()
    return { idb: t1 - t0, entries: all.length, bytes: all.reduce((n, x) => n + x.length, 0), open: t3 - t2 }
  }, { url: server.syncUrl, board }))
  await p.close()
}
await b.close(); await web.close(); await server.kill(); provider.destroy(); process.exit(0)
