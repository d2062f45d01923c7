// Harness of the multi-node tests: three `sync-server` processes on one PostgreSQL schema with
// Redis between them, Debian's nginx in front of them (round robin, no stickiness), and real
// `yjs` + `y-websocket` clients, through the proxy or straight to one node.
//
// Built on the interop harness (`../interop/harness.mjs`: server processes, PostgreSQL schemas,
// HTTP helpers, `waitFor`). Added here:
//
// - nodes: `startNodes(n)` starts n nodes on a fresh schema with a unique `--redis-prefix`, each
//   on a free port it keeps across `restartNode(i)` (nginx's upstream list names the ports);
// - nginx: `startNginx()` writes its configuration into a temp dir from the `nginx` block of
//   DEPLOYMENT.md (the guide's configuration, with the upstream addresses and the listen address
//   replaced: `nginxConfig`), and runs it unprivileged (`daemon off`, pid, logs and temp paths in
//   the temp dir). The one thing the tests add is a response header naming the node a request
//   reached (`X-Upstream`), so a test knows which clients a node serves;
// - Redis: the machine's (`TEST_REDIS_URL`), or a `redis-server` of the test's own on a free
//   port (`startRedis()`), which a test may stop and start again without disturbing the
//   machine's;
// - the board as stored: `exportBoard()` runs `sync-server export` against the database;
// - on failure, every node's log, nginx's error log and the Redis logs are printed.
//
// Requirements (`requirements()`): PostgreSQL (`TEST_DATABASE_URL`), the machine's Redis
// (`TEST_REDIS_URL`) or `redis-server`, and nginx (`NGINX_BIN`, default /usr/sbin/nginx;
// `scripts/install-nginx.sh` installs Debian's). Without `CI=true` a test that lacks one is
// skipped with the reason printed; under `CI=true` it runs, and fails.
import assert from 'node:assert/strict'
import { spawn, execFile } from 'node:child_process'
import { existsSync, readFileSync, accessSync, constants as fsConstants } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import {
  Harness, waitFor, Y, WebSocket, sleep, SERVER_BIN, REPO_ROOT, boardId
} from '../interop/harness.mjs'
import { WebsocketProvider } from 'y-websocket'

export { Y, waitFor, sleep, boardId, REPO_ROOT }

const CI = process.env.CI === 'true'
const PG_URL = process.env.TEST_DATABASE_URL || ''
export const REDIS_URL = process.env.TEST_REDIS_URL || ''
export const NGINX_BIN = process.env.NGINX_BIN || '/usr/sbin/nginx'
export const DEPLOYMENT_MD = path.join(REPO_ROOT, 'DEPLOYMENT.md')

/** The first executable named `name` on PATH (or `name` itself if it is a path), or null. */
function which (name) {
  const candidates = name.includes('/') ? [name] : (process.env.PATH || '').split(':').filter(Boolean).map(d => path.join(d, name))
  for (const c of candidates) {
    try { accessSync(c, fsConstants.X_OK); return c } catch {}
  }
  return null
}

export const REDIS_SERVER_BIN = which(process.env.REDIS_SERVER_BIN || 'redis-server')

/**
 * Why a test cannot run here, or false. `redis`: 'machine' (TEST_REDIS_URL) or 'own' (a
 * redis-server of the test's own). Under CI=true always false: the test runs and fails on
 * whatever is missing.
 */
export function requirements ({ redis = 'machine', nginx = true } = {}) {
  if (CI) return false
  const missing = []
  if (!PG_URL) missing.push('TEST_DATABASE_URL is unset')
  if (redis === 'machine' && !REDIS_URL) missing.push('TEST_REDIS_URL is unset')
  if (redis === 'own' && !REDIS_SERVER_BIN) missing.push('redis-server is not installed')
  if (nginx && !existsSync(NGINX_BIN)) missing.push(`${NGINX_BIN} is missing (scripts/install-nginx.sh)`)
  if (missing.length === 0) return false
  const reason = `${missing.join('; ')} (set them, or CI=true to make this a failure)`
  console.log(`# skipping multi-node test: ${reason}`)
  return reason
}

/** A free TCP port on 127.0.0.1 (bound, then released). */
export function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port. */
async function waitListening (port, { timeout = 10000, message = `port ${port}` } = {}) {
  await waitFor(() => new Promise(resolve => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  }), { timeout, interval: 20, message: `${message} to listen` })
}

