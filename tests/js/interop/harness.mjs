// Shared harness for the Node interop tests: starts and stops `sync-server` processes,
// makes temp dirs and PostgreSQL schemas, creates y-websocket providers and raw
// WebSocket clients, and polls for conditions. Every test gets its own Harness through
// `withHarness`, which tears everything down in `finally` and prints the server logs
// when the test fails.
import { spawn } from 'node:child_process'
import http from 'node:http'
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const SERVER_BIN = path.resolve(REPO_ROOT, process.env.SYNC_SERVER_BIN || 'target/debug/sync-server')
const REFERENCE_SERVER = fileURLToPath(new URL('./reference-server.mjs', import.meta.url))

/** Development only: INTEROP_SERVER=reference runs the tests against @y/websocket-server. */
export const USING_REFERENCE = process.env.INTEROP_SERVER === 'reference'
/** `skip` option for tests that need our server (persistence, acks, close codes). */
export const NEEDS_OUR_SERVER = USING_REFERENCE ? 'needs sync-server (INTEROP_SERVER=reference)' : false

const CI = process.env.CI === 'true'
const PG_URL = process.env.TEST_DATABASE_URL || ''

/**
 * Database backends for tests that run on both. `skip` is a reason string or false: PostgreSQL is
 * skipped when TEST_DATABASE_URL is unset, unless CI=true, where the test runs and fails.
 */
export const BACKENDS = [
  { kind: 'sqlite', skip: NEEDS_OUR_SERVER },
  {
    kind: 'postgres',
    skip: NEEDS_OUR_SERVER || ((PG_URL || CI) ? false : 'TEST_DATABASE_URL is unset (set it, or CI=true to make this a failure)')
  }
]
/** Prints why PostgreSQL tests are skipped, if they are (call once per test file that uses them). */
export function reportSkippedBackends () {
  for (const b of BACKENDS) {
    if (b.skip && b.kind === 'postgres' && !USING_REFERENCE) {
      console.log(`# skipping PostgreSQL interop tests: ${b.skip}`)
    }
  }
}

export const MSG_SYNC = 0
export const MSG_AWARENESS = 1
export const MSG_QUERY_AWARENESS = 3
export const MSG_ACK = 100
export const SYNC_STEP1 = 0
export const SYNC_STEP2 = 1
export const SYNC_UPDATE = 2

const children = new Set()
// Every WebsocketProvider adds a process 'exit' listener; tests run more than ten at once.
process.setMaxListeners(100)
process.on('exit', () => {
  for (const child of children) {
    try { child.kill('SIGKILL') } catch {}
  }
})

/**
 * Polls `predicate` (sync or async) until it returns a truthy value, which is returned.
 * On timeout throws, with `describe()` (if given) appended to the message.
 */
export async function waitFor (predicate, { timeout = 5000, interval = 10, message = 'condition', describe } = {}) {
  const deadline = Date.now() + timeout
  let lastError
  for (;;) {
    try {
      const value = await predicate()
      if (value) return value
    } catch (e) {
      lastError = e
    }
    if (Date.now() >= deadline) {
      let detail = ''
      if (describe) {
        try { detail = ': ' + describe() } catch (e) { detail = ': (describe failed: ' + e + ')' }
      }
      const err = new Error(`timed out after ${timeout} ms waiting for ${message}${detail}`)
      if (lastError) err.cause = lastError
      throw err
    }
    await sleep(interval)
  }
}

/** Resolves like `promise`, or to `{ timeout: true }` after `ms` (an unref'd timer). */
export function within (promise, ms = 5000) {
  return Promise.race([promise, sleep(ms, { timeout: true }, { ref: false })])
}

export function boardId (prefix = 'board') {
  return `${prefix}-${randomUUID().slice(0, 8)}`
}

/** State vector of a doc as Map<clientID, clock>. */
export function stateVector (doc) {
  return Y.decodeStateVector(Y.encodeStateVector(doc))
}

/** Whether state vector `a` is covered by `b` (every clock in a is <= the one in b). */
export function svCoveredBy (a, b) {
  for (const [client, clock] of a) {
    if ((b.get(client) || 0) < clock) return false
  }
  return true
}

export function svToString (sv) {
  return JSON.stringify([...sv].sort((x, y) => x[0] - y[0]))
}

