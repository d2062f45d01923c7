// Durable acknowledgements (`?ack=1`), spoken by a raw `ws` client with lib0 encoding: the server
// counts the document messages (SyncStep2 + Update) a connection sent and reports how many are
// durable in a custom message `[varUint 100, varUint count]`; what it acked survives a crash; a
// client that did not opt in never sees message type 100.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'
import {
  Y, withHarness, waitFor, boardId, encodeUpdateMessage, sleep,
  MSG_SYNC, MSG_ACK, SYNC_STEP1, NEEDS_OUR_SERVER
} from './harness.mjs'

const TIMEOUT = 20000

/** Collects the incremental updates of a local doc, one per transaction. */
function recordingDoc () {
  const doc = new Y.Doc()
  const updates = []
  doc.on('update', u => updates.push(u))
  return { doc, updates }
}

function syncStep2Message (doc, remoteSv) {
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, MSG_SYNC)
  syncProtocol.writeSyncStep2(enc, doc, remoteSv)
  return encoding.toUint8Array(enc)
}

const ackCounts = raw => raw.decoded().filter(f => f.type === MSG_ACK).map(f => f.count)

test('ack=1 acknowledges updates and SyncStep2 once durable; others never get type 100', { skip: NEEDS_OUR_SERVER, timeout: TIMEOUT }, t => withHarness(t, async h => {
  const db = await h.database('sqlite')
  const server = await h.startServer(db)
  const board = boardId('ack')

  const acker = h.rawClient(server, board, 'ack=1')
  const plain = h.rawClient(server, board)
  await Promise.all([acker.opened, plain.opened])
  // The server greets with its SyncStep1.
  const step1 = await waitFor(() => acker.decoded().find(f => f.type === MSG_SYNC && f.subtype === SYNC_STEP1),
    { message: 'the server SyncStep1' })

  const { doc, updates } = recordingDoc()
  doc.getMap('objects').set('a', 1)
  doc.getMap('objects').set('b', 2)
  doc.getText('t').insert(0, 'three')
  assert.equal(updates.length, 3)
  for (const u of updates) acker.send(encodeUpdateMessage(u))

  await waitFor(() => ackCounts(acker).includes(3), {
    message: 'an ack covering all three updates',
    describe: () => JSON.stringify(acker.decoded().map(f => [f.type, f.subtype ?? f.count]))
  })
  let counts = ackCounts(acker)
  assert.ok(counts.every((c, i) => i === 0 || c >= counts[i - 1]), `acks never go backwards: ${counts}`)
  assert.ok(counts.every(c => c >= 1 && c <= 3), `acks count only what was sent: ${counts}`)

  // A SyncStep2 (the reply to the server's step 1) is a document message too: it is the 4th.
  doc.getMap('objects').set('d', 4)
  const reply = new Y.Doc()
  Y.applyUpdate(reply, Y.encodeStateAsUpdate(doc))
  acker.send(syncStep2Message(reply, step1.payload))
  await waitFor(() => ackCounts(acker).includes(4), {
    message: 'an ack covering the SyncStep2 as the 4th document message',
    describe: () => JSON.stringify(ackCounts(acker))
  })
  counts = ackCounts(acker)
  assert.ok(counts.every(c => c <= 4), `acks count only what was sent: ${counts}`)

  // The client without ack=1 writes too; once its edit is on the server it has had every chance
  // to receive an ack, and it must not have.
  const other = recordingDoc()
  other.doc.getMap('objects').set('plain', true)
  plain.send(encodeUpdateMessage(other.updates[0]))
  await waitFor(async () => (await h.fetchState(server, board)).getMap('objects').get('plain') === true,
    { message: 'the non-ack client\'s edit to reach the server' })
  await sleep(300)
  assert.deepEqual(plain.decoded().filter(f => f.type === MSG_ACK), [], 'no type-100 message without ack=1')
  assert.equal(plain.ws.readyState, plain.ws.OPEN, 'the non-ack client is still connected')

  // Acked means durable: crash right now and the acked edits are still there.
  await server.kill()
  const server2 = await h.startServer(db)
  const state = await h.fetchState(server2, board)
  assert.deepEqual(state.getMap('objects').toJSON(), { a: 1, b: 2, d: 4, plain: true })
  assert.equal(state.getText('t').toString(), 'three')
}))
