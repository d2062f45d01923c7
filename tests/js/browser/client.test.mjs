// client-wasm in headless Chromium against the real server binary, with a plain yjs +
// y-websocket client in Node on the same boards. Screenshots go to target/browser-screenshots/.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import http from 'node:http'
import { withHarness, boardId, waitFor, Y, SERVER_BIN } from '../interop/harness.mjs'
import { startStatic, launchBrowser, openPage, screenshot, until } from './harness.mjs'

let web, browser
before(async () => {
  web = await startStatic()
  browser = await launchBrowser()
})
after(async () => {
  await browser?.close()
  await web?.close()
})

/** Opens a client in `page` as `window.c`. */
async function openClient (page, options) {
  await page.evaluate(async (o) => { window.c = await window.lib.open(o) }, options)
  await until(page, () => window.c.status().state === 'online', null, { message: 'the client to sync' })
}

const sticky = (id, x, text) => ({
  op: 'create', id, kind: 'sticky', pos: [x, 40], size: [160, 120], text, created_by: 'test', created_at: 1
})

/** Adds a sticky through plain Yjs, as any y-websocket app would. */
function yjsSticky (doc, id, x, text) {
  doc.transact(() => {
    const o = new Y.Map()
    doc.getMap('objects').set(id, o)
    o.set('kind', 'sticky')
    o.set('pos', [x, 220])
    o.set('size', [160, 120])
    o.set('z', 'a5')
    o.set('color', '#90caf9')
    const t = new Y.Text()
    o.set('text', t)
    t.insert(0, text)
  })
}

const ids = (page) => page.evaluate(() => window.c.board().objects.map(o => o.id).sort())

test('two pages and a plain yjs client converge on one board', async (t) => {
  await withHarness(t, async (h) => {
    const server = await h.startServer(await h.database('sqlite'))
    const board = boardId('browser')
    const [ctxA, ctxB] = [await browser.newContext(), await browser.newContext()]
    const [a, b] = [await openPage(ctxA, web.url), await openPage(ctxB, web.url)]
    await openClient(a, { url: server.syncUrl, board, presence: { user: { name: 'Ada', color: '#e91e63' }, cursor: { x: 300, y: 300 } } })
    await openClient(b, { url: server.syncUrl, board, presence: { user: { name: 'Bo', color: '#3f51b5' }, cursor: { x: 500, y: 320 } } })
    const node = await h.syncedClient(server, board)

    await a.evaluate((op) => window.c.apply(op), sticky('from-a', 20, 'written in page A'))
    await b.evaluate((op) => window.c.apply(op), sticky('from-b', 220, 'written in page B ✏️'))
    yjsSticky(node.doc, 'from-node', 420, 'written by plain yjs')

    const all = ['from-a', 'from-b', 'from-node']
    for (const p of [a, b]) {
      await until(p, (n) => window.c.board().objects.length === n, 3, { message: 'three objects in a page' })
      assert.deepEqual(await ids(p), all)
    }
    await waitFor(() => node.doc.getMap('objects').size === 3, { message: 'three objects in node' })
    // Text edits at UTF-16 offsets merge with concurrent typing from plain Yjs.
    await a.evaluate(() => window.c.apply({ op: 'insert_text', id: 'from-b', index: 20, text: ' + A' }))
    await waitFor(() => node.doc.getMap('objects').get('from-b').get('text').toString() === 'written in page B ✏️ + A',
      { message: 'the text edit to reach node' })
    // The change event names the objects that changed.
    const changed = await b.evaluate(() => window.c.events.filter(e => e.name === 'change' && !e.e.local).flatMap(e => e.e.objects))
    assert.ok(changed.includes('from-a') && changed.includes('from-node'), JSON.stringify(changed))
    // Presence: each page sees the other.
    await until(a, () => window.c.peers().some(p => p.state.user?.name === 'Bo'), null, { message: 'presence of Bo' })
    // Both pages and the server agree, and everything is saved.
    for (const p of [a, b]) await until(p, () => window.c.pendingEdits() === 0, null, { message: 'all saved' })
    const res = await h.fetch(server, `/v1/boards/${board}`)
    assert.equal(res.status, 200)
    const serverIds = res.json().objects.map(o => o.id).sort()
    assert.deepEqual(serverIds, all)
    const textA = await a.evaluate(() => window.c.object('from-b').text)
    assert.equal(textA, 'written in page B ✏️ + A')
    await screenshot(a, 'client-converge-page-a')
    await screenshot(b, 'client-converge-page-b')
    assert.deepEqual([...a.errors, ...b.errors], [])
    await ctxA.close()
    await ctxB.close()
  })
})

