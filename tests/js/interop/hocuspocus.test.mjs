// The Hocuspocus dialect (`/v1/hocuspocus`) with the real `@hocuspocus/provider` 4.x: providers
// share boards with y-websocket clients, one socket carries several boards apart, SyncStatus
// means committed (a stalled store keeps `unsyncedChanges` above zero, and what a provider saw
// synced survives a SIGKILL), tokens (read-only, forged, expired and refreshed through the
// provider's callback), and stateless messages both ways (HTTP included).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import { isDeepStrictEqual } from 'node:util'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import * as decoding from 'lib0/decoding'
import {
  Y, WebSocket, withHarness, waitFor, boardId, sleep, stateVector, svCoveredBy, svToString,
  SERVER_BIN, NEEDS_OUR_SERVER
} from './harness.mjs'

const TIMEOUT = 40000
const OPTS = { timeout: TIMEOUT, skip: NEEDS_OUR_SERVER }
const SECRET = `interop-hocuspocus-${randomBytes(24).toString('hex')}`

/** A token from `sync-server token`, signed with `secret`. */
function mint ({ board, role, ttl = '10m', user = 'someone', secret = SECRET }) {
  const env = { ...process.env, AUTH_SECRET: secret }
  delete env.AUTH_SECRET_FILE
  const args = ['token', '--board', board, '--role', role, '--ttl', ttl, '--user', user]
  return execFileSync(SERVER_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim()
}

const hocuspocusUrl = server => `ws://127.0.0.1:${server.port}/v1/hocuspocus`

/**
 * One provider socket (`HocuspocusProviderWebsocket`), torn down with the harness. `frames`
 * records every frame it receives, decoded as `{ name, type, value }` (SyncStatus and Auth
 * carry a value).
 */
function socket (h, server, opts = {}) {
  const ws = new HocuspocusProviderWebsocket({
    url: hocuspocusUrl(server),
    WebSocketPolyfill: WebSocket,
    // Reconnect quickly in tests (the default backoff starts at a second).
    delay: 100,
    minDelay: 100,
    maxDelay: 1000,
    ...opts
  })
  ws.frames = []
  ws.closes = []
  ws.on('message', event => ws.frames.push(decodeServerFrame(new Uint8Array(event.data))))
  ws.on('close', ({ event }) => ws.closes.push({ code: event.code, reason: event.reason }))
  h.providers.push({ provider: ws, doc: { destroy () {} } })
  return ws
}

function decodeServerFrame (bytes) {
  if (bytes.length === 1) return { type: bytes[0] }
  const dec = decoding.createDecoder(bytes)
  const name = decoding.readVarString(dec)
  const type = decoding.readVarUint(dec)
  if (type === 8) return { name, type, value: decoding.readVarUint(dec) }
  if (type === 2) return { name, type, value: decoding.readVarUint(dec) }
  return { name, type }
}

const syncStatuses = (ws, name, value) => ws.frames.filter(f => f.name === name && f.type === 8 && f.value === value).length

/**
 * A provider for `board` on socket `ws` (attached at once), recording what it is told:
 * `scopes` (authenticated), `denials` (authentication failed), `stateless` payloads.
 */
function provider (h, ws, board, { token = '', doc = new Y.Doc(), awareness } = {}) {
  const p = new HocuspocusProvider({ websocketProvider: ws, name: board, document: doc, token, awareness })
  p.scopes = []
  p.denials = []
  p.statelessReceived = []
  p.on('authenticated', ({ scope }) => p.scopes.push(scope))
  p.on('authenticationFailed', ({ reason }) => p.denials.push(reason))
  p.on('stateless', ({ payload }) => p.statelessReceived.push(payload))
  p.attach()
  h.providers.push({ provider: p, doc })
  return { doc, provider: p }
}

async function synced (c, what = 'provider') {
  await waitFor(() => c.provider.isSynced && c.provider.unsyncedChanges === 0, {
    message: `${what} to sync`,
    describe: () => `synced ${c.provider.isSynced}, unsynced ${c.provider.unsyncedChanges}, denials ${c.provider.denials}`
  })
}

const objects = c => c.doc.getMap('objects').toJSON()

/** `GET /v1/boards/{id}/state` with `Authorization: Bearer token`, applied to a fresh Y.Doc. */
function stateWith (server, board, token) {
  return new Promise((resolve, reject) => {
    const headers = { authorization: `Bearer ${token}` }
    const req = http.get(`${server.httpUrl}/v1/boards/${board}/state`, { agent: false, timeout: 5000, headers }, res => {
      const chunks = []
      res.on('data', c => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const body = Buffer.concat(chunks)
        if (res.statusCode !== 200) return reject(new Error(`GET state: ${res.statusCode} ${body}`))
        const doc = new Y.Doc()
        Y.applyUpdate(doc, new Uint8Array(body))
        resolve(doc)
      })
    })
    req.on('timeout', () => req.destroy(new Error('GET state timed out')))
    req.on('error', reject)
  })
}

