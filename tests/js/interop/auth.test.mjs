// Tokens with unmodified y-websocket clients: a server with AUTH_SECRET refuses providers without
// a valid token with a close code y-websocket treats as final (44xx: `closed` event, no
// reconnection), lets write tokens sync, keeps read-only providers live but unable to write, and
// closes a provider whose token expires with 4401; a fresh token and `connect()` resume it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import { Y, WebSocket, withHarness, waitFor, boardId, sleep, SERVER_BIN, NEEDS_OUR_SERVER } from './harness.mjs'

const TIMEOUT = 20000
const SECRET = `interop-auth-${randomBytes(24).toString('hex')}`
const OPTS = { timeout: TIMEOUT, skip: NEEDS_OUR_SERVER }

/** A token from `sync-server token`, signed with `secret`. */
function mint ({ board, role, ttl = '10m', user, secret = SECRET }) {
  const env = { ...process.env, AUTH_SECRET: secret }
  delete env.AUTH_SECRET_FILE
  const args = ['token', '--board', board, '--role', role, '--ttl', ttl]
  if (user) args.push('--user', user)
  const token = execFileSync(SERVER_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim()
  assert.equal(token.split('.').length, 3, `a JWT: ${token}`)
  return token
}

async function securedServer (h) {
  return h.startServer(await h.database('sqlite'), { env: { AUTH_SECRET: SECRET } })
}

/**
 * A provider that records its `closed` events (y-websocket's "the server said stop") and how
 * often it started connecting. Created unconnected so that no event is missed, then connected.
 */
function watchedClient (h, server, board, params) {
  const c = h.client(server, board, { params, connect: false })
  c.closedEvents = []
  c.attempts = 0
  c.provider.on('closed', ev => c.closedEvents.push(ev))
  c.provider.on('status', ev => { if (ev.status === 'connecting') c.attempts++ })
  c.provider.connect()
  return c
}

/** A request with `Authorization: Bearer token` (if any), over a non-pooled connection. */
function authed (server, method, pathname, token) {
  return new Promise((resolve, reject) => {
    const headers = token ? { authorization: `Bearer ${token}` } : {}
    const req = http.request(server.httpUrl + pathname, { method, agent: false, timeout: 5000, headers }, res => {
      const chunks = []
      res.on('data', c => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const body = Buffer.concat(chunks)
        resolve({ status: res.statusCode, headers: res.headers, body, json: () => JSON.parse(body.toString()) })
      })
    })
    req.on('timeout', () => req.destroy(new Error(`${method} ${pathname} timed out`)))
    req.on('error', reject)
    req.end()
  })
}

/** The board as the server serves it (durable state), applied to a fresh doc. */
async function serverDoc (server, board, token) {
  const res = await authed(server, 'GET', `/v1/boards/${board}/state`, token)
  assert.equal(res.status, 200, `GET state: ${res.status} ${res.body}`)
  const doc = new Y.Doc()
  Y.applyUpdate(doc, new Uint8Array(res.body))
  return doc
}

function addNote (doc, id, text) {
  doc.transact(() => {
    const note = new Y.Map()
    doc.getMap('objects').set(id, note)
    note.set('kind', 'sticky')
    const t = new Y.Text()
    note.set('text', t)
    t.insert(0, text)
  })
}

const has = (doc, id) => doc.getMap('objects').has(id)
const ids = doc => [...doc.getMap('objects').keys()].sort()