test('a board many WebSocket frames long reaches a fresh page whole', async (t) => {
  // The server sends a message over 64 KiB (this board's sync step 2 is about 1 MB) as a
  // fragmented WebSocket message; Chromium reassembles it for client-wasm.
  await withHarness(t, async (h) => {
    const server = await h.startServer(await h.database('sqlite'))
    const board = boardId('browser-large')
    const node = await h.syncedClient(server, board)
    const text = (i) => `note ${i}: ` + 'lorem ipsum dolor sit amet '.repeat(190)
    for (let i = 0; i < 200; i++) yjsSticky(node.doc, `n${String(i).padStart(3, '0')}`, (i % 20) * 40, text(i))
    const size = Y.encodeStateAsUpdate(node.doc).length
    assert.ok(size > 8 * 64 * 1024, `the board is ${size} bytes`)
    const res = await waitFor(async () => {
      const r = await h.fetch(server, `/v1/boards/${board}`)
      return r.status === 200 && r.json().objects.length === 200 ? r : null
    }, { timeout: 10000, interval: 100, message: 'the server to hold all 200 notes' })
    assert.ok(res)
    const ctx = await browser.newContext()
    const page = await openPage(ctx, web.url)
    await openClient(page, { url: server.syncUrl, board })
    await until(page, (n) => window.c.board().objects.length === n, 200, { timeout: 15000, message: 'all 200 notes in the page' })
    assert.equal(await page.evaluate(() => window.c.object('n123').text), text(123))
    await screenshot(page, 'client-large-board')
    assert.deepEqual(page.errors, [])
    await ctx.close()
  })
})

test('offline edits survive closing the page and reach everyone when back online', async (t) => {
  await withHarness(t, async (h) => {
    const server = await h.startServer(await h.database('sqlite'))
    const board = boardId('offline')
    const ctx = await browser.newContext()
    const other = await browser.newContext()
    const watcher = await openPage(other, web.url)
    await openClient(watcher, { url: server.syncUrl, board })
    let page = await openPage(ctx, web.url)
    await openClient(page, { url: server.syncUrl, board })
    await page.evaluate((op) => window.c.apply(op), sticky('online-1', 20, 'made online'))
    await until(page, () => window.c.pendingEdits() === 0, null, { message: 'the online edit saved' })

    await ctx.setOffline(true)
    await until(page, () => window.c.status().state !== 'online', null, { message: 'the page to notice it is offline' })
    await page.evaluate((op) => window.c.apply(op), sticky('offline-1', 220, 'made offline'))
    await page.evaluate(() => window.c.apply({ op: 'move', id: 'online-1', pos: [20, 300] }))
    assert.equal(await page.evaluate(() => window.c.pendingEdits()), 2)
    await page.evaluate(() => window.c.flushed())
    await page.close()

    // A new page, still offline, opens the board from IndexedDB.
    page = await openPage(ctx, web.url)
    await page.evaluate(async (o) => { window.c = await window.lib.open(o) }, { url: server.syncUrl, board })
    assert.deepEqual(await ids(page), ['offline-1', 'online-1'])
    assert.deepEqual(await page.evaluate(() => window.c.object('online-1').pos), [20, 300])
    assert.equal(await page.evaluate(() => window.c.pendingEdits()), 2, 'pending edits survive the reload')
    await page.evaluate((op) => window.c.apply(op), sticky('offline-2', 420, 'made after the reload'))
    await screenshot(page, 'client-offline-reloaded')
    const watcherIds = await ids(watcher)
    assert.deepEqual(watcherIds, ['online-1'], 'nothing offline reached anyone')

    await ctx.setOffline(false)
    await until(page, () => window.c.status().state === 'online', null, { timeout: 20000, message: 'reconnect' })
    await until(page, () => window.c.pendingEdits() === 0, null, { message: 'the offline edits saved' })
    await until(watcher, () => window.c.board().objects.length === 3, null, { message: 'the other page to get them' })
    assert.deepEqual(await page.evaluate(() => window.c.events.filter(e => e.name === 'saved').length > 0), true)
    const res = await h.fetch(server, `/v1/boards/${board}`)
    assert.deepEqual(res.json().objects.map(o => o.id).sort(), ['offline-1', 'offline-2', 'online-1'])
    await screenshot(page, 'client-offline-merged')
    await ctx.close()
    await other.close()
  })
})

