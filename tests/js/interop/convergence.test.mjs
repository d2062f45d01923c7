// Unmodified y-websocket clients converge through the server: concurrent edits, offline edits,
// and content a client already held before it first connected.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Y, withHarness, waitFor, boardId } from './harness.mjs'

const TIMEOUT = 20000

function addNote (doc, id, text, extra = {}) {
  doc.transact(() => {
    const note = new Y.Map()
    doc.getMap('objects').set(id, note)
    note.set('kind', 'sticky')
    note.set('pos', [10, 20])
    for (const [k, v] of Object.entries(extra)) note.set(k, v)
    const t = new Y.Text()
    note.set('text', t)
    t.insert(0, text)
  })
}

function noteText (doc, id) {
  const note = doc.getMap('objects').get(id)
  return note && note.get('text') ? note.get('text').toString() : undefined
}

test('two clients converge on map entries and text', { timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('two')
  const a = await h.syncedClient(server, board)
  const b = await h.syncedClient(server, board)

  addNote(a.doc, 'note-a', 'from A')
  a.doc.getText('title').insert(0, 'AAA')
  addNote(b.doc, 'note-b', 'from B')
  b.doc.getText('title').insert(0, 'BBB')

  for (const [name, c] of [['A', a], ['B', b]]) {
    await waitFor(() => noteText(c.doc, 'note-a') === 'from A' && noteText(c.doc, 'note-b') === 'from B' &&
      c.doc.getText('title').length === 6,
    { message: `${name} to see both notes and both title edits`, describe: () => JSON.stringify(c.doc.toJSON()) })
  }
  const title = a.doc.getText('title').toString()
  assert.equal(b.doc.getText('title').toString(), title)
  assert.ok(title === 'AAABBB' || title === 'BBBAAA', `title is an interleaving of both inserts: ${title}`)
  assert.deepEqual(b.doc.getMap('objects').toJSON(), a.doc.getMap('objects').toJSON())
  assert.deepEqual(a.doc.getMap('objects').get('note-b').get('pos'), [10, 20])

  // A later concurrent edit of the same text also lands on both sides.
  a.doc.getMap('objects').get('note-b').get('text').insert(0, 'A>')
  b.doc.getMap('objects').get('note-a').get('text').insert(6, '<B')
  await waitFor(() => noteText(a.doc, 'note-a') === 'from A<B' && noteText(b.doc, 'note-b') === 'A>from B',
    { message: 'second round of edits', describe: () => JSON.stringify([a.doc.toJSON(), b.doc.toJSON()]) })
  await waitFor(() => noteText(b.doc, 'note-a') === 'from A<B' && noteText(a.doc, 'note-b') === 'A>from B',
    { message: 'second round of edits on both', describe: () => JSON.stringify([a.doc.toJSON(), b.doc.toJSON()]) })
}))

test('ten clients converge to identical state vectors and JSON', { timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('ten')
  const clients = await Promise.all(Array.from({ length: 10 }, () => h.syncedClient(server, board)))

  // Everyone edits at once: its own note plus concurrent inserts into one shared text.
  clients.forEach((c, i) => {
    addNote(c.doc, `note-${i}`, `note ${i}`, { z: `a${i}` })
    c.doc.getText('shared').insert(0, `[${i}]`)
  })
  clients.forEach((c, i) => {
    const text = c.doc.getText('shared')
    text.insert(text.length, `(${i})`)
  })

  const expectedLen = clients.reduce((n, _c, i) => n + `[${i}]`.length + `(${i})`.length, 0)
  await waitFor(() => clients.every(c => c.doc.getMap('objects').size === 10 && c.doc.getText('shared').length === expectedLen), {
    timeout: 10000,
    message: 'all ten clients to have ten notes and all shared-text inserts',
    describe: () => clients.map(c => `${c.doc.getMap('objects').size}/${c.doc.getText('shared').length}`).join(' ')
  })
  const sv0 = Buffer.from(Y.encodeStateVector(clients[0].doc)).toString('hex')
  const json0 = clients[0].doc.toJSON()
  for (const [i, c] of clients.entries()) {
    assert.equal(Buffer.from(Y.encodeStateVector(c.doc)).toString('hex'), sv0, `state vector of client ${i}`)
    assert.deepEqual(c.doc.toJSON(), json0, `JSON of client ${i}`)
  }
  // The merged state vector has an entry for every client, and the content is complete.
  assert.equal(Y.decodeStateVector(Y.encodeStateVector(clients[0].doc)).size, 10)
  const shared = clients[0].doc.getText('shared').toString()
  for (let i = 0; i < 10; i++) {
    assert.ok(shared.includes(`[${i}]`) && shared.includes(`(${i})`), `shared text holds client ${i}'s inserts: ${shared}`)
    assert.equal(json0.objects[`note-${i}`].text, `note ${i}`)
    assert.equal(json0.objects[`note-${i}`].z, `a${i}`)
  }
}))

