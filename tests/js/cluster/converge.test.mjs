// Three nodes behind nginx: y-websocket clients spread across them converge (concurrent edits,
// presence, offline edits merged on a reconnect that may reach another node), the database
// holds what they all show, and a board deleted through the proxy closes its clients on every
// node.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  Y, withCluster, waitFor, sleep, boardId, requirements, converged, content, describeDocs
} from './harness.mjs'

const skip = requirements()

/** Names in `client`'s awareness states, sorted. */
function presentNames (client) {
  return [...client.provider.awareness.getStates().values()]
    .map(s => s.user?.name).filter(Boolean).sort()
}

test('clients on three nodes through nginx converge: concurrent edits, presence, offline edits', { skip, timeout: 60000 }, t => withCluster(t, async h => {
  await h.startNodes(3)
  const proxy = await h.startNginx()
  const board = boardId('converge')
  const clients = []
  for (let i = 0; i < 6; i++) clients.push(await h.syncedClient(proxy, board, { name: `c${i}` }))
  const nodesUsed = new Set(clients.map(c => c.upstream()))
  assert.deepEqual([...nodesUsed].sort(), [0, 1, 2], `round robin spreads the clients over the three nodes: ${clients.map(c => c.upstream())}`)

  // Presence crosses nodes: everyone sees everyone.
  const names = clients.map(c => c.name).sort()
  for (const c of clients) c.provider.awareness.setLocalStateField('user', { name: c.name, color: '#123456' })
  await waitFor(() => clients.every(c => presentNames(c).join() === names.join()), {
    timeout: 5000,
    message: 'every client to see the presence of all six',
    describe: () => clients.map(c => `${c.name}@node${c.upstream()}: ${presentNames(c)}`).join('; ')
  })

  // Concurrent edits from every node: a note each, and interleaved inserts into one text.
  const shared = new Y.Text()
  clients[0].doc.getMap('objects').set('shared', new Y.Map([['kind', 'sticky'], ['text', shared]]))
  await waitFor(() => clients.every(c => c.doc.getMap('objects').get('shared')?.get('text')), { message: 'the shared note everywhere' })
  for (let round = 0; round < 10; round++) {
    for (const c of clients) {
      c.doc.transact(() => {
        c.doc.getMap('objects').set(`${c.name}-${round}`, new Y.Map([['kind', 'sticky'], ['pos', [round, round]]]))
        c.doc.getMap('objects').get('shared').get('text').insert(0, `${c.name}.${round} `)
        c.doc.getArray('log').push([`${c.name}-${round}`])
      })
    }
    await sleep(5)
  }
  await waitFor(() => converged(clients.map(c => c.doc)), {
    timeout: 10000,
    message: 'every client to converge',
    describe: () => describeDocs(clients)
  })
  assert.equal(clients[0].doc.getArray('log').length, 60)
  assert.equal(clients[0].doc.getMap('objects').size, 61)

  // Offline edits: two clients go offline, edit (one edits the shared text concurrently with an
  // online client), and come back through the proxy, to whichever node it picks.
  const [off1, off2, online] = [clients[0], clients[1], clients[2]]
  off1.provider.disconnect()
  off2.provider.disconnect()
  await waitFor(() => !off1.provider.wsconnected && !off2.provider.wsconnected, { message: 'two clients offline' })
  await waitFor(() => presentNames(online).join() === names.filter(n => n !== off1.name && n !== off2.name).join(), {
    message: 'the offline clients\' presence to leave the other nodes',
    describe: () => presentNames(online).join()
  })
  off1.doc.getMap('objects').set('offline-1', new Y.Map([['kind', 'sticky']]))
  off1.doc.getMap('objects').get('shared').get('text').insert(0, 'OFFLINE-1 ')
  off2.doc.getArray('log').push(['offline-2'])
  online.doc.getMap('objects').get('shared').get('text').insert(0, 'ONLINE ')
  online.doc.getMap('meta').set('title', 'edited while two were away')
  await sleep(300)
  assert.ok(!clients.slice(2).some(c => c.doc.getMap('objects').has('offline-1')), 'an offline edit stays local')
  // One request through the proxy moves its round robin on by one, so each comes back to
  // another node than the one it left.
  assert.equal((await h.fetch(proxy, '/readyz')).status, 200)
  off1.provider.connect()
  await waitFor(() => off1.provider.synced, { timeout: 10000, message: `${off1.name} to sync again` })
  off2.provider.connect()
  await waitFor(() => off2.provider.synced, { timeout: 10000, message: `${off2.name} to sync again` })
  for (const c of [off1, off2]) {
    assert.notEqual(c.upstream(), c.upstreams[0], `${c.name} reconnected to another node: ${c.upstreams}`)
  }
  await waitFor(() => converged(clients.map(c => c.doc)), {
    timeout: 10000,
    message: 'every client to converge after the offline edits',
    describe: () => describeDocs(clients)
  })
  const text = clients[5].doc.getMap('objects').get('shared').get('text').toString()
  assert.ok(text.includes('OFFLINE-1 ') && text.includes('ONLINE '), text)
  assert.ok(clients[5].doc.getMap('objects').has('offline-1'))
  assert.ok(clients[5].doc.getArray('log').toArray().includes('offline-2'))
  assert.equal(clients[4].doc.getMap('meta').get('title'), 'edited while two were away')
  // Awareness clocks: y-websocket's disconnect() announced its client as gone at the clock it
  // re-sends on connect, and a reconnected client already holds everyone else's current
  // clocks, so neither side takes the other's state again until it changes (or the 15 s
  // renewal); the same happens on one node and with the reference server. On a whiteboard it
  // changes all the time: everyone moves their cursor.
  for (const [i, c] of clients.entries()) c.provider.awareness.setLocalStateField('cursor', { x: i, y: i })
  await waitFor(() => clients.every(c => presentNames(c).join() === names.join()), {
    message: 'the returning clients\' presence everywhere',
    describe: () => clients.map(c => `${c.name}@node${c.upstream()}: ${presentNames(c)}`).join('; ')
  })

  // What they all show is what PostgreSQL holds, and what each node serves.
  const expected = content(clients[0].doc)
  assert.equal(content(await h.exportBoard(board)), expected, 'the database holds what the clients show')
  for (const node of h.nodes) {
    await waitFor(async () => content(await h.fetchState(node, board)) === expected, {
      timeout: 5000, message: `${node.label}'s GET /v1/boards/{id}/state to match`
    })
  }
}))