test('pending edits count down to zero, and what was saved survives a SIGKILL', async (t) => {
  await withHarness(t, async (h) => {
    const db = await h.database('sqlite')
    let server = await h.startServer(db)
    const board = boardId('durable')
    const ctx = await browser.newContext()
    const page = await openPage(ctx, web.url)
    await openClient(page, { url: server.syncUrl, board })
    await page.evaluate(() => {
      window.counts = []
      window.c.on('pending', e => window.counts.push(e.count))
      for (let i = 0; i < 20; i++) {
        window.c.apply({ op: 'create', id: `n${i}`, kind: 'sticky', pos: [20 + (i % 5) * 170, 40 + Math.floor(i / 5) * 130], size: [160, 120], text: `note ${i}`, created_by: 't', created_at: 1 })
      }
    })
    await until(page, () => window.c.pendingEdits() === 0, null, { message: 'all acknowledged' })
    const counts = await page.evaluate(() => window.counts)
    assert.equal(counts[0], 1)
    assert.equal(Math.max(...counts), 20, 'each edit was pending')
    assert.equal(counts.at(-1), 0)
    assert.ok(await page.evaluate(() => window.c.events.some(e => e.name === 'saved')))

    await server.kill()
    await until(page, () => window.c.status().state !== 'online', null, { message: 'the page to see the server go' })
    server = await h.startServer(db)
    const doc = await h.fetchState(server, board)
    assert.equal(doc.getMap('objects').size, 20, 'everything reported saved is in the database')
    await screenshot(page, 'client-durable')
    await ctx.close()
  })
})

test('validation errors come back typed, and undo leaves the other page\'s edits alone', async (t) => {
  await withHarness(t, async (h) => {
    const server = await h.startServer(await h.database('sqlite'))
    const board = boardId('undo')
    const [ctxA, ctxB] = [await browser.newContext(), await browser.newContext()]
    const [a, b] = [await openPage(ctxA, web.url), await openPage(ctxB, web.url)]
    await openClient(a, { url: server.syncUrl, board, captureTimeout: 0 })
    await openClient(b, { url: server.syncUrl, board })

    const err = await a.evaluate(() => {
      try {
        window.c.apply({ op: 'create', id: 'bad id!', kind: 'sticky', pos: [NaN, 0], size: [-5, 10], color: 'purplish', created_by: 't', created_at: 1 })
        return null
      } catch (e) { return { name: e.name, issues: e.issues } }
    })
    assert.equal(err.name, 'ValidationError')
    const codes = err.issues.map(i => i.code)
    for (const code of ['invalid_id', 'not_finite', 'out_of_range', 'invalid_color']) {
      assert.ok(codes.includes(code), `${code} missing from ${JSON.stringify(err.issues)}`)
    }
    assert.equal(await a.evaluate(() => window.c.board().objects.length), 0, 'nothing written')
    const notOp = await a.evaluate(() => { try { window.c.apply({ op: 'fly' }); return null } catch (e) { return e.name } })
    assert.equal(notOp, 'TypeError')

    await a.evaluate((op) => window.c.apply(op), sticky('mine', 20, 'mine'))
    await until(b, () => window.c.object('mine') !== undefined, null, { message: 'b to see mine' })
    await b.evaluate((op) => window.c.apply(op), sticky('theirs', 220, 'theirs'))
    await b.evaluate(() => window.c.apply({ op: 'set_color', id: 'mine', color: '#a5d6a7' }))
    await until(a, () => window.c.object('theirs') !== undefined && window.c.object('mine').color === '#a5d6a7', null, { message: 'a to see theirs' })
    await a.evaluate(() => window.c.apply({ op: 'move', id: 'mine', pos: [20, 300] }))
    assert.equal(await a.evaluate(() => window.c.undo()), true)
    assert.deepEqual(await a.evaluate(() => window.c.object('mine').pos), [20, 40], 'the move was undone')
    assert.equal(await a.evaluate(() => window.c.object('mine').color), '#a5d6a7', "b's colour stays")
    assert.equal(await a.evaluate(() => window.c.undo()), true)
    assert.equal(await a.evaluate(() => window.c.object('mine')), undefined, 'the create was undone')
    await until(b, () => window.c.object('mine') === undefined, null, { message: 'the undo to reach b' })
    assert.ok(await b.evaluate(() => window.c.object('theirs') !== undefined), "b's object stays")
    assert.equal(await a.evaluate(() => window.c.redo()), true)
    await until(b, () => window.c.object('mine') !== undefined, null, { message: 'the redo to reach b' })
    await screenshot(a, 'client-undo')
    await ctxA.close()
    await ctxB.close()
  })
})