/** The fenced ```nginx block of DEPLOYMENT.md: the guide's reverse proxy configuration. */
export function guideNginxBlock (markdown = readFileSync(DEPLOYMENT_MD, 'utf8')) {
  const blocks = [...markdown.matchAll(/^```nginx\n([\s\S]*?)^```$/gm)].map(m => m[1])
  if (blocks.length !== 1) throw new Error(`DEPLOYMENT.md must hold exactly one \`\`\`nginx block (found ${blocks.length})`)
  return blocks[0]
}

/** The guide's example node addresses, in its `upstream` block. */
const GUIDE_SERVER_LINE = /^(\s*server\s+)10\.0\.0\.\d+:8080(\s)/gm
const GUIDE_LISTEN_LINE = /^(\s*listen\s+)80;/gm

/**
 * The guide's configuration with its three example nodes replaced by `nodePorts` on 127.0.0.1
 * and `listen 80;` by `listen 127.0.0.1:<listenPort>;`. Throws if the block no longer has that
 * shape, so the guide and the tests cannot drift apart silently.
 */
export function nginxHttpBlock (nodePorts, listenPort, block = guideNginxBlock()) {
  const servers = block.match(GUIDE_SERVER_LINE) || []
  if (servers.length !== nodePorts.length) {
    throw new Error(`DEPLOYMENT.md's nginx block names ${servers.length} nodes as \`server 10.0.0.N:8080 ...\`; the tests expect ${nodePorts.length}`)
  }
  const listens = block.match(GUIDE_LISTEN_LINE) || []
  if (listens.length !== 1) throw new Error(`DEPLOYMENT.md's nginx block must have one \`listen 80;\` (found ${listens.length})`)
  let i = 0
  return block
    .replace(GUIDE_SERVER_LINE, (_, head, tail) => `${head}127.0.0.1:${nodePorts[i++]}${tail}`)
    .replace(GUIDE_LISTEN_LINE, (_, head) => `${head}127.0.0.1:${listenPort};`)
}

/**
 * A whole nginx.conf for an unprivileged nginx in `dir`: the guide's http-context block inside
 * the process settings a test needs, and a header naming the node each request reached.
 */
export function nginxConfig (dir, nodePorts, listenPort) {
  // As root, nginx's workers would switch to `nobody`, who cannot enter the 0700 temp dir.
  const user = process.getuid && process.getuid() === 0 ? 'user root;\n' : ''
  const indent = s => s.replace(/^(?=.)/gm, '    ')
  return `# Written by tests/js/cluster/harness.mjs: DEPLOYMENT.md's configuration, run unprivileged.
${user}daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events {
    worker_connections 1024;
}
http {
    log_format upstreams '$msec $status "$request" upstream=[$upstream_addr] '
                         'upstream_status=[$upstream_status] connect=[$upstream_connect_time] time=$request_time';
    access_log ${dir}/access.log upstreams;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    # Test only: which node answered (the last one tried), so a test knows each client's node.
    add_header X-Upstream $upstream_addr always;

    # --- DEPLOYMENT.md ---
${indent(nginxHttpBlock(nodePorts, listenPort))}}
`
}

/** nginx in the foreground with a config of its own in a temp dir. */
export class Nginx {
  constructor (dir, port) {
    this.dir = dir
    this.port = port
    this.log = []
    this.child = null
  }

  get confPath () { return path.join(this.dir, 'nginx.conf') }
  get httpUrl () { return `http://127.0.0.1:${this.port}` }
  get syncUrl () { return `ws://127.0.0.1:${this.port}/v1/sync` }
  get label () { return 'nginx' }

  args () { return ['-c', this.confPath, '-p', this.dir, '-e', path.join(this.dir, 'error.log')] }

  /** `nginx -t` on the written config; resolves its output, rejects if it fails. */
  test () {
    return new Promise((resolve, reject) => {
      execFile(NGINX_BIN, [...this.args(), '-t'], (err, stdout, stderr) => {
        if (err) reject(new Error(`nginx -t failed: ${stderr}${stdout}`))
        else resolve(stderr + stdout)
      })
    })
  }

  async start () {
    this.child = spawn(NGINX_BIN, this.args(), { stdio: ['ignore', 'pipe', 'pipe'] })
    this.exited = new Promise(resolve => this.child.on('exit', (code, signal) => resolve({ code, signal })))
    this.child.on('error', e => this.log.push(`cannot start ${NGINX_BIN}: ${e.message}\n`))
    this.child.stdout.on('data', d => this.log.push(d.toString()))
    this.child.stderr.on('data', d => this.log.push(d.toString()))
    await Promise.race([
      waitListening(this.port, { message: 'nginx' }),
      this.exited.then(st => { throw new Error(`nginx exited at start (${JSON.stringify(st)}): ${this.log.join('')}`) })
    ])
  }