test('deleting a board through nginx closes its clients on every node', { skip, timeout: 30000 }, t => withCluster(t, async h => {
  await h.startNodes(3)
  const proxy = await h.startNginx()
  const board = boardId('delete')
  const clients = []
  for (let i = 0; i < 3; i++) clients.push(await h.syncedClient(proxy, board, { name: `c${i}` }))
  assert.deepEqual(clients.map(c => c.upstream()).sort(), [0, 1, 2], 'one client on each node')
  clients[1].doc.getMap('objects').set('doomed', new Y.Map([['kind', 'sticky']]))
  await waitFor(() => clients.every(c => c.doc.getMap('objects').has('doomed')), { message: 'the note everywhere' })

  const closedEvents = clients.map(c => new Promise(resolve => c.provider.on('closed', resolve)))
  const deleted = await h.request(proxy, 'DELETE', `/v1/boards/${board}`)
  assert.equal(deleted.status, 204, deleted.text())
  const closed = await Promise.all(closedEvents)
  assert.deepEqual(closed.map(e => e.code), [4404, 4404, 4404], 'every node closes its clients with 4404')
  for (const node of h.nodes) {
    const r = await h.fetch(node, `/v1/boards/${board}`)
    assert.equal(r.status, 404, `${node.label}: ${r.status} ${r.text()}`)
  }
  // Nor does reconnecting through the proxy bring it back.
  const late = h.client(proxy, board, { name: 'late' })
  const lateClosed = await new Promise(resolve => late.provider.on('closed', resolve))
  assert.equal(lateClosed.code, 4404)
}))
