// A rolling restart behind nginx: each of three nodes in turn gets SIGTERM and comes back on its
// port, while clients connected through the proxy keep editing. Each node exits 0, its clients
// are closed with 1012 and reconnect through the proxy, no edit is lost, and every client
// converges with what PostgreSQL holds.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  withCluster, waitFor, sleep, boardId, requirements, converged, content, describeDocs
} from './harness.mjs'

const skip = requirements()

test('rolling restart through nginx: every node in turn gets SIGTERM and returns, no edit lost, every client converges', { skip, timeout: 90000 }, t => withCluster(t, async h => {
  await h.startNodes(3, { healMs: 500 })
  const proxy = await h.startNginx()
  const board = boardId('rolling')
  const writers = []
  for (let i = 0; i < 6; i++) writers.push(await h.syncedClient(proxy, board, { name: `w${i}` }))
  assert.deepEqual(writers.map(c => c.upstream()).sort(), [0, 0, 1, 1, 2, 2])

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
  }, 20)
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
    clearInterval(loop)
  }
  t.diagnostic(timings.join('; '))

  await waitFor(() => converged(writers.map(c => c.doc)), {
    timeout: 10000,
    message: 'every writer to converge',
    describe: () => describeDocs(writers, d => d.getArray('log').length)
  })
  const log = new Set(writers[0].doc.getArray('log').toArray())
  for (const [name, entries] of written) {
    assert.deepEqual(entries.filter(e => !log.has(e)), [], `${name}'s edits are all there`)
  }
  assert.equal(writers[0].doc.getArray('log').length, n * writers.length, 'no entry twice')
  const meta = writers[0].doc.getMap('meta').toJSON()
  for (const c of writers) assert.equal(meta[c.name], n, `${c.name}'s last counter`)
  assert.equal(content(await h.exportBoard(board)), content(writers[0].doc), 'PostgreSQL holds what the writers show')
  for (const node of h.nodes) {
    assert.ok(node.running, `${node.label} runs`)
    assert.equal(content(await h.fetchState(node, board)), content(writers[0].doc), `${node.label} serves the same board`)
  }
  t.diagnostic(`${n} rounds of ${writers.length} writers; reconnects: ${writers.map(c => c.upstreams.join('>')).join(', ')}`)
}))
