// The board app in headless Chromium, against the release server binary: what BENCHMARKS.md
// ("The board app in the browser") records. Prints numbers; asserts nothing.
//
//   shell     first load of an empty board with a cold cache: bytes transferred (the sum of
//             each response's encoded size, gzip as the server sends it) and time from
//             navigation to interactive (the board loaded, synced, and the first frame painted)
//   open      a board of OPEN objects (10,000) opening: from the network (a new browser
//             profile: no cache, no IndexedDB) and from IndexedDB with no network (a reload
//             offline, shell from the service worker), navigation to interactive
//   frames    a board of FRAMES objects (1,000) at 1280 × 720, every object on screen: the main
//             thread's work per frame while panning (hand tool) and while dragging an object,
//             with real pointer input (Chromium's input pipeline through CDP). A frame's work
//             is measured from its first input event (or its animation-frame callback, if
//             earlier) to the end of its rendering (a message posted from requestAnimationFrame
//             runs after style, layout and paint); also the intervals between frames.
//
// Usage: scripts/bench-app.sh     Env: OPEN=10000 FRAMES=1000 RUNS=3 MOVES=300
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startServer, Y } from '../interop/harness.mjs'
import { launchBrowser } from '../browser/harness.mjs'

const OPEN = Number(process.env.OPEN || 10000)
const FRAMES = Number(process.env.FRAMES || 1000)
const RUNS = Number(process.env.RUNS || 3)
const MOVES = Number(process.env.MOVES || 300)
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))] }
const median = (xs) => pct(xs, 0.5)
const ms = (x) => `${x.toFixed(1)} ms`

const dir = await mkdtemp(path.join(tmpdir(), 'bench-app-'))
const server = await startServer(`sqlite://${dir}/boards.db`)
const browser = await launchBrowser()
const VIEW = { viewport: { width: 1280, height: 720 } }

/** A board of `n` objects, written with plain yjs and imported with `POST /v1/boards?id=`. */
async function makeBoard (name, n, { cols = 100, step = 30, size = 25 } = {}) {
  const doc = new Y.Doc()
  const objects = doc.getMap('objects')
  const kinds = ['sticky', 'rect', 'ellipse', 'sticky', 'text']
  doc.transact(() => {
    for (let i = 0; i < n; i++) {
      const o = new Y.Map()
      objects.set(`o${String(i).padStart(5, '0')}`, o)
      o.set('kind', kinds[i % kinds.length]); o.set('pos', [(i % cols) * step, Math.floor(i / cols) * step]); o.set('size', [size, size])
      o.set('z', `a${String(i).padStart(5, '0')}`); o.set('color', ['#fff59d', '#90caf9', '#a5d6a7', '#ffcc80'][i % 4])
      o.set('created_by', 'bench'); o.set('created_at', 1)
      const t = new Y.Text(); o.set('text', t); t.insert(0, `note ${i}`)
    }
  })
  const body = Y.encodeStateAsUpdate(doc)
  const res = await fetch(`${server.httpUrl}/v1/boards?id=${name}`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } })
  if (res.status !== 201) throw new Error(`import ${name}: ${res.status} ${await res.text()}`)
  return { name, bytes: body.length }
}

/** Navigates `page` to `url` and resolves to ms from navigation start to interactive. */
async function interactive (page, url, online = true) {
  await page.goto(url)
  return page.evaluate(async (online) => {
    await new Promise((resolve) => {
      const check = () => (window.boardApp?.ready && (!online || window.boardApp.client.status().state === 'online')) ? resolve() : setTimeout(check, 2)
      check()
    })
    await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))
    return performance.now()
  }, online)
}

