// The board app (client-wasm/app) as sync-server serves it, in headless Chromium: two people on
// one board, offline and back, the assistant, history and restore, tokens and roles, the list of
// boards. Every step is driven through the interface (pointer and keyboard), and every
// screenshot (target/browser-screenshots/app-*.png) is checked not to be blank.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { readFile, readdir } from 'node:fs/promises'
import path from 'node:path'
import { withHarness, boardId, SERVER_BIN, Y, REPO_ROOT } from '../interop/harness.mjs'
import { FakeLlm, FAKE_KEY, FAKE_MODEL, call, toolReply, textReply } from '../interop/fake-llm.mjs'
import { launchBrowser, until, openBoard, ready, shot, rows, serverRows, screenPoint, objectCenter, objectIds, saved, watch } from './harness.mjs'

let browser
before(async () => { browser = await launchBrowser() })
after(async () => { await browser?.close() })

const OPTS = { timeout: 120000 }

/** Creates an object with the tool `kind` by a click (default size) at board point `p`. */
async function draw (page, kind, p, to) {
  await page.click(`.rail [data-tool=${kind}]`)
  const [x, y] = await screenPoint(page, p)
  await page.mouse.move(x, y)
  await page.mouse.down()
  if (to) {
    const [x2, y2] = await screenPoint(page, to)
    await page.mouse.move(x2, y2, { steps: 5 })
  }
  await page.mouse.up()
  return page.evaluate(() => [...window.boardApp.selection][0])
}

const textOf = (page, id) => page.evaluate((id) => window.boardApp.client.object(id)?.text ?? null, id)