test('an edit made while disconnected merges on reconnect', { timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('offline')
  const a = await h.syncedClient(server, board)
  const b = await h.syncedClient(server, board)
  addNote(a.doc, 'shared-note', 'base')
  await waitFor(() => noteText(b.doc, 'shared-note') === 'base', { message: 'B to see the base note' })

  a.provider.disconnect()
  await waitFor(() => !a.provider.wsconnected && a.provider.ws === null, { message: 'A to disconnect' })
  addNote(a.doc, 'offline-note', 'written offline')
  a.doc.getMap('objects').get('shared-note').get('text').insert(4, '+A')
  // B edits the same text concurrently while A is away.
  b.doc.getMap('objects').get('shared-note').get('text').insert(0, 'B+')
  // Give a wrongly-connected A time to leak the edit; it must not reach B yet.
  await new Promise(resolve => setTimeout(resolve, 200))
  assert.equal(b.doc.getMap('objects').has('offline-note'), false, 'A is really offline')

  a.provider.connect()
  await waitFor(() => noteText(b.doc, 'offline-note') === 'written offline', {
    message: 'B to receive the note A wrote offline',
    describe: () => JSON.stringify(b.doc.toJSON())
  })
  await waitFor(() => noteText(a.doc, 'shared-note') === 'B+base+A' && noteText(b.doc, 'shared-note') === 'B+base+A', {
    message: 'both to merge the concurrent text edits',
    describe: () => JSON.stringify([noteText(a.doc, 'shared-note'), noteText(b.doc, 'shared-note')])
  })
  // A third client that never saw either replica gets the merged result from the server.
  const c = await h.syncedClient(server, board)
  await waitFor(() => noteText(c.doc, 'offline-note') === 'written offline' && noteText(c.doc, 'shared-note') === 'B+base+A',
    { message: 'fresh client to see the merged board', describe: () => JSON.stringify(c.doc.toJSON()) })
}))

test('content a client holds before it first connects reaches the server', { timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('preloaded')
  const doc = new Y.Doc()
  addNote(doc, 'preloaded-note', 'was here before connecting', { color: '#ffcc00' })
  doc.getMap('meta').set('title', 'Preloaded board')
  doc.getArray('chat').push([{ id: 'm1', author: 'a', text: 'hello', at: 1 }])

  const a = await h.syncedClient(server, board, { doc })
  const fresh = await h.syncedClient(server, board)
  await waitFor(() => noteText(fresh.doc, 'preloaded-note') === 'was here before connecting' &&
    fresh.doc.getMap('meta').get('title') === 'Preloaded board' && fresh.doc.getArray('chat').length === 1, {
    message: 'a fresh client to see the preloaded content',
    describe: () => JSON.stringify(fresh.doc.toJSON())
  })
  assert.equal(fresh.doc.getMap('objects').get('preloaded-note').get('color'), '#ffcc00')
  assert.deepEqual(fresh.doc.getArray('chat').toJSON(), [{ id: 'm1', author: 'a', text: 'hello', at: 1 }])

  // The export endpoint holds it too (it is on the server, not just relayed between peers).
  const exported = await waitFor(async () => {
    const d = await h.fetchState(server, board)
    return noteText(d, 'preloaded-note') === 'was here before connecting' ? d : null
  }, { message: 'GET /v1/boards/{id}/state to contain the preloaded note' })
  assert.equal(exported.getMap('meta').get('title'), 'Preloaded board')
  assert.deepEqual(exported.getArray('chat').toJSON(), [{ id: 'm1', author: 'a', text: 'hello', at: 1 }])
  assert.deepEqual(exported.getMap('objects').toJSON(), a.doc.getMap('objects').toJSON())
}))