  async errorLog () { return await this.readLog('error.log') }
  async accessLog () { return await this.readLog('access.log') }
  async readLog (name) {
    try { return await readFile(path.join(this.dir, name), 'utf8') } catch (e) { return `(no ${name}: ${e.message})` }
  }

  async stop () {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return
    this.child.kill('SIGQUIT')
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3000)
    try { await this.exited } finally { clearTimeout(t) }
  }
}

/** A `redis-server` of a test's own on a free port, keeping nothing on disk. */
export class RedisServer {
  constructor (port, dir) {
    this.port = port
    this.dir = dir
    this.child = null
    this.log = []
    this.runs = 0
  }

  get url () { return `redis://127.0.0.1:${this.port}` }
  get label () { return `redis-server :${this.port}` }

  async start () {
    if (!REDIS_SERVER_BIN) throw new Error('redis-server is not installed (CI=true)')
    this.runs++
    this.log.push(`--- run ${this.runs} ---\n`)
    const child = spawn(REDIS_SERVER_BIN, ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '',
      '--appendonly', 'no', '--dir', this.dir], { stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child
    child.stdout.on('data', d => this.log.push(d.toString()))
    child.stderr.on('data', d => this.log.push(d.toString()))
    this.exited = new Promise(resolve => child.on('exit', (code, signal) => resolve({ code, signal })))
    await waitListening(this.port, { message: 'redis-server' })
  }

  /** SIGKILL: everything it held (subscriptions, connections) is gone at once. */
  async kill () {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return
    this.child.kill('SIGKILL')
    await this.exited
  }
}

/**
 * Node ids and the flags a node runs with: unique `--redis-prefix` per test, quick healing and
 * node timeouts so a test needs seconds, not minutes.
 */
export class ClusterHarness extends Harness {
  constructor (name) {
    super(name)
    this.prefix = `jscluster_${randomBytes(6).toString('hex')}`
    this.nodes = []
    this.nodePorts = []
    this.nodeOpts = null
    this.nginx = null
    this.redisServers = []
  }

  /**
   * Starts `n` nodes on a fresh PostgreSQL schema and `redisUrl` (default: the machine's).
   * `healMs`: --heal-interval-ms; `nodeTimeoutMs`: --node-timeout-ms.
   */
  async startNodes (n = 3, { redisUrl = REDIS_URL, healMs = 500, nodeTimeoutMs = 1500, args = [] } = {}) {
    if (!redisUrl) throw new Error('TEST_REDIS_URL must name a Redis server (CI=true)')
    this.db = await this.database('postgres')
    this.nodeOpts = { redisUrl, healMs, nodeTimeoutMs, args }
    for (let i = 0; i < n; i++) this.nodePorts.push(await freePort())
    this.nodes = await Promise.all(this.nodePorts.map((_, i) => this.startNode(i, { newPortIfTaken: true })))
    return this.nodes
  }