test('two people draw, move and type on one board and converge with the server', OPTS, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('app')
  const a = await openBoard(await browser.newContext(), server, board, { name: 'Ada' })
  const b = await openBoard(await browser.newContext(), server, board, { name: 'Bo' })

  // Ada draws a sticky note and types into it.
  const note = await draw(a, 'sticky', [200, 150])
  assert.ok(note, 'a sticky note is created and selected')
  await until(a, () => document.activeElement?.classList.contains('editor'), null, { message: 'the new note to be in editing' })
  await a.keyboard.type('Plan the launch')
  await a.keyboard.press('Escape')
  await until(b, (id) => window.boardApp.client.object(id)?.text === 'Plan the launch', note, { message: 'the note to reach Bo' })
  // Bo draws a rectangle by dragging, an ellipse, and a connector from the note to the rectangle.
  const rect = await draw(b, 'rect', [500, 100], [700, 220])
  const ellipse = await draw(b, 'ellipse', [600, 420])
  const [nx, ny] = await objectCenter(b, note)
  const [rx, ry] = await objectCenter(b, rect)
  await b.click('.rail [data-tool=connector]')
  await b.mouse.move(nx, ny); await b.mouse.down(); await b.mouse.move(rx, ry, { steps: 6 }); await b.mouse.up()
  const connector = await b.evaluate(() => [...window.boardApp.selection][0])
  const c = await b.evaluate((id) => window.boardApp.client.object(id), connector)
  assert.deepEqual([c.kind, c.from, c.to], ['connector', note, rect])
  const rectObj = await b.evaluate((id) => window.boardApp.client.object(id), rect)
  assert.deepEqual(rectObj.size.map(Math.round), [200, 120], 'the rectangle has the dragged size')
  // Bo colours the ellipse.
  await b.mouse.click(...await objectCenter(b, ellipse))
  await b.click('.context [data-color="#90caf9"]')
  await until(a, (id) => window.boardApp.client.object(id)?.color === '#90caf9', ellipse, { message: 'the colour to reach Ada' })
  await shot(a, 'app-1-drawn')

  // Ada drags the note: Bo sees it move before the drop, with the connector following.
  const [sx, sy] = await objectCenter(a, note)
  const start = await a.evaluate((id) => window.boardApp.client.object(id).pos, note)
  await a.mouse.move(sx, sy)
  await a.mouse.down()
  await a.mouse.move(sx + 150, sy + 200, { steps: 12 })
  const seen = await until(b, ([id, x, y]) => {
    const g = window.boardApp.scene.geom(id)
    return Math.abs(g.pos[0] - x) < 2 && Math.abs(g.pos[1] - y) < 2 && window.boardApp.scene.overrides.has(id) && g.pos
  }, [note, start[0] + 150, start[1] + 200], { message: 'Bo to see the drag before the drop' })
  assert.ok(seen)
  const line = await b.evaluate((id) => window.boardApp.scene.element(id).querySelector('.line').getAttribute('y1'), connector)
  assert.ok(Number(line) > start[1] + 200, `the connector follows the dragged note (y1 ${line})`)
  await shot(b, 'app-2-drag-seen-by-other-before-drop')
  await a.mouse.up()
  await until(b, ([id, x]) => Math.abs(window.boardApp.client.object(id).pos[0] - x) < 2 && !window.boardApp.scene.overrides.has(id), [note, start[0] + 150], { message: 'the drop to reach the document' })

  // Both type into the note at once: Ada at the end, Bo at the start. Both carets stay put.
  for (const [page, key] of [[a, 'End'], [b, 'Home']]) {
    await page.mouse.dblclick(...await objectCenter(page, note))
    await until(page, () => document.activeElement?.classList.contains('editor'), null, { message: 'the editor' })
    await page.keyboard.press(`Control+${key}`)
  }
  await Promise.all([a.keyboard.type(' this week', { delay: 40 }), b.keyboard.type('Q1: ', { delay: 55 })])
  const merged = 'Q1: Plan the launch this week'
  for (const page of [a, b]) await until(page, ([id, text]) => window.boardApp.client.object(id).text === text && document.activeElement.value === text, [note, merged], { message: 'the merged text' })
  assert.equal(await a.evaluate(() => document.activeElement.selectionStart), merged.length, 'Ada\'s caret stays at the end')
  assert.equal(await b.evaluate(() => document.activeElement.selectionStart), 4, 'Bo\'s caret stays after what he typed')
  await shot(a, 'app-3-typed-together')
  for (const page of [a, b]) await page.keyboard.press('Escape')

  // Ada sends the note to the back: it paints first on Bo's page too.
  await a.mouse.click(...await objectCenter(a, note))
  await a.keyboard.press('[')
  await until(b, (id) => window.boardApp.scene.layer.firstElementChild?.dataset.id === id, note, { message: 'the note at the back on Bo\'s page' })

  // Ada's cursor and name are shown to Bo.
  await a.mouse.move(300, 300)
  await until(b, () => [...document.querySelectorAll('.cursor .name')].some(n => n.textContent === 'Ada' && !n.parentElement.hidden), null, { message: 'Ada\'s cursor on Bo\'s page' })

  // Delete with the keyboard, undo brings it back; everything converges with the server.
  await a.mouse.click(...await objectCenter(a, ellipse))
  await a.keyboard.press('Delete')
  await until(b, (id) => !window.boardApp.client.object(id), ellipse, { message: 'the delete to reach Bo' })
  await a.keyboard.press('Control+z')
  await until(b, (id) => !!window.boardApp.client.object(id), ellipse, { message: 'the undo to reach Bo' })
  for (const page of [a, b]) await saved(page)
  const expected = await serverRows(server, board)
  assert.equal(expected.length, 4)
  assert.deepEqual(await rows(a), expected)
  assert.deepEqual(await rows(b), expected)
  await shot(b, 'app-4-converged')
  assert.deepEqual([...a.errors, ...b.errors], [])
}))

