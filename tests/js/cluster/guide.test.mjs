// DEPLOYMENT.md and the tests agree: the tests run the guide's nginx block (harness.mjs reads
// it), so it must keep the shape they substitute into and the settings WebSockets behind a
// round-robin proxy need; nginx must accept the configuration the tests make of it; and the
// guide's table must name every cluster option the server has.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { DEPLOYMENT_MD, NGINX_BIN, Nginx, guideNginxBlock, nginxConfig, nginxHttpBlock } from './harness.mjs'
import { SERVER_BIN } from '../interop/harness.mjs'

const CI = process.env.CI === 'true'

test('the guide\'s nginx block has what WebSockets behind a round-robin proxy need', () => {
  const block = guideNginxBlock()
  const directives = block.split('\n').map(l => l.replace(/#.*/, '').trim()).filter(Boolean)
  const has = re => directives.some(d => re.test(d))
  assert.ok(has(/^proxy_http_version 1\.1;$/), 'proxy_http_version 1.1')
  assert.ok(has(/^proxy_set_header Upgrade \$http_upgrade;$/), 'Upgrade header')
  assert.ok(has(/^proxy_set_header Connection \$connection_upgrade;$/), 'Connection header')
  assert.ok(has(/^proxy_set_header Host \$host;$/), 'the client\'s Host (open development mode checks it)')
  assert.ok(has(/^proxy_next_upstream error timeout;$/), 'a dead node is skipped')
  const read = directives.find(d => d.startsWith('proxy_read_timeout'))
  const secs = Number(read?.match(/(\d+)s;$/)?.[1])
  assert.ok(secs > 30, `proxy_read_timeout longer than the nodes' 30 s pings: ${read}`)
  assert.ok(!has(/^(ip_hash|hash|sticky|least_conn)\b/), 'round robin, no stickiness')
  // The tests substitute exactly these.
  const nodes = nginxHttpBlock([1001, 1002, 1003], 2000, block)
  assert.match(nodes, /server\s+127\.0\.0\.1:1001\s/)
  assert.match(nodes, /server\s+127\.0\.0\.1:1003\s/)
  assert.match(nodes, /listen\s+127\.0\.0\.1:2000;/)
  // Nothing else changes.
  const strip = s => s.replace(/^\s*(server|listen)\s.*$/gm, '')
  assert.equal(strip(nodes), strip(block))
  assert.throws(() => nginxHttpBlock([1, 2], 3, block), /names 3 nodes/)
})

const noNginx = !CI && !existsSync(NGINX_BIN) && `${NGINX_BIN} is missing (scripts/install-nginx.sh)`
if (noNginx) console.log(`# skipping nginx -t: ${noNginx}`)

test('nginx accepts the configuration the tests make from the guide', { skip: noNginx }, async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sync-nginx-'))
  try {
    const nginx = new Nginx(dir, 2000)
    await writeFile(nginx.confPath, nginxConfig(dir, [1001, 1002, 1003], 2000))
    const out = await nginx.test()
    assert.match(out, /test is successful/)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

const noServer = !existsSync(SERVER_BIN) && `${SERVER_BIN} is missing (cargo build -p sync-server)`
if (noServer && !CI) console.log(`# skipping the options check: ${noServer}`)

test('the guide\'s table names every cluster option of `sync-server --help`', { skip: !CI && noServer }, async () => {
  const help = await new Promise((resolve, reject) => execFile(SERVER_BIN, ['--help'], (e, out) => e ? reject(e) : resolve(out)))
  const guide = readFileSync(DEPLOYMENT_MD, 'utf8')
  const options = ['--database-url', '--redis-url', '--node-id', '--redis-prefix', '--heal-interval-ms', '--node-timeout-ms']
  for (const flag of options) {
    const m = help.match(new RegExp(`${flag} <[A-Z_]+>[\\s\\S]*?\\[env: ([A-Z_]+)`))
    assert.ok(m, `sync-server --help has ${flag}`)
    assert.ok(guide.includes(`| \`${flag}\` | \`${m[1]}\` |`), `DEPLOYMENT.md's table has ${flag} / ${m[1]}`)
  }
  // And no cluster option of the server is missing from that list.
  const redisish = [...help.matchAll(/^\s+(--[a-z-]+) <[A-Z_]+>\n\s+(.*)$/gm)]
    .filter(([, , text]) => /Redis|other nodes|another node/.test(text)).map(([, flag]) => flag)
  for (const flag of redisish) assert.ok(options.includes(flag), `${flag} (about nodes) is in the guide's table`)
})
