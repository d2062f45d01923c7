// client-wasm in headless Chromium: numbers, not assertions (scripts/bench-client.sh runs this).
//
//   size      gzip -9 of the .wasm and the JS glue as served;
//   open      a 10,000-object board opened from IndexedDB with the network off, to the first
//             typed view (BoardClient.open resolved and board() returned every object);
//   edit      main-thread time of one local edit (apply(): validate, transact, encode, queue the
//             IndexedDB write) on that board, and the wall time until the edit reaches
//             WebSocket.send (after its IndexedDB transaction commits);
//   remote    1,000 updates from a plain yjs client, relayed by the server: main-thread time from
//             the first frame's arrival to the 1,000th change event;
//   memory    the page's JS heap and the wasm linear memory with the 10,000-object board.
//
// PROFILE=1 also prints the functions with the most self time during the one-by-one updates
// (Chrome's sampling profiler; build without --strip-debug to see wasm function names).
import { gzipSync } from 'node:zlib'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { startServer, Y, waitFor } from '../interop/harness.mjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { startStatic, launchBrowser, openPage, PKG_DIR, screenshot } from './harness.mjs'

const OBJECTS = Number(process.env.OBJECTS || 10000)
const REMOTE = Number(process.env.REMOTE || 1000)
const EDITS = Number(process.env.EDITS || 200)
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))] }
const ms = (x) => `${x.toFixed(3)} ms`

const wasm = readFileSync(path.join(PKG_DIR, 'client_wasm_bg.wasm'))
const glue = readFileSync(path.join(PKG_DIR, 'client_wasm.js'))
const size = { wasm: wasm.length, wasmGzip: gzipSync(wasm, { level: 9 }).length, glueGzip: gzipSync(glue, { level: 9 }).length }
console.log(`size: .wasm ${size.wasm} bytes, ${size.wasmGzip} gzip; glue ${size.glueGzip} gzip; total ${size.wasmGzip + size.glueGzip} bytes gzip (${((size.wasmGzip + size.glueGzip) / 1024).toFixed(1)} KiB)`)

