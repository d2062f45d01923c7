// A node killed with SIGKILL mid-stream, behind nginx: everything any client had seen is in
// PostgreSQL, the dead node's clients reconnect through the proxy to the other nodes and lose
// no edit, and the presence it brought disappears from the other nodes within its timeout.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  withCluster, waitFor, sleep, boardId, requirements, stream, assertNothingLost
} from './harness.mjs'

const skip = requirements()
const NODE_TIMEOUT_MS = 1500

test('a node killed mid-stream: its clients move to the others through nginx, nothing seen is lost, its presence goes', { skip, timeout: 60000 }, t => withCluster(t, async h => {
  await h.startNodes(3, { nodeTimeoutMs: NODE_TIMEOUT_MS, healMs: 500 })
  const proxy = await h.startNginx()
  const board = boardId('kill')
  const writers = []
  for (let i = 0; i < 6; i++) writers.push(await h.syncedClient(proxy, board, { name: `w${i}` }))
  assert.deepEqual(writers.map(c => c.upstream()), [0, 1, 2, 0, 1, 2], 'round robin: two writers on each node')
  // Presence on the node that will die, from a client connected to it directly (it keeps
  // trying that dead address, so it never brings its presence back elsewhere).
  const pat = await h.syncedClient(h.nodes[0], board, { name: 'pat' })
  pat.provider.awareness.setLocalStateField('user', { name: 'Pat', color: '#ff0000' })
  const patId = pat.doc.clientID
  const seesPat = c => c.provider.awareness.getStates().get(patId)?.user?.name === 'Pat'
  await waitFor(() => writers.every(seesPat), {
    message: 'every writer (on every node) to see Pat',
    describe: () => writers.map(c => `${c.name}@node${c.upstream()}: ${seesPat(c)}`).join(', ')
  })

  // Every writer appends to one log and bumps its counter every 10 ms, all along.
  const s = stream(writers, 10)
  try {
    await sleep(1000)
    await h.nodes[0].kill()
    const killedAt = Date.now()
    const victims = writers.filter(c => c.upstreams[0] === 0)

    // What each client has seen of the others' edits is in PostgreSQL now.
    await waitFor(() => victims.every(c => c.closes.length > 0), { message: 'the dead node\'s clients to see their sockets close' })
    const seen = writers.map(c => ({
      name: c.name,
      log: c.doc.getArray('log').toArray().filter(e => !e.startsWith(`${c.name}-`)),
      meta: Object.entries(c.doc.getMap('meta').toJSON()).filter(([k]) => k !== c.name)
    }))
    const stored = await h.exportBoard(board)
    const storedLog = new Set(stored.getArray('log').toArray())
    const storedMeta = stored.getMap('meta').toJSON()
    for (const s of seen) {
      const missing = s.log.filter(e => !storedLog.has(e))
      assert.deepEqual(missing, [], `${s.name} saw entries PostgreSQL does not hold`)
      for (const [k, v] of s.meta) assert.ok(storedMeta[k] >= v, `${s.name} saw ${k}=${v}, PostgreSQL has ${storedMeta[k]}`)
    }
    const seenCount = Math.min(...seen.map(s => s.log.length))
    assert.ok(seenCount >= 100, `every client saw a stream before the kill (the least: ${seenCount} entries)`)

    // Its clients come back through the proxy, on the other nodes; the stream goes on.
    await waitFor(() => victims.every(c => c.provider.synced && [1, 2].includes(c.upstream())), {
      timeout: 10000,
      message: 'the dead node\'s clients to reconnect through nginx to another node',
      describe: () => victims.map(c => `${c.name}: ${c.upstreams} synced=${c.provider.synced}`).join(', ')
    })
    const reconnectMs = Date.now() - killedAt

    // Pat's presence goes from every other node, long before the clients' own 30 s timeout.
    await waitFor(() => writers.every(c => !seesPat(c)), {
      timeout: NODE_TIMEOUT_MS + 3000,
      interval: 20,
      message: 'Pat\'s presence to disappear from the other nodes',
      describe: () => writers.map(c => `${c.name}@node${c.upstream()}: ${seesPat(c)}`).join(', ')
    })
    const presenceMs = Date.now() - killedAt
    assert.ok(pat.provider.wsconnected === false, 'Pat never reconnected')
    t.diagnostic(`victims reconnected in ${reconnectMs} ms; Pat's presence gone everywhere ${presenceMs} ms after the kill (node timeout ${NODE_TIMEOUT_MS} ms)`)
    assert.ok(presenceMs < NODE_TIMEOUT_MS + 2500, `presence cleared ${presenceMs} ms after the kill`)
    await sleep(300)
  } finally {
    s.stop()
  }

  // No edit lost: every entry every writer made is in every replica and in the database.
  await assertNothingLost(h, board, writers, s.written, { rounds: s.rounds })
  for (const node of h.nodes.slice(1)) {
    assert.ok(await h.metric(node, 'sync_cluster_nodes_gone_total') >= 1, `${node.label} counted node0 gone`)
  }
  t.diagnostic(`${s.rounds} rounds of ${writers.length} writers`)
}))