test('two Hocuspocus providers and a y-websocket provider share a board: edits, offline edits, awareness', OPTS, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('hp-mixed')
  const s1 = socket(h, server)
  const s2 = socket(h, server)
  const a = provider(h, s1, board)
  const b = provider(h, s2, board)
  const w = await h.syncedClient(server, board)
  await synced(a, 'A')
  await synced(b, 'B')
  assert.deepEqual(a.provider.scopes, ['read-write'], 'open mode: read-write')

  a.doc.getMap('objects').set('from-a', 1)
  b.doc.getMap('objects').set('from-b', 2)
  w.doc.getMap('objects').set('from-w', 3)
  const all = { 'from-a': 1, 'from-b': 2, 'from-w': 3 }
  await waitFor(() => [a, b, w].every(c => isDeepStrictEqual(objects(c), all)), {
    message: 'all three to converge',
    describe: () => JSON.stringify([objects(a), objects(b), objects(w)])
  })
  assert.deepEqual(objects(a), all)

  // Awareness crosses dialects both ways.
  a.provider.awareness.setLocalStateField('user', { name: 'ada' })
  w.provider.awareness.setLocalStateField('user', { name: 'web' })
  const names = aw => [...aw.getStates().values()].map(s => s.user?.name).filter(Boolean).sort()
  await waitFor(() => JSON.stringify(names(w.provider.awareness)) === '["ada","web"]' &&
    JSON.stringify(names(b.provider.awareness)) === '["ada","web"]', {
    message: 'awareness of A and the y-websocket client everywhere',
    describe: () => JSON.stringify([names(w.provider.awareness), names(b.provider.awareness)])
  })

  // B goes offline and edits; A edits meanwhile; B comes back and everything merges.
  s2.disconnect()
  await waitFor(() => s2.status === 'disconnected', { message: 'B offline' })
  b.doc.getMap('objects').set('offline-b', 'while away')
  b.doc.getText('notes').insert(0, 'typed offline')
  a.doc.getMap('objects').set('online-a', 'meanwhile')
  await waitFor(() => objects(w)['online-a'] === 'meanwhile', { message: 'A\'s edit to reach the y-websocket client' })
  assert.equal(objects(w)['offline-b'], undefined, 'nothing of B\'s offline edits yet')
  s2.connect()
  await synced(b, 'B again')
  await waitFor(() => objects(w)['offline-b'] === 'while away' && objects(b)['online-a'] === 'meanwhile' &&
    w.doc.getText('notes').toString() === 'typed offline', {
    message: 'offline edits to merge both ways',
    describe: () => JSON.stringify([objects(b), objects(w)])
  })
  const stored = await h.fetchState(server, board)
  assert.deepEqual(stored.getMap('objects').toJSON(), objects(a))
  assert.equal(stored.getText('notes').toString(), 'typed offline')

  // A detaching clears its presence for the others.
  a.provider.destroy()
  await waitFor(() => JSON.stringify(names(w.provider.awareness)) === '["web"]', {
    message: 'A\'s presence cleared once it left',
    describe: () => JSON.stringify(names(w.provider.awareness))
  })
}))

test('a board many WebSocket frames long reaches a fresh Hocuspocus provider and a fresh y-websocket client whole', OPTS, t => withHarness(t, async h => {
  // The server writes a message over 64 KiB as a first frame and continuations (so that no
  // connection buffers a copy of a large board); unmodified clients reassemble them.
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('hp-large')
  const writer = await h.syncedClient(server, board)
  const text = Array.from({ length: 40 }, (_, i) => `${i}`.padStart(2, '0') + 'x'.repeat(20000)).join('|')
  writer.doc.getText('big').insert(0, text)
  await waitFor(() => writer.provider.synced && writer.doc.getText('big').length === text.length, { message: 'the writer to hold the text' })
  const fresh = provider(h, socket(h, server), board)
  await waitFor(() => fresh.doc.getText('big').length === text.length, { timeout: 15000, message: 'the Hocuspocus provider to receive the board', describe: () => `${fresh.doc.getText('big').length} of ${text.length}` })
  assert.equal(fresh.doc.getText('big').toString(), text)
  const reader = await h.syncedClient(server, board)
  await waitFor(() => reader.doc.getText('big').length === text.length, { timeout: 15000, message: 'the y-websocket client to receive the board' })
  assert.equal(reader.doc.getText('big').toString(), text)
}))