test('a provider without a valid token is closed for good: 4401, or 4403 for another board', OPTS, t => withHarness(t, async h => {
  const server = await securedServer(h)
  const board = boardId('no-token')
  const cases = [
    { name: 'no token', params: {}, code: 4401, reason: 'token required' },
    { name: 'forged', params: { token: mint({ board, role: 'write', secret: `not-the-server-${SECRET}` }) }, code: 4401, reason: 'invalid token' },
    { name: 'garbage', params: { token: 'not-a-token' }, code: 4401, reason: 'invalid token' },
    { name: 'another board', params: { token: mint({ board: 'another-board', role: 'admin' }) }, code: 4403, reason: 'the token does not cover this board' }
  ]
  const clients = cases.map(c => ({ ...c, client: watchedClient(h, server, board, c.params) }))
  for (const c of clients) {
    await waitFor(() => c.client.closedEvents.length > 0, {
      message: `${c.name}: the 'closed' event`,
      describe: () => JSON.stringify(c.client.closes)
    })
    c.attemptsAtClose = c.client.attempts
  }
  // The harness' providers back off at most 1 s: anything retrying would have retried by now.
  await sleep(1500)
  for (const { name, client, code, reason, attemptsAtClose } of clients) {
    assert.deepEqual(client.closedEvents, [{ code, reason }], name)
    assert.equal(client.attempts, attemptsAtClose, `${name}: y-websocket does not reconnect after a 44xx close`)
    // Each attempt ends in the refusal's close code. (A 1006 before it is the lost close frame
    // of a refusal: see the raw-socket test below, which requires the code every time.)
    assert.ok(client.closes.every(c => c.code === code || c.code === 1006), `${name}: ${JSON.stringify(client.closes)}`)
    assert.deepEqual(client.closes.at(-1), { code, reason }, name)
    assert.equal(client.provider.shouldConnect, false, name)
    assert.equal(client.provider.wsconnected, false, name)
    assert.equal(client.provider.synced, false, name)
  }
  // Nothing was created or stored for them.
  const admin = mint({ board: '*', role: 'admin' })
  const res = await authed(server, 'GET', `/v1/boards/${board}`, admin)
  assert.equal(res.status, 404)
}))

test('a refused socket gets its close code even when it already sent its first messages', OPTS, t => withHarness(t, async h => {
  // y-websocket sends sync step 1 (and its awareness) the moment the socket opens. The refusal's
  // close frame must reach it all the same: a client that sees 1006 instead of 4401 reconnects
  // (with the token that cannot work) instead of stopping.
  const server = await securedServer(h)
  const codes = {}
  for (let i = 0; i < 100; i++) {
    const ws = new WebSocket(`${server.syncUrl}/refused`)
    const code = await new Promise(resolve => {
      ws.on('open', () => {
        ws.send(new Uint8Array([0, 0, 1, 0])) // sync step 1, empty state vector
        ws.send(new Uint8Array([3])) // query awareness
      })
      ws.on('error', () => {})
      ws.on('close', code => resolve(code))
    })
    codes[code] = (codes[code] || 0) + 1
  }
  assert.deepEqual(codes, { 4401: 100 }, `close codes of 100 refused sockets: ${JSON.stringify(codes)}`)
}))

test('providers with write tokens converge, and the server state needs a token to read', OPTS, t => withHarness(t, async h => {
  const server = await securedServer(h)
  const board = boardId('write')
  const a = await h.syncedClient(server, board, { params: { token: mint({ board, role: 'write', user: 'alice' }) } })
  const b = await h.syncedClient(server, board, { params: { token: mint({ board, role: 'write', user: 'bob' }) } })
  addNote(a.doc, 'from-a', 'hello from A')
  addNote(b.doc, 'from-b', 'hello from B')
  a.doc.getText('title').insert(0, 'AB')
  for (const [name, c] of [['A', a], ['B', b]]) {
    await waitFor(() => has(c.doc, 'from-a') && has(c.doc, 'from-b') && c.doc.getText('title').length === 2, {
      message: `${name} to hold both notes`,
      describe: () => JSON.stringify(c.doc.toJSON())
    })
  }
  assert.deepEqual(a.doc.toJSON(), b.doc.toJSON())

  const reader = mint({ board, role: 'read' })
  await waitFor(async () => ids(await serverDoc(server, board, reader)).length === 2, { message: 'the server to hold both notes' })
  const served = await serverDoc(server, board, reader)
  assert.deepEqual(served.getMap('objects').toJSON(), a.doc.getMap('objects').toJSON())
  assert.equal(served.getText('title').toString(), 'AB')
  const anonymous = await authed(server, 'GET', `/v1/boards/${board}/state`)
  assert.equal(anonymous.status, 401)
  assert.equal(anonymous.headers['www-authenticate'], 'Bearer')
  assert.equal(anonymous.json().error.code, 'unauthorized')
}))