test('offline: edits go on, survive a reload with no network, and merge when back', OPTS, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('app-offline')
  const ctx = await browser.newContext()
  const a = await openBoard(ctx, server, board, { name: 'Ada' })
  const watcher = await openBoard(await browser.newContext(), server, board, { name: 'Bo' })
  const first = await draw(a, 'sticky', [100, 100])
  await a.keyboard.type('online'); await a.keyboard.press('Escape')
  await saved(a)
  // The service worker has the app shell before going offline.
  assert.equal(await a.evaluate(() => navigator.serviceWorker.ready.then((r) => r.active?.state)), 'activated')

  await ctx.setOffline(true)
  await until(a, () => document.querySelector('.statusbar .conn').dataset.state === 'offline', null, { message: '"Offline" in the status bar' })
  const offline1 = await draw(a, 'sticky', [350, 100])
  await a.keyboard.type('made offline'); await a.keyboard.press('Escape')
  await until(a, () => /^\d+ changes? not yet saved$/.test(document.querySelector('.statusbar .saved').textContent), null, { message: '"N changes not yet saved"' })
  await shot(a, 'app-5-offline-unsaved')

  // A reload with no network: the shell from the service worker, the board from IndexedDB.
  await a.reload()
  await ready(a, false)
  assert.deepEqual(await objectIds(a), [first, offline1].sort())
  assert.equal(await textOf(a, offline1), 'made offline')
  const offline2 = await draw(a, 'rect', [350, 400])
  assert.match(await a.locator('.statusbar .saved').textContent(), /^\d+ changes? not yet saved$/)
  await shot(a, 'app-6-offline-reloaded')
  assert.deepEqual(await objectIds(watcher), [first], 'nothing made offline reached anyone')

  await ctx.setOffline(false)
  await saved(a)
  await until(a, () => document.querySelector('.statusbar .conn').dataset.state === 'online', null, { message: '"Online"' })
  await until(watcher, (n) => window.boardApp.client.board().objects.length === n, 3, { message: 'the offline edits to reach Bo' })
  const expected = await serverRows(server, board)
  assert.deepEqual(expected.map(r => r[0]), [first, offline1, offline2].sort())
  assert.deepEqual(await rows(a), expected)
  assert.deepEqual(await rows(watcher), expected)
  await shot(a, 'app-7-back-online-saved')
  assert.deepEqual([...a.errors, ...watcher.errors], [])
}))

const NOTES = [
  { text: 'Went well: demo day', x: 100, y: 120, color: 'yellow' },
  { text: 'To improve: flaky CI', x: 360, y: 120, color: 'pink' },
  { text: 'Action: pin deps', x: 620, y: 120, color: 'blue' }
]

test('an assistant run appears live on both pages and is undone from the panel', OPTS, t => withHarness(t, async h => {
  const fake = await FakeLlm.start({
    delayMs: 300,
    script: [
      toolReply([call('call_1', 'getBoardState', { region: null })]),
      ...NOTES.map((n, i) => toolReply([call(`call_${i + 2}`, 'createStickyNote', { text: n.text, x: n.x, y: n.y, color: n.color, frame: null })])),
      textReply('Added three notes for the retro.', { textPieces: 3 })
    ]
  })
  t.after(() => fake.close())
  const server = await h.startServer(await h.database('sqlite'), { env: { OPENAI_BASE_URL: fake.baseUrl, OPENAI_API_KEY: FAKE_KEY, ASSISTANT_MODEL: FAKE_MODEL } })
  const board = boardId('app-ai')
  const a = await openBoard(await browser.newContext(), server, board, { name: 'Ada' })
  const b = await openBoard(await browser.newContext(), server, board, { name: 'Bo' })
  const mine = await draw(b, 'sticky', [100, 500])
  await b.keyboard.type('kept'); await b.keyboard.press('Escape')

  await a.click('[data-panel=assistant]')
  await a.fill('.assistant .prompt', 'lay out a retro board')
  await a.click('.assistant [data-action=run]')
  // Live: the first note is on Bo's page, and the assistant is shown as a participant, while
  // the run still works.
  await until(b, () => window.boardApp.client.board().objects.some(o => o.text === 'Went well: demo day'), null, { message: 'the first note on Bo\'s page' })
  await until(b, () => document.querySelector('.people .avatar.assistant') !== null, null, { message: 'the assistant among the people' })
  assert.equal(await a.locator('.assistant [data-action=cancel]').isVisible(), true, 'the run is still working')
  await shot(b, 'app-8-assistant-live')
  await until(a, () => document.querySelector('.assistant .progress li.done') !== null, null, { timeout: 20000, message: 'the run to end' })
  const progress = await a.locator('.assistant .progress li').allTextContents()
  assert.equal(progress.filter(l => l.startsWith('✓ createStickyNote')).length, 3, progress.join('\n'))
  assert.ok(progress.some(l => l.startsWith('completed')), progress.join('\n'))
  await until(b, () => window.boardApp.client.board().objects.length === 4 && document.querySelector('.people .avatar.assistant') === null, null, { message: 'three notes, the assistant gone' })
  await shot(a, 'app-9-assistant-done')

  await a.click('.assistant [data-action=undo-run]')
  for (const page of [a, b]) {
    await until(page, (id) => {
      const objects = window.boardApp.client.board().objects
      return objects.length === 1 && objects[0].id === id
    }, mine, { message: 'the run undone, the human note kept' })
  }
  await shot(b, 'app-10-assistant-undone')
  assert.deepEqual([...a.errors, ...b.errors], [])
}))