const SECRET = `browser-auth-${Math.random().toString(36).slice(2)}${Date.now()}`

/** A token from `sync-server token`, signed with SECRET. */
function mint ({ board, role, ttl }) {
  const env = { ...process.env, AUTH_SECRET: SECRET }
  delete env.AUTH_SECRET_FILE
  return execFileSync(SERVER_BIN, ['token', '--board', board, '--role', role, '--ttl', ttl], { env }).toString().trim()
}

test('an expiring token is refreshed through the callback without losing edits', async (t) => {
  await withHarness(t, async (h) => {
    const server = await h.startServer(await h.database('sqlite'), { env: { AUTH_SECRET: SECRET } })
    const board = boardId('token')
    const ctx = await browser.newContext()
    const page = await openPage(ctx, web.url)
    let minted = 0
    // The first token lives 2 s; later ones 10 min.
    await page.exposeFunction('mintToken', () => mint({ board, role: 'write', ttl: minted++ === 0 ? '2s' : '10m' }))
    await page.evaluate(async (o) => {
      window.c = await window.lib.open({ ...o, token: () => window.mintToken() })
    }, { url: server.syncUrl, board })
    await until(page, () => window.c.status().state === 'online', null, { message: 'online' })
    // Edit across the expiry: every 100 ms for 3 s.
    await page.evaluate(async () => {
      for (let i = 0; i < 30; i++) {
        window.c.apply({ op: 'create', id: `t${i}`, kind: 'sticky', pos: [20 + (i % 6) * 120, 40 + Math.floor(i / 6) * 100], size: [110, 90], text: `${i}`, created_by: 't', created_at: 1 })
        await new Promise(resolve => setTimeout(resolve, 100))
      }
    })
    await until(page, () => window.c.status().state === 'online' && window.c.pendingEdits() === 0, null, { timeout: 15000, message: 'all saved after the refresh' })
    assert.ok(minted >= 2, `the callback was asked again (${minted} tokens)`)
    const closes = await page.evaluate(() => window.c.events.filter(e => e.name === 'status' && e.e.code === 4401).length)
    assert.ok(closes >= 1, 'the server closed the expired token with 4401')
    const res = await new Promise((resolve, reject) => {
      http.get(`${server.httpUrl}/v1/boards/${board}`, { headers: { authorization: `Bearer ${mint({ board, role: 'read', ttl: '1m' })}` }, agent: false }, r => {
        const chunks = []
        r.on('data', c => chunks.push(c))
        r.on('end', () => resolve({ status: r.statusCode, json: JSON.parse(Buffer.concat(chunks).toString()) }))
      }).on('error', reject)
    })
    assert.equal(res.status, 200)
    assert.equal(res.json.objects.length, 30, 'no edit was lost across the refresh')
    await screenshot(page, 'client-token-refreshed')
    await ctx.close()
  })
})