test('one socket carrying three boards keeps them apart, and one leaving leaves the others', OPTS, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const boards = [boardId('hp-one'), boardId('hp-two'), boardId('hp-three')]
  const ws = socket(h, server)
  const docs = boards.map(b => provider(h, ws, b))
  const watchers = await Promise.all(boards.map(b => h.syncedClient(server, b)))
  for (const d of docs) await synced(d)
  docs.forEach((d, i) => d.doc.getMap('objects').set(`only-${i}`, boards[i]))
  docs.forEach((d, i) => d.provider.awareness.setLocalStateField('user', { name: `user-${i}` }))
  await waitFor(() => watchers.every((w, i) => objects(w)[`only-${i}`] === boards[i]), { message: 'each board\'s edit on its board' })
  await waitFor(() => watchers.every((w, i) =>
    [...w.provider.awareness.getStates().values()].some(s => s.user?.name === `user-${i}`)), { message: 'each board\'s presence' })
  await sleep(200)
  watchers.forEach((w, i) => {
    assert.deepEqual(objects(w), { [`only-${i}`]: boards[i] }, `board ${i} holds its own edit only`)
    const others = [...w.provider.awareness.getStates().values()].map(s => s.user?.name).filter(n => n && n !== `user-${i}`)
    assert.deepEqual(others, [], `board ${i} shows no other board's presence`)
  })
  for (const [i, b] of boards.entries()) {
    const state = await h.fetchState(server, b)
    assert.deepEqual(state.getMap('objects').toJSON(), { [`only-${i}`]: b })
  }
  // The socket's SyncStatus messages name each board: one per document message, all 1.
  for (const b of boards) assert.ok(syncStatuses(ws, b, 1) >= 1, `SyncStatus for ${b}`)

  // The second board leaves (its provider detaches: `[name][7]`); the others carry on.
  docs[1].provider.destroy()
  await waitFor(() => ![...watchers[1].provider.awareness.getStates().values()].some(s => s.user?.name === 'user-1'),
    { message: 'the detached board\'s presence cleared' })
  docs[0].doc.getMap('objects').set('after', true)
  docs[2].doc.getMap('objects').set('after', true)
  await waitFor(() => objects(watchers[0]).after === true && objects(watchers[2]).after === true,
    { message: 'the other boards still syncing on the same socket' })
  assert.equal(ws.status, 'connected')
  assert.deepEqual(ws.closes, [], 'the socket never closed')
}))

/**
 * Holds SQLite's write lock on `db` from another process (`python3`), so the server's commits
 * wait (up to its 5 s busy timeout). Resolves once the lock is held; `release()` lets go.
 */
async function stallStore (db) {
  const file = db.replace(/^sqlite:\/\//, '')
  const script = 'import sqlite3,sys\nc=sqlite3.connect(sys.argv[1],isolation_level=None,timeout=10)\n' +
    'c.execute("BEGIN IMMEDIATE")\nprint("locked",flush=True)\nsys.stdin.read()\nc.execute("COMMIT")\n'
  const child = spawn('python3', ['-c', script, file], { stdio: ['pipe', 'pipe', 'inherit'] })
  await new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('exit', code => reject(new Error(`the lock holder exited (${code})`)))
    child.stdout.on('data', d => { if (d.toString().includes('locked')) resolve() })
  })
  const exited = new Promise(resolve => child.on('exit', resolve))
  return { release: async () => { child.stdin.end(); await exited } }
}