test('without a model service the assistant panel says so', OPTS, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const a = await openBoard(await browser.newContext(), server, boardId('app-no-ai'))
  await a.click('[data-panel=assistant]')
  await a.fill('.assistant .prompt', 'anything')
  await a.click('.assistant [data-action=run]')
  await until(a, () => !document.querySelector('.assistant .notice').hidden, null, { message: 'the notice' })
  assert.match(await a.locator('.assistant .notice').textContent(), /not set up on this server.*OPENAI_API_KEY/)
  assert.deepEqual(a.errors, [])
}))

test('history: save a version, preview it, restore it on both pages without a reload', OPTS, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('app-history')
  const a = await openBoard(await browser.newContext(), server, board, { name: 'Ada' })
  const b = await openBoard(await browser.newContext(), server, board, { name: 'Bo' })
  await b.evaluate(() => { window.notReloaded = true })
  const v1 = await draw(a, 'sticky', [100, 100])
  await a.keyboard.type('first draft'); await a.keyboard.press('Escape')
  await saved(a)
  await a.click('[data-panel=history]')
  await a.fill('.history .save-version input', 'Draft one')
  await a.click('.history .save-version button')
  await until(a, () => [...document.querySelectorAll('.versions li .v-title')].some(e => e.textContent === 'Draft one'), null, { message: 'the version in the list' })

  // Change the board: the note goes, another comes.
  await a.mouse.click(...await objectCenter(a, v1))
  await a.keyboard.press('Delete')
  const v2 = await draw(a, 'rect', [300, 300])
  await until(b, (id) => window.boardApp.client.object(id) !== undefined && window.boardApp.client.board().objects.length === 1, v2, { message: 'the change on Bo\'s page' })

  // Preview the version (read-only), then restore it from the preview.
  await a.click('.versions li[data-kind=named] [data-action=preview]')
  await until(a, () => document.querySelector('.preview .obj.sticky')?.textContent === 'first draft', null, { message: 'the preview' })
  await shot(a, 'app-11-history-preview')
  await a.click('.preview [data-action=restore-preview]')
  for (const page of [a, b]) {
    await until(page, ([keep, gone]) => window.boardApp.client.object(keep)?.text === 'first draft' && !window.boardApp.client.object(gone), [v1, v2], { message: 'the restored board' })
  }
  assert.equal(await b.evaluate(() => window.notReloaded), true, 'Bo\'s page was not reloaded')
  assert.equal(await a.locator('.preview').count(), 0, 'the preview closes')
  await shot(b, 'app-12-restored-on-other-page')
  assert.deepEqual(await rows(b), await serverRows(server, board))
  assert.deepEqual([...a.errors, ...b.errors], [])
}))