  /**
   * Starts node i on its port. A port found free can be taken before the node binds it (the
   * kernel hands the same range out as the source ports of other tests' connections): before
   * nginx names the ports (`newPortIfTaken`) the node moves to another free port; after, it
   * tries the same port again for a few seconds.
   */
  async startNode (i, { newPortIfTaken = false } = {}) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.startNodeOnce(i)
      } catch (e) {
        if (!/Address already in use/.test(e.message) || attempt >= 5) throw e
        if (newPortIfTaken) this.nodePorts[i] = await freePort()
        else await sleep(500)
      }
    }
  }

  async startNodeOnce (i) {
    const { redisUrl, healMs, nodeTimeoutMs, args } = this.nodeOpts
    const run = this.servers.filter(s => s.nodeIndex === i).length + 1
    const node = await this.startServer(this.db, {
      label: `node${i}${run > 1 ? ` (run ${run})` : ''}`,
      port: this.nodePorts[i],
      args: ['--redis-url', redisUrl, '--node-id', `node${i}`,
        '--redis-prefix', this.prefix, '--heal-interval-ms', String(healMs),
        '--node-timeout-ms', String(nodeTimeoutMs), ...args]
    })
    node.nodeIndex = i
    if (node.port !== this.nodePorts[i]) throw new Error(`node${i} listens on ${node.port}, not ${this.nodePorts[i]}`)
    this.nodes[i] = node
    return node
  }

  /** SIGTERM node i, wait for its exit, start it again on the same port; returns the exit status. */
  async restartNode (i) {
    const status = await this.nodes[i].stop()
    await this.startNode(i)
    return status
  }

  /** nginx in front of every node started so far. */
  async startNginx () {
    if (!existsSync(NGINX_BIN)) throw new Error(`${NGINX_BIN} is missing: scripts/install-nginx.sh installs Debian's nginx (or set NGINX_BIN)`)
    const dir = await this.tempDir()
    const port = await freePort()
    const nginx = new Nginx(dir, port)
    await writeFile(nginx.confPath, nginxConfig(dir, this.nodePorts, port))
    this.nginx = nginx
    await nginx.start()
    return nginx
  }

  /** A redis-server of this test's own, started. */
  async startRedis () {
    const redis = new RedisServer(await freePort(), await this.tempDir())
    this.redisServers.push(redis)
    await redis.start()
    return redis
  }

  /**
   * A y-websocket client of `target` (the nginx, or one node). `client.upstream()` names the
   * node its current connection reached (through nginx) as its index in `this.nodes`, or null;
   * `client.upstreams` lists every node it reached, in order.
   */
  client (target, board, opts = {}) {
    const h = this
    const client = { upstreams: [] }
    class TrackedWebSocket extends WebSocket {
      constructor (url, protocols) {
        super(url, protocols)
        this.nodeIndex = target instanceof Nginx ? null : target.nodeIndex
        this.on('upgrade', res => {
          if (target instanceof Nginx) {
            const addr = String(res.headers['x-upstream'] || '').split(',').pop().trim()
            const port = Number(addr.split(':').pop())
            this.nodeIndex = h.nodePorts.indexOf(port)
          }
          client.upstreams.push(this.nodeIndex)
        })
      }
    }
    const doc = opts.doc || new Y.Doc()
    const provider = new WebsocketProvider(target.syncUrl, board, doc, {
      WebSocketPolyfill: TrackedWebSocket,
      disableBc: true,
      params: opts.params || {},
      connect: opts.connect ?? true,
      maxBackoffTime: opts.maxBackoffTime ?? 1000
    })
    const closes = []
    provider.on('connection-close', ev => { if (ev) closes.push({ code: ev.code, reason: ev.reason }) })
    Object.assign(client, {
      doc,
      provider,
      closes,
      name: opts.name || `client${this.providers.length}`,
      upstream: () => (provider.wsconnected && provider.ws ? provider.ws.nodeIndex : null)
    })
    this.providers.push(client)
    return client
  }

  async syncedClient (target, board, opts = {}) {
    const c = this.client(target, board, opts)
    await waitFor(() => c.provider.synced, { timeout: 10000, message: `${c.name} of ${board} to sync` })
    return c
  }

  /** The board as the database holds it (`sync-server export`), in a fresh Y.Doc. */
  exportBoard (board) {
    return new Promise((resolve, reject) => {
      const env = { ...process.env }
      delete env.DATABASE_URL
      execFile(SERVER_BIN, ['export', board, '--database-url', this.db], { env, encoding: 'buffer', maxBuffer: 256 << 20 },
        (err, stdout, stderr) => {
          if (err) return reject(new Error(`sync-server export ${board}: ${err.message}\n${stderr}`))
          const doc = new Y.Doc()
          Y.applyUpdate(doc, new Uint8Array(stdout))
          resolve(doc)
        })
    })
  }

  /** `GET /readyz` of a node, parsed: `{ status, body }`. */
  async readyz (node) {
    const r = await this.fetch(node, '/readyz', { timeout: 3000 })
    return { status: r.status, body: r.json() }
  }

  async waitReady (node, want = 'ready', timeout = 10000) {
    let last
    await waitFor(async () => {
      last = await this.readyz(node)
      return last.body.status === want
    }, { timeout, interval: 50, message: `${node.label} /readyz to say ${want}`, describe: () => JSON.stringify(last) })
    return last
  }

  /** One metric's value in a node's /metrics (summed over its label sets), 0 if absent. */
  async metric (node, name) {
    const text = (await this.fetch(node, '/metrics')).text()
    let sum = 0
    for (const line of text.split('\n')) {
      const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)/)
      if (m && m[1] === name) sum += Number(m[3])
    }
    return sum
  }

  async dumpLogs () {
    super.dumpLogs()
    if (this.nginx) {
      console.error(`\n--- [${this.name}] nginx (port ${this.nginx.port}) config ---\n${readFileSync(this.nginx.confPath, 'utf8')}`)
      console.error(`\n--- [${this.name}] nginx error log ---\n${await this.nginx.errorLog()}${this.nginx.log.join('')}`)
      console.error(`\n--- [${this.name}] nginx access log (a WebSocket is logged when it ends) ---\n${await this.nginx.accessLog()}`)
    }
    for (const r of this.redisServers) console.error(`\n--- [${this.name}] ${r.label} ---\n${r.log.join('')}`)
  }

  async dispose () {
    for (const c of this.providers) {
      try { c.provider.destroy() } catch {}
      try { c.doc.destroy() } catch {}
    }
    this.providers = []
    if (this.nginx) await this.nginx.stop()
    await super.dispose()
    for (const r of this.redisServers) await r.kill()
  }
}