test('unsyncedChanges reaches zero only once edits are committed; what a provider saw synced survives a SIGKILL', OPTS, t => withHarness(t, async h => {
  const db = await h.database('sqlite')
  const server = await h.startServer(db)
  const board = boardId('hp-durable')
  const ws = socket(h, server)
  const a = provider(h, ws, board)
  await synced(a)

  // The store stalls: an edit is applied, but not committed, so it is not acknowledged.
  const lock = await stallStore(db)
  a.doc.getMap('objects').set('stalled', 'edit')
  const before = syncStatuses(ws, board, 1)
  await sleep(1500)
  assert.ok(a.provider.unsyncedChanges > 0, `unsynced while the store stalls: ${a.provider.unsyncedChanges}`)
  assert.equal(syncStatuses(ws, board, 1), before, 'no SyncStatus 1 before the commit')
  await lock.release()
  await waitFor(() => a.provider.unsyncedChanges === 0, { message: 'unsynced to reach zero once the store commits' })

  // Edits every few ms; whenever the provider reports zero unsynced changes, what its doc held
  // then must be stored. Then a SIGKILL mid-stream.
  let syncedSv = stateVector(a.doc)
  const onUnsynced = ({ number }) => { if (number === 0) syncedSv = stateVector(a.doc) }
  a.provider.on('unsyncedChanges', onUnsynced)
  let zeros = 0
  a.provider.on('unsyncedChanges', ({ number }) => { if (number === 0) zeros++ })
  let i = 0
  const writer = setInterval(() => { a.doc.getMap('objects').set(`k${i % 20}`, i); i++ }, 3)
  await waitFor(() => zeros >= 5, { timeout: 10000, message: 'the provider to report synced a few times mid-stream' })
  await sleep(300)
  await server.kill()
  clearInterval(writer)
  a.provider.off('unsyncedChanges', onUnsynced)
  const claimed = syncedSv

  const server2 = await h.startServer(db)
  const stored = stateVector(await h.fetchState(server2, board))
  assert.ok(svCoveredBy(claimed, stored),
    `everything reported synced is stored: synced ${svToString(claimed)}, stored ${svToString(stored)}`)
  assert.ok(i > 20, 'edits kept coming until the crash')
}))

async function securedServer (h, args = []) {
  return h.startServer(await h.database('sqlite'), { env: { AUTH_SECRET: SECRET }, args })
}

test('a read-only token gets readonly: its edits are refused with SyncStatus 0, its unedited replica syncs', OPTS, t => withHarness(t, async h => {
  const server = await securedServer(h)
  const board = boardId('hp-readonly')
  const writer = provider(h, socket(h, server), board, { token: mint({ board, role: 'write', user: 'w' }) })
  await synced(writer, 'the writer')
  // A deletion: every later step 2 carries it in its delete set.
  writer.doc.getMap('objects').set('gone', 1)
  writer.doc.getMap('objects').delete('gone')
  writer.doc.getMap('objects').set('kept', 'yes')
  await waitFor(() => writer.provider.unsyncedChanges === 0, { message: 'the writer\'s edits committed' })

  const ws = socket(h, server)
  const reader = provider(h, ws, board, { token: mint({ board, role: 'read', user: 'r' }) })
  await waitFor(() => reader.provider.scopes.length > 0, { message: 'the reader authenticated' })
  assert.deepEqual(reader.provider.scopes, ['readonly'])
  // Its replica holds nothing the board lacks (the deletion included): synced, zero unsynced.
  await synced(reader, 'the reader')
  assert.deepEqual(objects(reader), { kept: 'yes' })

  reader.doc.getMap('objects').set('sneaky', 'edit')
  await waitFor(() => syncStatuses(ws, board, 0) >= 1, { message: 'SyncStatus 0 for the refused edit' })
  assert.ok(reader.provider.unsyncedChanges > 0, 'the refused edit stays unsynced')
  writer.doc.getMap('objects').set('later', 1)
  await waitFor(() => objects(reader).later === 1, { message: 'the reader still receives live edits' })
  assert.equal(objects(writer).sneaky, undefined, 'the writer never sees the refused edit')
  const stored = await stateWith(server, board, mint({ board, role: 'read' }))
  assert.equal(stored.getMap('objects').get('sneaky'), undefined, 'the board never holds it')
  assert.deepEqual(reader.provider.denials, [], 'refused edits are not a denial of the document')
}))