test('a read-only provider receives the board live, but its edits reach nobody and it stays connected', OPTS, t => withHarness(t, async h => {
  const server = await securedServer(h)
  const board = boardId('read-only')
  const readToken = mint({ board, role: 'read', user: 'rita' })
  const writer = await h.syncedClient(server, board, { params: { token: mint({ board, role: 'write', user: 'wendy' }) } })
  addNote(writer.doc, 'w1', 'before the reader')

  const reader = watchedClient(h, server, board, { token: readToken })
  await waitFor(() => reader.provider.synced && has(reader.doc, 'w1'), { message: 'the reader to sync the board' })
  addNote(writer.doc, 'w2', 'live')
  await waitFor(() => has(reader.doc, 'w2'), { message: 'the reader to receive a live update' })

  // The reader edits: y-websocket logs the server's permission-denied message.
  const warnings = []
  const warn = console.warn
  console.warn = (...args) => { warnings.push(args.join(' ')) }
  try {
    addNote(reader.doc, 'r1', 'from the reader')
    reader.doc.getText('title').insert(0, 'READER WAS HERE')
    await waitFor(() => warnings.some(w => w.includes('Permission denied')), {
      message: 'y-websocket to log "Permission denied"',
      describe: () => JSON.stringify(warnings)
    })
  } finally {
    console.warn = warn
  }
  assert.ok(warnings.some(w => w.includes('read-only')), JSON.stringify(warnings))

  // Still connected, still receiving.
  addNote(writer.doc, 'w3', 'after the refusal')
  await waitFor(() => has(reader.doc, 'w3'), { message: 'the reader to keep receiving after a refused edit' })
  // Its own presence is allowed.
  reader.provider.awareness.setLocalStateField('user', { name: 'Rita' })
  await waitFor(() => writer.provider.awareness.getStates().get(reader.doc.clientID)?.user?.name === 'Rita', {
    message: "the writer to see the reader's presence"
  })

  // Nobody has the reader's edit: not the server (JSON and state), not a fresh client, not the writer.
  const board1 = await authed(server, 'GET', `/v1/boards/${board}`, readToken)
  assert.equal(board1.status, 200)
  const served = board1.json().objects.map(o => o.id).sort()
  assert.deepEqual(served, ['w1', 'w2', 'w3'])
  const state = await serverDoc(server, board, readToken)
  assert.deepEqual(ids(state), ['w1', 'w2', 'w3'])
  assert.equal(state.getText('title').toString(), '')
  const fresh = await h.syncedClient(server, board, { params: { token: mint({ board, role: 'read' }) } })
  assert.deepEqual(ids(fresh.doc), ['w1', 'w2', 'w3'])
  assert.equal(has(writer.doc, 'r1'), false)
  assert.equal(writer.doc.getText('title').toString(), '')

  assert.equal(reader.provider.wsconnected, true)
  assert.deepEqual(reader.closes, [])
  assert.deepEqual(reader.closedEvents, [])
  assert.equal(reader.attempts, 1)
}))

test('an expiring token closes the provider with 4401; a fresh token and connect() resync it', OPTS, t => withHarness(t, async h => {
  const server = await securedServer(h)
  const board = boardId('expiry')
  const other = await h.syncedClient(server, board, { params: { token: mint({ board, role: 'write', user: 'olga' }) } })
  const c = watchedClient(h, server, board, { token: mint({ board, role: 'write', ttl: '2s', user: 'brief' }) })
  await waitFor(() => c.provider.synced, { message: 'the short-token provider to sync' })
  addNote(c.doc, 'before', 'before expiry')
  await waitFor(() => has(other.doc, 'before'), { message: 'the other client to get the first note' })

  await waitFor(() => c.closedEvents.length > 0, {
    timeout: 5000,
    message: 'the close at the token expiry',
    describe: () => JSON.stringify(c.closes)
  })
  assert.deepEqual(c.closedEvents, [{ code: 4401, reason: 'token expired' }])
  assert.equal(c.provider.wsconnected, false)
  const attempts = c.attempts

  // Edits on both sides while it is disconnected; it does not reconnect on its own.
  addNote(c.doc, 'offline', 'made while disconnected')
  addNote(other.doc, 'while-away', 'made while it was away')
  await sleep(1500)
  assert.equal(c.attempts, attempts, 'no reconnection with the expired token')
  assert.deepEqual(c.closedEvents, [{ code: 4401, reason: 'token expired' }])
  assert.equal(has(other.doc, 'offline'), false)

  c.provider.params.token = mint({ board, role: 'write', ttl: '10m', user: 'brief' })
  c.provider.connect()
  await waitFor(() => c.provider.synced && has(c.doc, 'while-away') && has(other.doc, 'offline'), {
    message: 'both sides to have both offline edits after reconnecting',
    describe: () => JSON.stringify([ids(c.doc), ids(other.doc)])
  })
  assert.equal(c.attempts, attempts + 1)
  assert.deepEqual(c.doc.toJSON(), other.doc.toJSON())
  const state = await serverDoc(server, board, mint({ board, role: 'read' }))
  assert.deepEqual(ids(state), ['before', 'offline', 'while-away'])
}))