try {
  // --- shell ----------------------------------------------------------------------------
  {
    const rows = []
    for (let i = 0; i < RUNS; i++) {
      const ctx = await browser.newContext(VIEW)
      const page = await ctx.newPage()
      const cdp = await ctx.newCDPSession(page)
      await cdp.send('Network.enable')
      const sizes = new Map()
      cdp.on('Network.loadingFinished', (e) => sizes.set(e.requestId, e.encodedDataLength))
      const t = await interactive(page, `${server.httpUrl}/b/shell-${i}`)
      await page.waitForTimeout(300)
      const bytes = [...sizes.values()].reduce((a, b) => a + b, 0)
      rows.push({ t, bytes, requests: sizes.size })
      await ctx.close()
    }
    console.log(`app shell, first load (cold cache, empty board): ${rows[0].requests} requests, ${rows[0].bytes} bytes transferred (${(rows[0].bytes / 1024).toFixed(1)} KiB, HTTP headers included); time to interactive median ${ms(median(rows.map(r => r.t)))} (runs: ${rows.map(r => ms(r.t)).join(', ')})`)
  }

  // --- open -----------------------------------------------------------------------------
  {
    const big = await makeBoard(`open-${Date.now()}`, OPEN)
    const net = []; const idb = []
    for (let i = 0; i < RUNS; i++) {
      const ctx = await browser.newContext(VIEW)
      const page = await ctx.newPage()
      net.push(await interactive(page, `${server.httpUrl}/b/${big.name}`))
      await page.evaluate(() => window.boardApp.client.flushed())
      await page.evaluate(() => navigator.serviceWorker.ready)
      await ctx.setOffline(true)
      const page2 = await ctx.newPage()
      await page.close()
      idb.push(await interactive(page2, `${server.httpUrl}/b/${big.name}`, false))
      const n = await page2.evaluate(() => window.boardApp.scene.items.size)
      if (n !== OPEN) throw new Error(`opened offline with ${n} objects`)
      await ctx.close()
    }
    console.log(`open a ${OPEN}-object board (${big.bytes} bytes as a Yjs update), navigation to interactive: from the network median ${ms(median(net))} (runs: ${net.map(ms).join(', ')}); from IndexedDB offline median ${ms(median(idb))} (runs: ${idb.map(ms).join(', ')})`)
  }

  // --- frames ---------------------------------------------------------------------------
  {
    // 1,000 objects in 40 columns of 30 px cells (1,200 × 750 px): fitted to the view, every
    // object is on screen and drawn as an element (the zoom stays above the canvas threshold).
    const board = await makeBoard(`frames-${Date.now()}`, FRAMES, { cols: 40, step: 30, size: 26 })
    const ctx = await browser.newContext(VIEW)
    const page = await ctx.newPage()
    await interactive(page, `${server.httpUrl}/b/${board.name}`)
    await page.evaluate(() => {
      // Frame instrumentation (see the header).
      const ch = new MessageChannel()
      window.frameStats = { work: [], intervals: [], on: false }
      let first = null; let lastRaf = null
      addEventListener('pointermove', () => { if (first === null) first = performance.now() }, { capture: true })
      const loop = (ts) => {
        const start = Math.min(first ?? Infinity, performance.now())
        if (window.frameStats.on && lastRaf !== null) window.frameStats.intervals.push(ts - lastRaf)
        lastRaf = ts
        first = null
        ch.port2.postMessage(start)
        requestAnimationFrame(loop)
      }
      ch.port1.onmessage = (e) => { if (window.frameStats.on) window.frameStats.work.push(performance.now() - e.data) }
      requestAnimationFrame(loop)
    })
    const shown = await page.evaluate(() => {
      const r = window.boardApp.viewport.getBoundingClientRect()
      let n = 0
      for (const [, { el }] of window.boardApp.scene.items) {
        const b = el.getBoundingClientRect()
        if (b.right > r.left && b.left < r.right && b.bottom > r.top && b.top < r.bottom) n++
      }
      return n
    })
    const measure = async (label, drive) => {
      const out = []
      for (let i = 0; i < RUNS; i++) {
        await page.evaluate(() => { window.frameStats.work = []; window.frameStats.intervals = []; window.frameStats.on = true })
        await drive(i)
        await page.evaluate(() => { window.frameStats.on = false })
        out.push(await page.evaluate(() => window.frameStats))
      }
      const work = out.flatMap(o => o.work)
      const iv = out.flatMap(o => o.intervals)
      console.log(`${label} on a ${FRAMES}-object board (${shown} objects on screen), ${work.length} frames: work per frame p50 ${ms(pct(work, 0.5))}, p95 ${ms(pct(work, 0.95))}, p99 ${ms(pct(work, 0.99))}, max ${ms(Math.max(...work))}; interval between frames p50 ${ms(pct(iv, 0.5))}, p95 ${ms(pct(iv, 0.95))}`)
    }
    const vp = await page.evaluate(() => { const r = window.boardApp.viewport.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2] })
    await page.keyboard.press('h')
    await measure('panning', async (i) => {
      await page.mouse.move(vp[0], vp[1]); await page.mouse.down()
      const dir = i % 2 ? -1 : 1
      for (let k = 1; k <= MOVES; k++) await page.mouse.move(vp[0] + dir * 200 * Math.sin(k / 20), vp[1] + dir * 100 * Math.sin(k / 30))
      await page.mouse.up()
    })
    await page.keyboard.press('v')
    /** Presses on object `id` and drags it (and whatever is selected with it) MOVES times. */
    const dragFrom = async (id) => {
      const c = await page.evaluate((id) => {
        const r = window.boardApp.scene.element(id).getBoundingClientRect()
        return [r.left + r.width / 2, r.top + r.height / 2]
      }, id)
      await page.mouse.move(c[0], c[1]); await page.mouse.down()
      for (let k = 1; k <= MOVES; k++) await page.mouse.move(c[0] + 250 * Math.sin(k / 25), c[1] + 150 * Math.sin(k / 35))
      await page.mouse.up()
    }
    await measure('dragging an object', () => dragFrom('o00420'))
    await page.evaluate(() => window.boardApp.interaction.select([...window.boardApp.scene.items.keys()].filter((id, i) => i % 10 === 0)))
    await measure('dragging 100 selected objects', () => dragFrom('o00000'))
    await ctx.close()
  }
} finally {
  await browser.close()
  await server.stop()
}