test('forged, missing and other-board tokens get PermissionDenied; the socket\'s other documents carry on', OPTS, t => withHarness(t, async h => {
  const server = await securedServer(h)
  const board = boardId('hp-denied')
  const other = boardId('hp-other')
  const ws = socket(h, server)
  const good = provider(h, ws, board, { token: mint({ board, role: 'write' }) })
  const forged = provider(h, ws, boardId('hp-forged'), { token: mint({ board: '*', role: 'admin', secret: 'not-the-server-secret-0123456789abcdef' }) })
  const missing = provider(h, ws, boardId('hp-missing'))
  const elsewhere = provider(h, ws, other, { token: mint({ board, role: 'write' }) })
  await synced(good, 'the document with a good token')
  await waitFor(() => forged.provider.denials.length && missing.provider.denials.length && elsewhere.provider.denials.length,
    { message: 'the three denials' })
  assert.deepEqual(forged.provider.denials, ['invalid token'])
  assert.deepEqual(missing.provider.denials, ['token required'])
  assert.deepEqual(elsewhere.provider.denials, ['the token does not cover this board'])
  assert.deepEqual([forged, missing, elsewhere].map(c => c.provider.scopes), [[], [], []])
  // Their edits go nowhere; the good document still syncs on the same socket.
  forged.doc.getMap('objects').set('x', 1)
  good.doc.getMap('objects').set('fine', true)
  await waitFor(() => good.provider.unsyncedChanges === 0, { message: 'the good document\'s edit committed' })
  const stored = await stateWith(server, board, mint({ board, role: 'read' }))
  assert.equal(stored.getMap('objects').get('fine'), true)
  const res = await h.fetch(server, '/v1/boards/hp-forged')
  assert.equal(res.status, 401, 'nothing else is open without a token either')
  assert.deepEqual(ws.closes, [], 'the socket stayed open')
}))

test('a token about to expire is refreshed through the provider\'s callback; one that is not expires', OPTS, t => withHarness(t, async h => {
  const server = await securedServer(h)
  const board = boardId('hp-refresh')
  let calls = 0
  const token = () => {
    calls++
    // The first token lives 3 s; the server asks for a fresh one ahead of its expiry.
    return mint({ board, role: 'write', ttl: calls === 1 ? '3s' : '1h' })
  }
  const a = provider(h, socket(h, server), board, { token })
  await synced(a)
  await sleep(4500)
  assert.ok(calls >= 2, `the callback was asked again (${calls} calls)`)
  a.doc.getMap('objects').set('after-expiry', 'still writing')
  await waitFor(() => a.provider.unsyncedChanges === 0, { message: 'an edit after the first token\'s expiry committed' })
  const stored = await stateWith(server, board, mint({ board, role: 'read' }))
  assert.equal(stored.getMap('objects').get('after-expiry'), 'still writing')
  assert.deepEqual(a.provider.denials, [])

  // A fixed token that expires: PermissionDenied `token expired`, and the socket (with no
  // other document) closes with 4401.
  const ws = socket(h, server)
  const fixed = provider(h, ws, board, { token: mint({ board, role: 'write', ttl: '2s' }) })
  let deniedBeforeClose
  ws.on('close', () => { deniedBeforeClose ??= [...fixed.provider.denials] })
  await synced(fixed, 'the fixed-token provider')
  await waitFor(() => ws.closes.some(c => c.code === 4401), { timeout: 6000, message: 'the socket closed with 4401', describe: () => JSON.stringify(ws.closes) })
  assert.deepEqual(deniedBeforeClose, ['token expired'], 'the denial arrives before the close')
}))

test('stateless messages: provider to provider, HTTP to providers', OPTS, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('hp-stateless')
  const a = provider(h, socket(h, server), board)
  const b = provider(h, socket(h, server), board)
  const w = await h.syncedClient(server, board)
  await synced(a)
  await synced(b)
  a.provider.sendStateless(JSON.stringify({ hello: 'from a' }))
  await waitFor(() => b.provider.statelessReceived.length === 1, { message: 'B to receive A\'s stateless message' })
  assert.deepEqual(b.provider.statelessReceived, ['{"hello":"from a"}'])

  const res = await h.request(server, 'POST', `/v1/boards/${board}/stateless`, { body: 'from the server', contentType: 'text/plain' })
  assert.equal(res.status, 200, res.text())
  assert.deepEqual(res.json(), { delivered: 2 })
  await waitFor(() => a.provider.statelessReceived.includes('from the server') && b.provider.statelessReceived.includes('from the server'),
    { message: 'both providers to receive the server\'s message' })
  assert.deepEqual(a.provider.statelessReceived, ['from the server'], 'a sender does not get its own message back')
  // The y-websocket client is untouched by them (it has no such message) and still syncs.
  w.doc.getMap('objects').set('w', 1)
  await waitFor(() => objects(a).w === 1, { message: 'the y-websocket client still syncing' })
  const idle = await h.request(server, 'POST', `/v1/boards/${boardId('hp-nobody')}/stateless`, { body: 'x', contentType: 'text/plain' })
  assert.equal(idle.status, 404, 'a board that does not exist')
}))