/** Encodes a y-protocols document update message `[0, 2, varUint8Array(update)]`. */
export function encodeUpdateMessage (update) {
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, MSG_SYNC)
  encoding.writeVarUint(enc, SYNC_UPDATE)
  encoding.writeVarUint8Array(enc, update)
  return encoding.toUint8Array(enc)
}

/**
 * Decodes the head of a server frame: `{ type, subtype?, payload?, count? }`. Sync messages get
 * `subtype` and `payload` (the state vector or update); awareness gets `payload`; ack (100) gets
 * `count`.
 */
export function decodeFrame (bytes) {
  const dec = decoding.createDecoder(new Uint8Array(bytes))
  const type = decoding.readVarUint(dec)
  if (type === MSG_SYNC) {
    const subtype = decoding.readVarUint(dec)
    return { type, subtype, payload: decoding.readVarUint8Array(dec) }
  }
  if (type === MSG_AWARENESS) return { type, payload: decoding.readVarUint8Array(dec) }
  if (type === MSG_ACK) return { type, count: decoding.readVarUint(dec) }
  return { type }
}

/** A running server process (ours, or the reference stand-in in development). */
export class ServerProcess {
  constructor (child, label) {
    this.child = child
    this.label = label
    this.port = null
    this.log = []
    this.exited = new Promise(resolve => {
      child.on('exit', (code, signal) => {
        children.delete(child)
        this.exitStatus = { code, signal }
        resolve(this.exitStatus)
      })
    })
  }

  get httpUrl () { return `http://127.0.0.1:${this.port}` }
  get syncUrl () { return `ws://127.0.0.1:${this.port}/v1/sync` }
  get running () { return this.exitStatus === undefined }

  logText () { return this.log.join('') }

  /** SIGTERM and wait for the exit; returns `{ code, signal }`. SIGKILLs after `timeout`. */
  async stop ({ timeout = 10000 } = {}) {
    if (!this.running) return this.exitStatus
    this.child.kill('SIGTERM')
    const t = setTimeout(() => this.child.kill('SIGKILL'), timeout)
    try { return await this.exited } finally { clearTimeout(t) }
  }

  /** SIGKILL (a crash) and wait for the exit. */
  async kill () {
    if (!this.running) return this.exitStatus
    this.child.kill('SIGKILL')
    return await this.exited
  }
}

/**
 * Starts `sync-server serve` on port 0 and resolves once it printed its `listening on` line.
 * `env` adds variables for the server (e.g. `{ AUTH_SECRET }`), after the caller's own shell
 * settings for it were cleared.
 */
/**
 * Starts `sync-server` on `port` (default 0: a free one). `fileSizeLimitKiB` runs it under
 * `ulimit -f` with SIGXFSZ ignored, so that a write past that size fails with EFBIG, as on a
 * full disk.
 */