test("a read-only token's edits are refused visibly, and it still sees others' edits", async (t) => {
  await withHarness(t, async (h) => {
    const server = await h.startServer(await h.database('sqlite'), { env: { AUTH_SECRET: SECRET } })
    const board = boardId('readonly')
    const [ctxW, ctxR] = [await browser.newContext(), await browser.newContext()]
    const [w, r] = [await openPage(ctxW, web.url), await openPage(ctxR, web.url)]
    await openClient(w, { url: server.syncUrl, board, token: mint({ board, role: 'write', ttl: '10m' }) })
    await openClient(r, { url: server.syncUrl, board, token: mint({ board, role: 'read', ttl: '10m' }) })
    assert.equal(await r.evaluate(() => window.c.status().readOnly), true)
    const refused = await r.evaluate(() => { try { window.c.apply({ op: 'create', id: 'nope', kind: 'sticky', pos: [0, 0], size: [10, 10], created_by: 't', created_at: 1 }); return null } catch (e) { return e.name } })
    assert.equal(refused, 'ReadOnlyError')
    await w.evaluate((op) => window.c.apply(op), sticky('by-writer', 20, 'the writer wrote this'))
    await until(r, () => window.c.object('by-writer') !== undefined, null, { message: 'the reader to see it' })
    assert.equal(await r.evaluate(() => window.c.object('nope')), undefined)
    await screenshot(r, 'client-read-only')
    await ctxW.close()
    await ctxR.close()
  })
})

test('a permanent refusal stops reconnecting and says why', async (t) => {
  await withHarness(t, async (h) => {
    const server = await h.startServer(await h.database('sqlite'), { env: { AUTH_SECRET: SECRET } })
    const board = boardId('refused')
    const ctx = await browser.newContext()
    const page = await openPage(ctx, web.url)
    await page.evaluate(async (o) => { window.c = await window.lib.open(o) },
      { url: server.syncUrl, board, token: mint({ board: 'some-other-board', role: 'write', ttl: '10m' }) })
    await until(page, () => window.c.status().state === 'refused', null, { message: 'refused' })
    const s = await page.evaluate(() => window.c.status())
    assert.equal(s.code, 4403)
    assert.equal(s.refused, 'forbidden')
    const connecting = () => page.evaluate(() => window.c.events.filter(e => e.name === 'status' && e.e.state === 'connecting').length)
    const before = await connecting()
    await new Promise(resolve => setTimeout(resolve, 1500))
    assert.equal(await connecting(), before, 'no retry loop after 4403')
    await screenshot(page, 'client-refused')
    await ctx.close()
  })
})

test('a full offline store is reported, and edits still reach the server', async (t) => {
  await withHarness(t, async (h) => {
    const server = await h.startServer(await h.database('sqlite'))
    const board = boardId('quota')
    const ctx = await browser.newContext()
    const page = await openPage(ctx, web.url)
    await openClient(page, { url: server.syncUrl, board })
    // Every IndexedDB write fails as it does over quota.
    await page.evaluate(() => {
      window.real = { add: IDBObjectStore.prototype.add, put: IDBObjectStore.prototype.put }
      const full = function () { throw new DOMException('the disk is full', 'QuotaExceededError') }
      IDBObjectStore.prototype.add = full
      IDBObjectStore.prototype.put = full
    })
    await page.evaluate((op) => window.c.apply(op), sticky('while-full', 20, 'written while the store was full'))
    await until(page, () => window.c.status().storageError !== null, null, { message: 'the storage error in the status' })
    const status = await page.evaluate(() => window.c.status())
    assert.match(status.storageError, /QuotaExceededError/)
    const errors = await page.evaluate(() => window.c.events.filter(e => e.name === 'error').map(e => e.e))
    assert.equal(errors[0].kind, 'storage')
    await until(page, () => window.c.pendingEdits() === 0, null, { message: 'the edit saved on the server anyway' })
    const res = await h.fetch(server, `/v1/boards/${board}`)
    assert.deepEqual(res.json().objects.map(o => o.id), ['while-full'])
    await screenshot(page, 'client-storage-full')
    // Space again: the next write clears the status.
    assert.match(await page.evaluate(() => window.c.status().storageError), /QuotaExceededError/, 'still full')
    await page.evaluate(() => Object.assign(IDBObjectStore.prototype, window.real))
    await page.evaluate((op) => window.c.apply(op), sticky('after', 220, 'written after'))
    await until(page, () => window.c.status().storageError === null, null, { message: 'the storage error cleared' })
    await ctx.close()
  })
})