test('export a board to a file and create a new board from it on the list page', OPTS, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('app-export')
  const ctx = await browser.newContext({ acceptDownloads: true })
  const a = await openBoard(ctx, server, board)
  const n = await draw(a, 'sticky', [100, 100])
  await a.keyboard.type('exported'); await a.keyboard.press('Escape')
  await saved(a)
  await a.click('[data-panel=history]')
  const [download] = await Promise.all([a.waitForEvent('download'), a.click('.history [data-action=export]')])
  const file = await download.path()
  assert.ok((await readFile(file)).length > 0)

  const home = watch(await ctx.newPage())
  await home.goto(`${server.httpUrl}/`)
  await until(home, () => document.documentElement.dataset.ready === 'true', null, { message: 'the list page' })
  assert.ok(await home.locator(`.board-list [data-board="${board}"]`).count() === 1, 'the board is listed')
  await shot(home, 'app-13-board-list')
  await home.setInputFiles('.create input[type=file]', { name: 'retro.yjs', mimeType: 'application/octet-stream', buffer: await readFile(file) })
  await home.waitForURL(/\/b\/retro-/)
  await ready(home)
  const imported = await home.evaluate(() => window.boardApp.board)
  assert.notEqual(imported, board)
  assert.equal(await textOf(home, n), 'exported')
  assert.deepEqual((await serverRows(server, imported)).map(r => r[3]), ['exported'])
  assert.deepEqual([...a.errors, ...home.errors], [])
}))

test('with AUTH_SECRET: a link from `sync-server token --url` opens the board; a read token is view-only', OPTS, t => withHarness(t, async h => {
  const secret = 'app-test-secret-that-is-long-enough-0123456789'
  const server = await h.startServer(await h.database('sqlite'), { env: { AUTH_SECRET: secret } })
  const board = boardId('app-auth')
  const link = (role, user) => execFileSync(SERVER_BIN, ['token', '--board', board, '--role', role, '--user', user, '--url', server.httpUrl], { env: { ...process.env, AUTH_SECRET: secret } }).toString()
    .split('\n').find(l => l.startsWith('http'))
  const writeLink = link('write', 'ada')
  assert.match(writeLink, new RegExp(`^${server.httpUrl}/b/${board}#token=`))
  const ctxW = await browser.newContext()
  const w = watch(await ctxW.newPage())
  await w.goto(writeLink)
  await ready(w)
  assert.equal(new URL(w.url()).hash, '', 'the token leaves the address bar')
  const note = await draw(w, 'sticky', [100, 100])
  await w.keyboard.type('by ada'); await w.keyboard.press('Escape')
  await saved(w)

  const r = watch(await (await browser.newContext()).newPage())
  await r.goto(link('read', 'rex'))
  await ready(r)
  await until(r, (id) => window.boardApp.client.object(id)?.text === 'by ada', note, { message: 'the reader to see the note' })
  assert.equal(await r.locator('.statusbar .mode').textContent(), 'View only')
  assert.equal(await r.locator('.rail [data-tool=sticky]').isDisabled(), true)
  // Keys and double-clicks change nothing.
  await r.mouse.dblclick(...await objectCenter(r, note))
  await r.keyboard.press('n')
  await r.mouse.click(600, 400)
  await r.keyboard.press('Delete')
  assert.equal(await r.locator('.editor').count(), 0)
  // The reader's presence is shown to the writer.
  await r.mouse.move(500, 300)
  await until(w, () => [...document.querySelectorAll('.cursor .name')].some(n => n.textContent === 'rex' || /Guest/.test(n.textContent)), null, { message: 'the reader\'s cursor on the writer\'s page' })
  await shot(r, 'app-14-read-only')
  assert.equal((await fetch(`${server.httpUrl}/v1/boards/${board}`)).status, 401, 'the API needs a token')
  assert.deepEqual(await rows(r), await serverRows(server, board, new URL(link('read', 'rex')).hash.slice('#token='.length)))
  assert.deepEqual([...w.errors, ...r.errors], [])
}))

