// Flood control slows a client down instead of closing it: a real y-websocket provider that
// makes thousands of edits in a burst (a paste, a script) gets every one of them through and
// stays connected. y-websocket never reconnects after a 44xx close, so closing it would strand
// its edits until the page is reloaded.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { withHarness, waitFor, boardId, NEEDS_OUR_SERVER } from './harness.mjs'

const TIMEOUT = 60000

test('a provider making 3,000 edits in a burst is slowed down, never closed, and loses none', { skip: NEEDS_OUR_SERVER, timeout: TIMEOUT }, t => withHarness(t, async h => {
  // The default rate (500 messages/s, bursts of 1,000): 3,000 edits take about 4 s to get in.
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('burst')
  const burster = await h.syncedClient(server, board)
  const watcher = await h.syncedClient(server, board)
  const list = burster.doc.getArray('chat')
  const started = Date.now()
  for (let i = 0; i < 3000; i++) {
    // One transaction each: y-websocket sends one message per update.
    list.push([{ id: `m${i}`, author: 'burst', text: `edit ${i}`, at: i }])
  }
  await waitFor(() => watcher.doc.getArray('chat').length === 3000, {
    timeout: 45000,
    message: 'every edit of the burst to reach the other client',
    describe: () => `${watcher.doc.getArray('chat').length} of 3000 arrived; closes ${JSON.stringify(burster.closes)}`
  })
  const took = Date.now() - started
  assert.deepEqual(burster.closes, [], 'the bursting provider was never closed')
  assert.equal(burster.provider.wsconnected, true)
  // Everything is stored, in order.
  const stored = (await h.fetchState(server, board)).getArray('chat').toArray()
  assert.equal(stored.length, 3000)
  assert.deepEqual(stored.map(m => m.id), Array.from({ length: 3000 }, (_, i) => `m${i}`))
  console.log(`# 3,000 edits in a burst: all delivered in ${took} ms, no close`)
}))
