// Awareness (presence) through the server: relayed to others, echoed to the sender, sent to late
// joiners on connect, and cleared for the others when a client leaves, politely or not.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { withHarness, waitFor, boardId, MSG_AWARENESS } from './harness.mjs'

const TIMEOUT = 20000

function awarenessFrame (clientID, clock, state) {
  const inner = encoding.createEncoder()
  encoding.writeVarUint(inner, 1)
  encoding.writeVarUint(inner, clientID)
  encoding.writeVarUint(inner, clock)
  encoding.writeVarString(inner, JSON.stringify(state))
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, MSG_AWARENESS)
  encoding.writeVarUint8Array(enc, encoding.toUint8Array(inner))
  return encoding.toUint8Array(enc)
}

/** Entries `{ clientID, clock, state }` of every awareness frame a raw client received. */
function awarenessEntries (raw) {
  const out = []
  for (const f of raw.decoded()) {
    if (f.type !== MSG_AWARENESS) continue
    const dec = decoding.createDecoder(f.payload)
    const n = decoding.readVarUint(dec)
    for (let i = 0; i < n; i++) {
      const clientID = decoding.readVarUint(dec)
      const clock = decoding.readVarUint(dec)
      const state = JSON.parse(decoding.readVarString(dec))
      out.push({ clientID, clock, state })
    }
  }
  return out
}

test('awareness reaches others and late joiners, and is cleared when a client leaves', { timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('aw')
  const a = await h.syncedClient(server, board)
  const b = await h.syncedClient(server, board)
  const aId = a.doc.clientID

  a.provider.awareness.setLocalStateField('user', { name: 'Alice', color: '#f00' })
  await waitFor(() => b.provider.awareness.getStates().get(aId)?.user?.name === 'Alice', {
    message: "B to see A's awareness state",
    describe: () => JSON.stringify([...b.provider.awareness.getStates()])
  })
  assert.deepEqual(b.provider.awareness.getStates().get(aId).user, { name: 'Alice', color: '#f00' })

  // An update of the state is relayed too.
  a.provider.awareness.setLocalStateField('cursor', { x: 5, y: 7 })
  await waitFor(() => b.provider.awareness.getStates().get(aId)?.cursor?.x === 5, { message: "B to see A's cursor" })

  // A client connecting later gets the current states from the server on connect.
  const c = await h.syncedClient(server, board)
  await waitFor(() => c.provider.awareness.getStates().get(aId)?.user?.name === 'Alice', {
    message: "a late joiner to receive A's awareness on connect",
    describe: () => JSON.stringify([...c.provider.awareness.getStates()])
  })

  // A leaves (destroy): the others drop A's state within a few seconds (not the 30 s timeout).
  h.destroyClient(a)
  await waitFor(() => !b.provider.awareness.getStates().has(aId) && !c.provider.awareness.getStates().has(aId), {
    timeout: 3000,
    message: "A's state to disappear from B and C",
    describe: () => JSON.stringify([[...b.provider.awareness.getStates().keys()], [...c.provider.awareness.getStates().keys()]])
  })
}))

test('awareness is echoed to the sender and cleared by the server when a socket dies', { timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('aw-raw')
  const b = await h.syncedClient(server, board)

  // A raw client that announces a state and then vanishes without a close frame or null state,
  // so only the server can clear it.
  const raw = h.rawClient(server, board)
  await raw.opened
  const rawId = 987654321
  raw.send(awarenessFrame(rawId, 1, { user: { name: 'Raw' } }))

  await waitFor(() => awarenessEntries(raw).some(e => e.clientID === rawId && e.state?.user?.name === 'Raw'), {
    message: 'the server to echo the awareness update to its sender',
    describe: () => JSON.stringify(awarenessEntries(raw))
  })
  await waitFor(() => b.provider.awareness.getStates().get(rawId)?.user?.name === 'Raw', {
    message: "B to see the raw client's awareness"
  })
  // B's own state reached the raw client as well (sent on connect or relayed).
  b.provider.awareness.setLocalStateField('user', { name: 'Bob' })
  await waitFor(() => awarenessEntries(raw).some(e => e.clientID === b.doc.clientID && e.state?.user?.name === 'Bob'), {
    message: "the raw client to receive B's awareness"
  })

  raw.terminate()
  await waitFor(() => !b.provider.awareness.getStates().has(rawId), {
    timeout: 3000,
    message: "the server to clear the dead socket's awareness for B",
    describe: () => JSON.stringify([...b.provider.awareness.getStates()])
  })
  // B itself is still connected and in sync.
  assert.equal(b.provider.wsconnected, true)
}))