test('a deleted board says so and stops reconnecting', OPTS, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('app-deleted')
  const a = await openBoard(await browser.newContext(), server, board)
  await draw(a, 'sticky', [100, 100])
  await saved(a)
  const res = await fetch(`${server.httpUrl}/v1/boards/${board}`, { method: 'DELETE' })
  assert.equal(res.status, 204)
  await until(a, () => !document.querySelector('.banner').hidden, null, { message: 'the refusal banner' })
  assert.match(await a.locator('.banner').textContent(), /deleted/)
  assert.equal(await a.locator('.statusbar .conn').getAttribute('data-state'), 'refused')
  await shot(a, 'app-15-deleted')
}))

test('hostile content from a plain yjs peer is shown as text, never as markup, and breaks nothing', OPTS, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('app-hostile')
  const a = await openBoard(await browser.newContext(), server, board, { name: 'Ada' })
  await a.evaluate(() => { window.alerted = false; window.alert = () => { window.alerted = true } })
  const node = await h.syncedClient(server, board)
  const markup = '<img src=x onerror="window.alerted=true"><b>bold</b>'
  node.doc.transact(() => {
    const objects = node.doc.getMap('objects')
    const add = (id, fields) => {
      const o = new Y.Map()
      objects.set(id, o)
      for (const [k, v] of Object.entries(fields)) o.set(k, v)
      return o
    }
    const n = add('markup', { kind: 'sticky', pos: [0, 0], size: [200, 120], z: 'a1', color: 'red; background-image: url(http://127.0.0.1:1/x)' })
    const t = new Y.Text(); n.set('text', t); t.insert(0, markup)
    add('weird-kind', { kind: '<script>', pos: [260, 0], size: [120, 80], z: 'a2' })
    add('bad-values', { kind: 'rect', pos: 'left', size: [-5, 1e308], rotation: 'x', z: 7 })
    add('dangling', { kind: 'connector', from: 'markup', to: 'nowhere', z: 'a3' })
    add('loop', { kind: 'connector', from: 'loop', to: 'loop', z: 'a4' })
  })
  node.provider.awareness.setLocalState({
    user: { name: markup, color: 'url(javascript:alert(1))' },
    cursor: { x: 'NaN', y: {} },
    selection: ['markup', 42, null, ...Array.from({ length: 5000 }, (_, i) => `s${i}`)],
    drag: { markup: [1e9, -1e9, 0, -3, 'x'], 'weird-kind': 'nope', __proto__: [1, 2, 3, 4] }
  })
  await until(a, () => window.boardApp.client.object('markup') && [...document.querySelectorAll('.people .avatar')].length === 2, null, { message: 'the hostile content to arrive' })
  await a.evaluate(() => window.boardApp.scene.flush())
  assert.equal(await a.locator('.obj img, .obj b, .people img, .cursor img').count(), 0, 'no markup was interpreted')
  assert.equal(await a.evaluate(() => window.boardApp.scene.element('markup').textContent), markup, 'the text is shown as text')
  assert.equal(await a.evaluate(() => window.boardApp.scene.element('markup').style.getPropertyValue('--fill')), '', 'a colour that is not a colour is ignored')
  assert.equal(await a.evaluate(() => window.boardApp.scene.overrides.size), 0, 'malformed drags are ignored')
  // The app still works: Ada draws, and it reaches the node peer.
  const mine = await draw(a, 'sticky', [400, 300])
  await a.keyboard.type('still fine'); await a.keyboard.press('Escape')
  await saved(a)
  assert.equal(node.doc.getMap('objects').get(mine)?.get('text')?.toString(), 'still fine')
  await shot(a, 'app-16-hostile-peer')
  assert.equal(await a.evaluate(() => window.alerted), false)
  assert.deepEqual(a.errors, [])
}))