export async function startServer (databaseUrl, { label = 'server', timeout = 20000, args = [], env: extraEnv = {}, fileSizeLimitKiB, port = 0 } = {}) {
  const env = { ...process.env }
  // The tests need the open development mode on one node, whatever the caller's shell has.
  for (const k of ['AUTH_SECRET', 'AUTH_SECRET_FILE', 'REDIS_URL', 'DATABASE_URL', 'PORT', 'BIND', 'INSECURE', 'LOG_FORMAT',
    'MAX_MESSAGE_BYTES', 'OUTBOUND_QUEUE', 'BOARD_IDLE_SECS', 'COMPACT_ROWS', 'COMPACT_BYTES',
    'COMMIT_MAX_UPDATES', 'SHUTDOWN_TIMEOUT_SECS']) delete env[k]
  env.NO_COLOR = '1'
  Object.assign(env, extraEnv)
  const serverArgs = ['serve', '--bind', '127.0.0.1', '--port', String(port), '--database-url', databaseUrl, ...args]
  const limited = fileSizeLimitKiB
    ? ['/bin/sh', ['-c', `trap '' XFSZ; ulimit -f ${Number(fileSizeLimitKiB)}; exec "$0" "$@"`, SERVER_BIN, ...serverArgs]]
    : [SERVER_BIN, serverArgs]
  const child = USING_REFERENCE
    ? spawn(process.execPath, [REFERENCE_SERVER, ...serverArgs.slice(1)], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(limited[0], limited[1], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  const server = new ServerProcess(child, label)
  let stdoutBuf = ''
  const ready = new Promise((resolve, reject) => {
    child.on('error', e => reject(new Error(`cannot start ${SERVER_BIN}: ${e.message}` +
      ' (run `cargo build -p sync-server` first, or set SYNC_SERVER_BIN)')))
    child.stdout.on('data', chunk => {
      const s = chunk.toString()
      server.log.push(s)
      if (server.port !== null) return
      stdoutBuf += s
      const m = stdoutBuf.match(/^listening on http:\/\/127\.0\.0\.1:(\d+)/m)
      if (m) {
        server.port = Number(m[1])
        resolve()
      }
    })
    child.stderr.on('data', chunk => server.log.push(chunk.toString()))
    server.exited.then(st => reject(new Error(`${label} exited before listening (${JSON.stringify(st)})`)))
  })
  let timer
  const timedOut = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${label} did not print "listening on" within ${timeout} ms`)), timeout)
  })
  try {
    await Promise.race([ready, timedOut])
  } catch (e) {
    child.kill('SIGKILL')
    await server.exited
    e.message += `\n--- ${label} output ---\n${server.logText()}`
    throw e
  } finally {
    clearTimeout(timer)
  }
  return server
}

/** A raw `ws` client that records every frame and how the socket ended. */
export class RawClient {
  constructor (url, label) {
    this.url = url
    this.label = label
    this.frames = []
    this.ws = new WebSocket(url)
    this.ws.binaryType = 'nodebuffer'
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve)
      this.ws.once('error', reject)
    })
    this.opened.catch(() => {})
    this.closed = new Promise(resolve => {
      this.ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))
      this.ws.on('unexpected-response', (req, res) => {
        resolve({ httpStatus: res.statusCode })
        req.destroy()
      })
    })
    this.ws.on('error', () => {})
    this.ws.on('message', (data, isBinary) => {
      this.frames.push(isBinary ? new Uint8Array(data) : data.toString())
    })
  }

  decoded () {
    return this.frames.filter(f => typeof f !== 'string').map(decodeFrame)
  }

  send (bytes) { this.ws.send(bytes) }
  close () { try { this.ws.close() } catch {} }
  terminate () { try { this.ws.terminate() } catch {} }
}

export class Harness {
  constructor (name) {
    this.name = name
    this.servers = []
    this.providers = []
    this.raw = []
    this.dirs = []
    this.schemas = []
  }

  async tempDir () {
    const dir = await mkdtemp(path.join(tmpdir(), 'sync-interop-'))
    this.dirs.push(dir)
    return dir
  }

  /** A fresh, empty database of `kind` ('sqlite' | 'postgres'); returns its URL. */
  async database (kind = 'sqlite') {
    if (kind === 'sqlite') {
      return `sqlite://${await this.tempDir()}/boards.db`
    }
    if (kind !== 'postgres') throw new Error(`unknown database kind ${kind}`)
    if (!PG_URL) throw new Error('TEST_DATABASE_URL must be set for the PostgreSQL tests (CI=true)')
    const schema = `interop_${randomBytes(6).toString('hex')}`
    await pgQuery(`CREATE SCHEMA ${schema}`)
    this.schemas.push(schema)
    return PG_URL + (PG_URL.includes('?') ? '&' : '?') + `options=-c%20search_path%3D${schema}`
  }

  async startServer (databaseUrl, opts = {}) {
    const label = opts.label || `server#${this.servers.length + 1}`
    const server = await startServer(databaseUrl, { ...opts, label })
    this.servers.push(server)
    return server
  }

  /**
   * A y-websocket client. Returns `{ doc, provider, closes }`; `closes` records the close events
   * (`{ code, reason }`) the provider saw.
   */
  client (server, board, { doc = new Y.Doc(), params = {}, connect = true, maxBackoffTime = 1000 } = {}) {
    const provider = new WebsocketProvider(server.syncUrl, board, doc, {
      WebSocketPolyfill: WebSocket,
      disableBc: true,
      params,
      connect,
      maxBackoffTime
    })
    const closes = []
    provider.on('connection-close', ev => { if (ev) closes.push({ code: ev.code, reason: ev.reason }) })
    const client = { doc, provider, closes }
    this.providers.push(client)
    return client
  }

  /** A client that has finished its first sync. */
  async syncedClient (server, board, opts = {}) {
    const c = this.client(server, board, opts)
    await waitFor(() => c.provider.synced, { timeout: 5000, message: `client of ${board} to sync` })
    return c
  }

  /** A raw WebSocket to `/v1/sync/{board}` with an optional query string (without '?'). */
  rawClient (server, board, query = '') {
    const c = new RawClient(`${server.syncUrl}/${board}${query ? '?' + query : ''}`, board)
    this.raw.push(c)
    return c
  }

  destroyClient (c) {
    c.provider.destroy()
    c.doc.destroy()
  }

  /**
   * GET over a non-pooled connection (global fetch keeps sockets alive for seconds, which would
   * hold each test process open). Resolves `{ status, headers, body: Buffer, text(), json() }`.
   */
  fetch (server, pathname, { timeout = 5000 } = {}) {
    return new Promise((resolve, reject) => {
      const req = http.get(server.httpUrl + pathname, { agent: false, timeout }, res => {
        const chunks = []
        res.on('data', c => chunks.push(c))
        res.on('error', reject)
        res.on('end', () => {
          const body = Buffer.concat(chunks)
          resolve({
            status: res.statusCode,
            headers: res.headers,
            body,
            text: () => body.toString(),
            json: () => JSON.parse(body.toString())
          })
        })
      })
      req.on('timeout', () => req.destroy(new Error(`GET ${pathname} timed out`)))
      req.on('error', reject)
    })
  }

  /**
   * Any request over a non-pooled connection; `body` is a string (sent as JSON unless
   * `contentType` says otherwise) or a Uint8Array. Resolves like `fetch`.
   */
  request (server, method, pathname, { body, contentType = 'application/json', timeout = 10000 } = {}) {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : body)
      const headers = payload ? { 'content-type': contentType, 'content-length': payload.length } : {}
      const req = http.request(server.httpUrl + pathname, { method, agent: false, timeout, headers }, res => {
        const chunks = []
        res.on('data', c => chunks.push(c))
        res.on('error', reject)
        res.on('end', () => {
          const data = Buffer.concat(chunks)
          resolve({ status: res.statusCode, headers: res.headers, body: data, text: () => data.toString(), json: () => JSON.parse(data.toString()) })
        })
      })
      req.on('timeout', () => req.destroy(new Error(`${method} ${pathname} timed out`)))
      req.on('error', reject)
      if (payload) req.write(payload)
      req.end()
    })
  }

  /** GET /v1/boards/{id}/state applied to a fresh Y.Doc. */
  async fetchState (server, board) {
    const res = await this.fetch(server, `/v1/boards/${board}/state`)
    if (res.status !== 200) throw new Error(`GET /v1/boards/${board}/state: ${res.status} ${res.text()}`)
    const doc = new Y.Doc()
    Y.applyUpdate(doc, new Uint8Array(res.body))
    return doc
  }

  dumpLogs () {
    for (const s of this.servers) {
      console.error(`\n--- [${this.name}] ${s.label} (port ${s.port}, exit ${JSON.stringify(s.exitStatus ?? 'running')}) ---\n${s.logText()}`)
    }
  }

  async dispose () {
    for (const c of this.providers) {
      try { c.provider.destroy() } catch {}
      // Destroying the doc also destroys the provider's Awareness and its 3 s interval timer,
      // which would otherwise keep the test process alive.
      try { c.doc.destroy() } catch {}
    }
    for (const c of this.raw) c.terminate()
    await Promise.all(this.servers.map(s => s.kill()))
    for (const schema of this.schemas) {
      try {
        await pgQuery(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
      } catch (e) {
        console.error(`could not drop schema ${schema}: ${e.message}`)
      }
    }
    for (const dir of this.dirs) await rm(dir, { recursive: true, force: true })
  }
}

async function pgQuery (sql) {
  const { default: pg } = await import('pg')
  const client = new pg.Client({ connectionString: PG_URL })
  await client.connect()
  try {
    return await client.query(sql)
  } finally {
    await client.end()
  }
}

/**
 * Runs `fn(harness)`; prints the server logs if it throws (or if INTEROP_VERBOSE=1) and always
 * tears down clients, servers, schemas and temp dirs.
 */
export async function withHarness (t, fn) {
  const h = new Harness(t.name)
  let failed = false
  try {
    return await fn(h)
  } catch (e) {
    failed = true
    throw e
  } finally {
    if (failed || process.env.INTEROP_VERBOSE === '1') h.dumpLogs()
    await h.dispose()
  }
}

export { Y, WebSocket, sleep }