/** Runs `fn(harness)`; on failure prints every log; always tears everything down. */
export async function withCluster (t, fn) {
  const h = new ClusterHarness(t.name)
  let failed = false
  try {
    return await fn(h)
  } catch (e) {
    failed = true
    throw e
  } finally {
    if (failed || process.env.INTEROP_VERBOSE === '1') await h.dumpLogs()
    await h.dispose()
  }
}

/** Every client's JSON of `doc`, for assertion messages. */
/**
 * Writers appending to one log, and each bumping its counter in `meta`, every `ms`, in one
 * transaction; `stop()` ends it and returns what each wrote.
 */
export function stream (writers, ms = 20) {
  const written = new Map(writers.map(c => [c.name, []]))
  let n = 0
  const loop = setInterval(() => {
    n++
    for (const c of writers) {
      const entry = `${c.name}-${n}`
      c.doc.transact(() => {
        c.doc.getArray('log').push([entry])
        c.doc.getMap('meta').set(c.name, n)
      })
      written.get(c.name).push(entry)
    }
  }, ms)
  return {
    written,
    get rounds () { return n },
    stop () { clearInterval(loop); return written }
  }
}

/**
 * Every writer converges and holds every entry anyone wrote, and PostgreSQL holds what they
 * show. With `rounds` (nothing but the stream was written): no entry twice, and each writer's
 * last counter.
 */
export async function assertNothingLost (h, board, writers, written, { rounds } = {}) {
  await waitFor(() => converged(writers.map(c => c.doc)), {
    timeout: 10000,
    message: 'every writer to converge',
    describe: () => describeDocs(writers, d => d.getArray('log').length)
  })
  const log = new Set(writers[0].doc.getArray('log').toArray())
  for (const [name, entries] of written) {
    assert.deepEqual(entries.filter(e => !log.has(e)), [], `${name}'s edits are all there`)
  }
  if (rounds !== undefined) {
    assert.equal(writers[0].doc.getArray('log').length, rounds * writers.length, 'no entry twice')
    const meta = writers[0].doc.getMap('meta').toJSON()
    for (const c of writers) assert.equal(meta[c.name], rounds, `${c.name}'s last counter`)
  }
  assert.equal(content(await h.exportBoard(board)), content(writers[0].doc), 'PostgreSQL holds what the writers show')
}

export function describeDocs (clients, pick = content) {
  return clients.map(c => `${c.name}@node${c.upstream()}: ${String(pick(c.doc)).slice(0, 400)}`).join('\n')
}

/** JSON with object keys sorted (a Y.Map's keys come in the order this replica integrated them). */
export function canonical (value) {
  return JSON.stringify(value, (_, v) => (v && typeof v === 'object' && !Array.isArray(v))
    ? Object.fromEntries(Object.keys(v).sort().map(k => [k, v[k]]))
    : v)
}

/** A doc's content, canonical, with the root types the tests use defined first. */
export function content (doc) {
  doc.getMap('objects'); doc.getMap('meta'); doc.getArray('log')
  return canonical(doc.toJSON())
}

/** Whether every doc has the same state vector and the same content. */
export function converged (docs) {
  const sv = d => canonical([...Y.decodeStateVector(Y.encodeStateVector(d))].sort((a, b) => a[0] - b[0]))
  const first = docs[0]
  return docs.every(d => sv(d) === sv(first) && content(d) === content(first))
}

export const tmpRoot = os.tmpdir()