test('an expired link says so, and a fresh link opened in the same tab carries on without losing edits', OPTS, t => withHarness(t, async h => {
  const secret = 'app-test-secret-that-is-long-enough-0123456789'
  const server = await h.startServer(await h.database('sqlite'), { env: { AUTH_SECRET: secret } })
  const board = boardId('app-expiry')
  const mint = (ttl) => execFileSync(SERVER_BIN, ['token', '--board', board, '--role', 'write', '--user', 'ada', '--ttl', ttl], { env: { ...process.env, AUTH_SECRET: secret } }).toString().trim().split('\n')[0]
  const page = watch(await (await browser.newContext()).newPage())
  await page.goto(`${server.httpUrl}/b/${board}#token=${mint('4s')}`)
  await ready(page)
  const before = await draw(page, 'sticky', [100, 100])
  await saved(page)
  await until(page, () => document.querySelector('.statusbar .conn').textContent === 'Link expired', null, { timeout: 15000, message: '"Link expired"' })
  assert.match(await page.locator('.banner').textContent(), /expired/)
  await shot(page, 'app-17-link-expired')
  // Opening a fresh link in the same tab reconnects; the board is editable again.
  await page.evaluate((token) => { location.hash = `#token=${token}` }, mint('1h'))
  await until(page, () => window.boardApp.client.status().state === 'online' && !window.boardApp.readOnly, null, { timeout: 15000, message: 'online again' })
  assert.equal(new URL(page.url()).hash, '')
  const after = await draw(page, 'rect', [400, 100])
  await saved(page)
  const ids = (await serverRows(server, board, mint('1h'))).map(r => r[0])
  assert.deepEqual(ids, [before, after].sort())
  assert.deepEqual(page.errors, [])
}))

test('an assistant run is cancelled from the panel', OPTS, t => withHarness(t, async h => {
  const fake = await FakeLlm.start({
    script: [
      toolReply([call('call_1', 'createStickyNote', { text: 'first', x: 0, y: 0, color: 'yellow', frame: null })]),
      textReply('Thinking about it at length, very slowly.', { textPieces: 40, delayMs: 250 }),
      textReply('never reached')
    ]
  })
  t.after(() => fake.close())
  const server = await h.startServer(await h.database('sqlite'), { env: { OPENAI_BASE_URL: fake.baseUrl, OPENAI_API_KEY: FAKE_KEY, ASSISTANT_MODEL: FAKE_MODEL } })
  const a = await openBoard(await browser.newContext(), server, boardId('app-ai-cancel'))
  await a.click('[data-panel=assistant]')
  await a.fill('.assistant .prompt', 'think hard')
  await a.click('.assistant [data-action=run]')
  await until(a, () => window.boardApp.client.board().objects.some(o => o.text === 'first'), null, { message: 'the first note' })
  // The status bar counts the assistant's note as soon as it arrives.
  assert.equal(await a.locator('.statusbar .count').textContent(), '1 object')
  await a.click('.assistant [data-action=cancel]')
  await until(a, () => document.querySelector('.assistant .progress li.done')?.textContent.startsWith('cancelled'), null, { timeout: 10000, message: 'the run cancelled' })
  assert.equal(await a.locator('.assistant [data-action=cancel]').isVisible(), false)
  assert.equal(await a.locator('.assistant [data-action=run]').isDisabled(), false, 'a new prompt can be run')
  assert.equal(await a.locator('.assistant .progress li.summary').last().textContent(), '1 tool call: 1 object created, 0 deleted')
  await shot(a, 'app-18-assistant-cancelled')
  assert.deepEqual(a.errors, [])
}))

test('the shell preloads every module of the app, so none waits for the import that names it', async () => {
  const app = path.join(REPO_ROOT, 'client-wasm/app')
  const html = await readFile(path.join(app, 'index.html'), 'utf8')
  const preloaded = [...html.matchAll(/rel="modulepreload" href="\/app\/__APP_VERSION__\/([^"]+)"/g)].map(m => m[1]).sort()
  const modules = (await readdir(path.join(app, 'js'), { recursive: true })).filter(f => f.endsWith('.js') && f !== 'main.js').map(f => `js/${f}`)
  assert.deepEqual(preloaded, ['pkg/client_wasm.js', ...modules].sort())
})
