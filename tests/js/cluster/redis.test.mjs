// Redis going away under three nodes behind nginx, with clients editing through the proxy: no
// node crashes, readiness says degraded and then ready again, and every client converges (from
// PostgreSQL while Redis is away, through Redis again once it is back). Each test runs a
// redis-server of its own on a free port, so the machine's is never disturbed.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  withCluster, waitFor, sleep, boardId, requirements, stream, assertNothingLost
} from './harness.mjs'

const skip = requirements({ redis: 'own' })

function assertAllRunning (h) {
  for (const node of h.nodes) assert.ok(node.running, `${node.label} is running (${JSON.stringify(node.exitStatus)})`)
}

test('Redis stopped for 3 s mid-stream: no node crashes, degraded then ready, every client converges', { skip, timeout: 60000 }, t => withCluster(t, async h => {
  const redis = await h.startRedis()
  await h.startNodes(3, { redisUrl: redis.url, healMs: 300 })
  const proxy = await h.startNginx()
  const board = boardId('redis-away')
  const writers = []
  for (let i = 0; i < 6; i++) writers.push(await h.syncedClient(proxy, board, { name: `w${i}` }))
  assert.deepEqual(writers.map(c => c.upstream()).sort(), [0, 0, 1, 1, 2, 2])
  for (const node of h.nodes) await h.waitReady(node, 'ready')

  const s = stream(writers)
  let written
  try {
    await sleep(500)
    await redis.kill()
    for (const node of h.nodes) {
      const r = await h.waitReady(node, 'degraded', 5000)
      assert.equal(r.status, 200, 'a node without Redis is still ready to serve')
      assert.equal(r.body.redis, 'unavailable')
    }
    // While Redis is away, what one node commits reaches the others' clients from PostgreSQL.
    const marker = `${writers[0].name}-during-outage`
    writers[0].doc.getArray('log').push([marker])
    s.written.get(writers[0].name).push(marker)
    const started = Date.now()
    await waitFor(() => writers.every(c => c.doc.getArray('log').toArray().includes(marker)), {
      timeout: 5000, message: 'an edit made during the outage to reach every node\'s clients'
    })
    t.diagnostic(`during the outage an edit reached every node's clients in ${Date.now() - started} ms (heal interval 300 ms)`)
    await sleep(Math.max(0, 3000 - (Date.now() - started)))
    assertAllRunning(h)
    await redis.start()
    for (const node of h.nodes) await h.waitReady(node, 'ready')
    await sleep(500)
  } finally {
    written = s.stop()
  }
  assertAllRunning(h)
  await assertNothingLost(h, board, writers, written)
  // Presence crosses nodes again.
  for (const [i, c] of writers.entries()) c.provider.awareness.setLocalStateField('user', { name: c.name, n: i })
  await waitFor(() => writers.every(c => [...c.provider.awareness.getStates().values()].filter(st => st.user).length === writers.length), {
    message: 'presence to cross nodes after Redis returns'
  })
  t.diagnostic(`${s.rounds} rounds of ${writers.length} writers`)
}))

test('Redis restarted mid-stream: nodes resubscribe, heal what was lost at once, and converge', { skip, timeout: 60000 }, t => withCluster(t, async h => {
  const redis = await h.startRedis()
  // No periodic database check within the test: what the restart loses comes back through the
  // check every node makes when Redis returns, and later edits through Redis.
  await h.startNodes(3, { redisUrl: redis.url, healMs: 600000 })
  const proxy = await h.startNginx()
  const board = boardId('redis-restart')
  const writers = []
  for (let i = 0; i < 6; i++) writers.push(await h.syncedClient(proxy, board, { name: `w${i}` }))
  for (const node of h.nodes) await h.waitReady(node, 'ready')

  const s = stream(writers)
  let written
  try {
    await sleep(500)
    await redis.kill()
    await redis.start()
    await sleep(200)
    for (const node of h.nodes) await h.waitReady(node, 'ready')
    assertAllRunning(h)
    await sleep(500)
  } finally {
    written = s.stop()
  }
  await assertNothingLost(h, board, writers, written)
  // And after it, an edit crosses nodes through Redis (no periodic check could carry it).
  const started = Date.now()
  writers[0].doc.getMap('meta').set('after', 'restart')
  await waitFor(() => writers.every(c => c.doc.getMap('meta').get('after') === 'restart'), {
    timeout: 3000, message: 'an edit after the restart to reach every node through Redis'
  })
  t.diagnostic(`after the restart an edit reached every node's clients in ${Date.now() - started} ms`)
  assertAllRunning(h)
  for (const node of h.nodes) {
    assert.ok(await h.metric(node, 'sync_cluster_redis_up') === 1, `${node.label}: sync_cluster_redis_up is 1`)
  }
}))
