// Bad input closes only the offending socket, with the documented close code; other connections
// keep working. Invalid board ids are refused.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  Y, withHarness, waitFor, boardId, encodeUpdateMessage, within, NEEDS_OUR_SERVER
} from './harness.mjs'

const TIMEOUT = 20000

const GARBAGE = [
  // sync/update announcing a 240-byte update followed by 3 bytes
  { name: 'truncated update', bytes: [0x00, 0x02, 0xf0, 0x01, 0x01, 0x02, 0x03] },
  // a message type varUint whose continuation bit promises a byte that never comes
  { name: 'truncated varUint', bytes: [0x80] },
  // random-looking bytes that are not a y-protocols message
  { name: 'noise', bytes: [0x00, 0x02, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xde, 0xad, 0xbe, 0xef] }
]

test('undecodable frames close that socket with 4400 and harm nobody else', { skip: NEEDS_OUR_SERVER, timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('bad')
  const good = await h.syncedClient(server, board)
  good.doc.getMap('objects').set('before', 'x')

  for (const g of GARBAGE) {
    const raw = h.rawClient(server, board)
    await raw.opened
    raw.send(new Uint8Array(g.bytes))
    const closed = await within(raw.closed)
    assert.equal(closed.code, 4400, `${g.name}: close ${JSON.stringify(closed)}`)
  }

  // The good client was never disturbed and still syncs edits both ways.
  assert.equal(good.provider.wsconnected, true)
  assert.deepEqual(good.closes, [])
  good.doc.getMap('objects').set('after', 'y')
  const fresh = await h.syncedClient(server, board)
  await waitFor(() => fresh.doc.getMap('objects').get('after') === 'y' && fresh.doc.getMap('objects').get('before') === 'x',
    { message: 'a fresh client to see edits made before and after the garbage', describe: () => JSON.stringify(fresh.doc.toJSON()) })
  fresh.doc.getMap('objects').set('from-fresh', 'z')
  await waitFor(() => good.doc.getMap('objects').get('from-fresh') === 'z', { message: 'the good client to still receive edits' })
  assert.deepEqual(good.closes, [])
}))

test('a message above --max-message-bytes closes the socket with 4413', { skip: NEEDS_OUR_SERVER, timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'), { args: ['--max-message-bytes', '65536'] })
  const board = boardId('big')
  const good = await h.syncedClient(server, board)

  const doc = new Y.Doc()
  let update
  doc.on('update', u => { update = u })
  doc.getText('t').insert(0, 'x'.repeat(200 * 1024))
  const raw = h.rawClient(server, board)
  await raw.opened
  raw.send(encodeUpdateMessage(update))
  const closed = await within(raw.closed)
  assert.equal(closed.code, 4413, `close ${JSON.stringify(closed)}`)

  // Nothing of it was applied, and the other client is fine.
  good.doc.getMap('objects').set('still', 'here')
  await waitFor(async () => (await h.fetchState(server, board)).getMap('objects').get('still') === 'here',
    { message: 'the good client\'s edit to reach the server' })
  assert.equal((await h.fetchState(server, board)).getText('t').length, 0)
  assert.deepEqual(good.closes, [])
}))

test('invalid board ids are refused; a 128-character id is accepted', { skip: NEEDS_OUR_SERVER, timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  for (const id of ['bad%20id', 'x'.repeat(129), 'semi%3Bcolon', '%C3%A9t%C3%A9']) {
    const raw = h.rawClient(server, id)
    const result = await within(raw.closed)
    assert.ok(result.httpStatus === 400 || result.code === 4400, `board id ${id.slice(0, 20)}: ${JSON.stringify(result)}`)
    const res = await h.fetch(server, `/v1/boards/${id}/state`)
    assert.equal(res.status, 400, `GET state of ${id.slice(0, 20)}`)
    const body = res.json()
    assert.equal(typeof body.error?.code, 'string', `JSON error body: ${JSON.stringify(body)}`)
  }

  const longId = 'A-z_0.9' + 'x'.repeat(121)
  assert.equal(longId.length, 128)
  const a = await h.syncedClient(server, longId)
  a.doc.getMap('objects').set('k', 'v')
  await waitFor(async () => (await h.fetchState(server, longId)).getMap('objects').get('k') === 'v',
    { message: 'the 128-character board to hold the edit' })
}))
