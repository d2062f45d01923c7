// A rolling restart behind nginx: each of three nodes in turn gets SIGTERM and comes back on its
// port, while clients connected through the proxy keep editing. Each node exits 0, its clients
// are closed with 1012 and reconnect through the proxy, no edit is lost, and every client
// converges with what PostgreSQL holds.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  withCluster, waitFor, sleep, boardId, requirements, content, stream, assertNothingLost
} from './harness.mjs'

const skip = requirements()

test('rolling restart through nginx: every node in turn gets SIGTERM and returns, no edit lost, every client converges', { skip, timeout: 90000 }, t => withCluster(t, async h => {
  await h.startNodes(3, { healMs: 500 })
  const proxy = await h.startNginx()
  const board = boardId('rolling')
  const writers = []
  for (let i = 0; i < 6; i++) writers.push(await h.syncedClient(proxy, board, { name: `w${i}` }))
  assert.deepEqual(writers.map(c => c.upstream()).sort(), [0, 0, 1, 1, 2, 2])

  const s = stream(writers, 20)
  const timings = []
  try {
    await sleep(500)
    for (let i = 0; i < h.nodes.length; i++) {
      const started = Date.now()
      const onNode = writers.filter(c => c.upstream() === i)
      const status = await h.restartNode(i)
      assert.deepEqual(status, { code: 0, signal: null }, `node${i} exits 0 on SIGTERM`)
      await h.waitReady(h.nodes[i], 'ready')
      const back = Date.now() - started
      // Its clients were told to reconnect (1012), even those sending at that moment, and
      // did, through the proxy.
      for (const c of onNode) {
        const last = c.closes.at(-1)
        assert.equal(last?.code, 1012, `${c.name} closed with 1012: ${JSON.stringify(c.closes)}`)
      }
      await waitFor(() => writers.every(c => c.provider.synced), {
        timeout: 10000,
        message: `every writer connected and synced after node${i}'s restart`,
        describe: () => writers.map(c => `${c.name}: ${c.upstreams} synced=${c.provider.synced}`).join(', ')
      })
      timings.push(`node${i}: back in ${back} ms, ${onNode.length} clients moved to ${onNode.map(c => c.upstream())}`)
      await sleep(500)
    }
  } finally {
    s.stop()
  }
  t.diagnostic(timings.join('; '))

  await assertNothingLost(h, board, writers, s.written, { rounds: s.rounds })
  for (const node of h.nodes) {
    assert.ok(node.running, `${node.label} runs`)
    assert.equal(content(await h.fetchState(node, board)), content(writers[0].doc), `${node.label} serves the same board`)
  }
  t.diagnostic(`${s.rounds} rounds of ${writers.length} writers; reconnects: ${writers.map(c => c.upstreams.join('>')).join(', ')}`)
}))