const dir = await mkdtemp(path.join(tmpdir(), 'bench-client-'))
// The node client sends its updates in a burst: lift its message rate.
const server = await startServer(`sqlite://${dir}/boards.db`, { args: ['--message-rate', '100000', '--message-burst', '100000'] })
const web = await startStatic()
const browser = await launchBrowser()
const board = `bench-${Date.now()}`
try {
  // A plain yjs client writes the board.
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(server.syncUrl, board, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
  await waitFor(() => provider.synced, { message: 'node client sync' })
  const objects = doc.getMap('objects')
  doc.transact(() => {
    for (let i = 0; i < OBJECTS; i++) {
      const o = new Y.Map()
      objects.set(`o${i}`, o)
      o.set('kind', 'sticky'); o.set('pos', [(i % 100) * 30, Math.floor(i / 100) * 30]); o.set('size', [25, 25])
      o.set('z', `a${i}`); o.set('color', '#ffe082')
      const t = new Y.Text(); o.set('text', t); t.insert(0, `note ${i}`)
    }
  })
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 720 } })
  let page = await openPage(ctx, web.url)
  await page.evaluate(async (o) => { window.c = await window.lib.open(o) }, { url: server.syncUrl, board })
  await page.waitForFunction((n) => window.c.status().state === 'online' && window.c.board().objects.length === n, OBJECTS, { timeout: 60000 })
  await page.evaluate(() => window.c.flushed())
  await page.close()

  // open: offline, from IndexedDB.
  await ctx.setOffline(true)
  const opens = []
  for (let i = 0; i < 3; i++) {
    page = await openPage(ctx, web.url)
    opens.push(await page.evaluate(async (o) => {
      const t0 = performance.now()
      window.c = await window.lib.BoardClient.open(o)
      const t1 = performance.now()
      const n = window.c.board().objects.length
      const t = performance.now() - t0
      if (n !== o.expect) throw new Error(`opened ${n} objects`)
      return { t, open: t1 - t0, board: t - (t1 - t0) }
    }, { url: server.syncUrl, board, expect: OBJECTS }))
    if (i < 2) { await page.evaluate(() => window.c.close()); await page.close() }
  }
  console.log(`open ${OBJECTS} objects from IndexedDB, offline, to the first typed view: median ${ms(median(opens.map(o => o.t)))} (runs: ${opens.map(o => `${ms(o.t)} = open ${ms(o.open)} + board() ${ms(o.board)}`).join(', ')})`)
  await page.evaluate(() => window.c.close())
  await page.close()
  await ctx.setOffline(false)

  // edit: main-thread time of apply(), and wall time to WebSocket.send.
  page = await openPage(ctx, web.url)
  await page.evaluate(() => {
    // Time spent in the client's message handler (it delivers change events synchronously).
    window.busy = 0
    const desc = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage')
    Object.defineProperty(WebSocket.prototype, 'onmessage', {
      configurable: true,
      get () { return desc.get.call(this) },
      set (fn) {
        desc.set.call(this, fn && ((e) => {
          const t0 = performance.now()
          window.frames = (window.frames || 0) + 1
          try { return fn(e) } finally { window.busy += performance.now() - t0 }
        }))
      }
    })
    const send = WebSocket.prototype.send
    window.sends = []
    WebSocket.prototype.send = function (data) { window.sends.push(performance.now()); return send.call(this, data) }
  })
  // BoardClient.open, not the test page's lib.open: the page would re-render 10,000 boxes on
  // every event, which is the page's cost, not the client's.
  await page.evaluate(async (o) => { window.c = await window.lib.BoardClient.open(o) }, { url: server.syncUrl, board })
  await page.waitForFunction(() => window.c.status().state === 'online', null, { timeout: 30000 })
  const edit = await page.evaluate(async (n) => {
    const apply = []; const toSend = []
    for (let i = 0; i < n; i++) {
      const before = window.sends.length
      const t0 = performance.now()
      window.c.apply({ op: 'move', id: `o${i}`, pos: [i, i] })
      apply.push(performance.now() - t0)
      while (window.sends.length === before) await new Promise(resolve => setTimeout(resolve, 0))
      toSend.push(window.sends[before] - t0)
    }
    return { apply, toSend }
  }, EDITS)
  console.log(`local edit on a ${OBJECTS}-object board: apply() main thread median ${ms(median(edit.apply))}, p99 ${ms(pct(edit.apply, 0.99))}; edit to WebSocket.send (IndexedDB commit first) median ${ms(median(edit.toSend))}, p99 ${ms(pct(edit.toSend, 0.99))}`)

  // memory with the board loaded.
  const cdp = await ctx.newCDPSession(page)
  await cdp.send('HeapProfiler.collectGarbage')
  const { metrics } = await cdp.send('Performance.getMetrics').catch(async () => { await cdp.send('Performance.enable'); return cdp.send('Performance.getMetrics') })
  let heap = metrics.find(m => m.name === 'JSHeapUsedSize')?.value
  if (heap === undefined) { await cdp.send('Performance.enable'); heap = (await cdp.send('Performance.getMetrics')).metrics.find(m => m.name === 'JSHeapUsedSize').value }
  const wasmBytes = await page.evaluate(() => window.wasmMemory.buffer.byteLength)
  console.log(`memory with ${OBJECTS} objects: JS heap ${(heap / 1048576).toFixed(1)} MiB, wasm memory ${(wasmBytes / 1048576).toFixed(1)} MiB`)

  // remote: REMOTE updates from the node client, relayed by the server.
  await page.evaluate(() => {
    window.arrivals = []
    window.changeAt = []
    window.c.on('change', (e) => { if (!e.local) window.changeAt.push(performance.now()) })
  })
  const remoteRuns = []
  for (let run = 0; run < 3; run++) {
    await page.evaluate(() => { window.changeAt = []; window.busy = 0; window.frames = 0 })
    for (let i = 0; i < REMOTE; i++) objects.get(`o${i}`).set('pos', [run + 1, i])
    // The server may relay updates committed together in one frame: wait for the last value.
    await page.waitForFunction(([n, x]) => {
      const o = window.c.object(`o${n - 1}`)
      return o && o.pos[0] === x && o.pos[1] === n - 1
    }, [REMOTE, run + 1], { timeout: 60000, polling: 50 })
    remoteRuns.push(await page.evaluate(() => ({ busy: window.busy, wall: window.changeAt.at(-1) - window.changeAt[0], events: window.changeAt.length, frames: window.frames })))
  }
  // And once more, one update per frame: the node client waits a millisecond between them.
  await page.evaluate(() => { window.changeAt = []; window.busy = 0; window.frames = 0 })
  if (process.env.PROFILE) { await cdp.send('Profiler.enable'); await cdp.send('Profiler.setSamplingInterval', { interval: 50 }); await cdp.send('Profiler.start') }
  for (let i = 0; i < REMOTE; i++) {
    objects.get(`o${i}`).set('pos', [9, i])
    await new Promise(resolve => setTimeout(resolve, 1))
  }
  await page.waitForFunction((n) => { const o = window.c.object(`o${n - 1}`); return o && o.pos[0] === 9 }, REMOTE, { timeout: 60000, polling: 50 })
  const spaced = await page.evaluate(() => ({ busy: window.busy, events: window.changeAt.length, frames: window.frames }))
  if (process.env.PROFILE) {
    const { profile } = await cdp.send('Profiler.stop')
    const self = new Map()
    const dt = new Map()
    profile.samples.forEach((id, i) => dt.set(id, (dt.get(id) || 0) + (profile.timeDeltas[i] || 0)))
    for (const n of profile.nodes) {
      const k = n.callFrame.functionName || `(${n.callFrame.url.split('/').pop()})`
      self.set(k, (self.get(k) || 0) + (dt.get(n.id) || 0))
    }
    const top = [...self].filter(([k]) => k !== '(idle)' && k !== '(program)').sort((a, b) => b[1] - a[1]).slice(0, 25)
    for (const [k, us] of top) console.log(`  ${(us / 1000).toFixed(1)} ms  ${k}`)
  }
  console.log(`${REMOTE} remote updates sent one by one (${spaced.frames} frames, ${spaced.events} change events): main thread in the socket's message handler ${ms(spaced.busy)} in all, ${ms(spaced.busy / spaced.frames)} per frame`)
  const r = remoteRuns
  console.log(`${REMOTE} remote updates on a ${OBJECTS}-object board (${r.map(x => x.frames).join('/')} frames, ${r.map(x => x.events).join('/')} change events): main thread in the socket's message handler (decode, apply, store queue, change events) median ${ms(median(r.map(x => x.busy)))} (runs: ${r.map(x => ms(x.busy)).join(', ')}); first to last change event (wall, includes the server's commits) median ${ms(median(r.map(x => x.wall)))}`)
  await screenshot(page, 'bench-10k')
  provider.destroy()
} finally {
  await browser.close()
  await web.close()
  await server.stop()
}
