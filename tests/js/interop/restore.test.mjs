// Restore as a forward change, with real y-websocket clients connected: every client converges
// to the version's content without reconnecting; concurrent and offline edits merge by CRDT
// rules (see PROTOCOL.md, "Restore").
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Y, withHarness, waitFor, boardId } from './harness.mjs'

const TIMEOUT = 30000

function addNote (doc, id, text, pos = [0, 0]) {
  doc.transact(() => {
    const note = new Y.Map()
    doc.getMap('objects').set(id, note)
    note.set('kind', 'sticky')
    note.set('pos', pos)
    const t = new Y.Text()
    note.set('text', t)
    t.insert(0, text)
  })
}

const canon = doc => {
  const sort = v => Array.isArray(v) ? v.map(sort) : (v && typeof v === 'object') ? Object.fromEntries(Object.keys(v).sort().map(k => [k, sort(v[k])])) : v
  return JSON.stringify(sort({ objects: doc.getMap('objects').toJSON(), meta: doc.getMap('meta').toJSON() }))
}

async function saveVersion (h, server, board, label) {
  const res = await h.request(server, 'POST', `/v1/boards/${board}/versions`, { body: JSON.stringify({ label }) })
  assert.equal(res.status, 201, res.text())
  return res.json()
}

async function restore (h, server, board, version) {
  const res = await h.request(server, 'POST', `/v1/boards/${board}/restore`, { body: JSON.stringify({ version }) })
  assert.equal(res.status, 200, res.text())
  return res.json()
}

test('restore makes every connected client equal to the version, without reconnecting', { timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('restore')
  const a = await h.syncedClient(server, board)
  const b = await h.syncedClient(server, board)

  addNote(a.doc, 'n1', 'first note', [1, 2])
  addNote(a.doc, 'n2', 'second note', [3, 4])
  a.doc.getMap('meta').set('title', 'Retro')
  await waitFor(() => b.doc.getMap('objects').size === 2 && b.doc.getMap('meta').get('title') === 'Retro', { message: 'B to see the board' })
  const atVersion = canon(a.doc)
  const v1 = await saveVersion(h, server, board, 'before the workshop')
  assert.equal(v1.kind, 'named')

  // Edits after the version: move, delete, add, retitle, retype.
  b.doc.getMap('objects').get('n1').set('pos', [100, 200])
  b.doc.getMap('objects').delete('n2')
  addNote(b.doc, 'n3', 'added later')
  b.doc.getMap('meta').set('title', 'Changed')
  b.doc.getMap('objects').get('n1').get('text').insert(0, 'edited ')
  await waitFor(() => a.doc.getMap('objects').has('n3') && !a.doc.getMap('objects').has('n2'), { message: 'A to see the edits' })
  assert.notEqual(canon(a.doc), atVersion)

  const result = await restore(h, server, board, v1.id)
  assert.equal(result.before_version.kind, 'auto')
  assert.equal(result.before_version.reason, 'before restore')
  assert.ok(result.report.objects_created === 1 && result.report.objects_removed === 1, JSON.stringify(result.report))

  for (const [name, c] of [['A', a], ['B', b]]) {
    await waitFor(() => canon(c.doc) === atVersion, { message: `${name} to equal the version`, describe: () => canon(c.doc) })
  }
  // Nobody was disconnected: no close events and the sockets are still open.
  assert.deepEqual(a.closes, [])
  assert.deepEqual(b.closes, [])
  assert.ok(a.provider.wsconnected && b.provider.wsconnected)
  // The server's durable state agrees.
  assert.equal(canon(await h.fetchState(server, board)), atVersion)

  // The restore can be undone by restoring the version saved just before it.
  await restore(h, server, board, result.before_version.id)
  await waitFor(() => a.doc.getMap('objects').has('n3') && a.doc.getMap('meta').get('title') === 'Changed',
    { message: 'A to see the undone restore', describe: () => canon(a.doc) })
  await waitFor(() => canon(b.doc) === canon(a.doc), { message: 'B to match A after the undo' })
  assert.equal(a.doc.getMap('objects').get('n1').get('text').toString(), 'edited first note')
}))

test('a client editing concurrently with a restore converges with everyone', { timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('concurrent')
  const a = await h.syncedClient(server, board)
  const b = await h.syncedClient(server, board)
  addNote(a.doc, 'n1', 'hello world')
  await waitFor(() => b.doc.getMap('objects').has('n1'), { message: 'B to see n1' })
  const v1 = await saveVersion(h, server, board, 'v1')
  a.doc.getMap('objects').get('n1').get('text').insert(0, 'A: ')
  await waitFor(() => b.doc.getMap('objects').get('n1').get('text').toString() === 'A: hello world', { message: 'B to see the edit' })

  // B keeps typing at the end and adding notes while the restore (which changes the
  // beginning) is in flight: some edits reach the server before the restore, some after.
  let typing = true
  const typist = (async () => {
    for (let i = 0; typing && i < 200; i++) {
      const text = b.doc.getMap('objects').get('n1')?.get('text')
      if (text) text.insert(text.length, '!')
      if (i % 10 === 0) addNote(b.doc, `during-${i}`, 'made during the restore')
      await new Promise(resolve => setTimeout(resolve, 2))
    }
  })()
  await restore(h, server, board, v1.id)
  await new Promise(resolve => setTimeout(resolve, 50))
  typing = false
  await typist

  const c = await h.syncedClient(server, board)
  for (const [name, x] of [['A', a], ['B', b]]) {
    await waitFor(() => canon(x.doc) === canon(c.doc), { message: `${name} to converge with a fresh client`, describe: () => `${canon(x.doc)}\n${canon(c.doc)}` })
  }
  // The restore removed the "A: " prefix; B's typing that was concurrent with it or after it
  // survives (edits that reached the server before it were part of what it undid). Where a
  // concurrent '!' lands relative to the restored text follows Yjs' ordering rules.
  const text = c.doc.getMap('objects').get('n1').get('text').toString()
  assert.ok(text.includes('hello world') && !text.includes('A: '), text)
  assert.ok(text.includes('!'), `B's concurrent typing survives: ${text}`)
}))

test('an offline client that edited before a restore merges when it reconnects', { timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('offline')
  const a = await h.syncedClient(server, board)
  const o = await h.syncedClient(server, board)
  addNote(a.doc, 'n1', 'shared')
  addNote(a.doc, 'n2', 'will be removed by the restore')
  await waitFor(() => o.doc.getMap('objects').size === 2, { message: 'O to see both notes' })
  const v1 = await saveVersion(h, server, board, 'v1')
  addNote(a.doc, 'n3', 'added after v1')
  await waitFor(() => o.doc.getMap('objects').has('n3'), { message: 'O to see n3' })

  o.provider.disconnect()
  addNote(o.doc, 'offline', 'made offline')
  o.doc.getMap('objects').get('n1').get('text').insert(6, ' (offline)')
  o.doc.getMap('objects').get('n3').set('color', '#ff0000')

  await restore(h, server, board, v1.id)
  await waitFor(() => !a.doc.getMap('objects').has('n3'), { message: 'A to see the restore' })

  o.provider.connect()
  await waitFor(() => a.doc.getMap('objects').has('offline') && canon(a.doc) === canon(o.doc),
    { message: 'O and A to converge', describe: () => `${canon(a.doc)}\n${canon(o.doc)}` })
  // As documented: objects created offline stay; text typed offline into kept objects stays;
  // edits to an object the restore removed are lost with it.
  assert.equal(a.doc.getMap('objects').get('offline').get('text').toString(), 'made offline')
  assert.equal(a.doc.getMap('objects').get('n1').get('text').toString(), 'shared (offline)')
  assert.equal(a.doc.getMap('objects').has('n3'), false)
}))

test('bad restore requests get clear errors and change nothing', { timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('bad')
  const a = await h.syncedClient(server, board)
  addNote(a.doc, 'n1', 'keep me')
  await waitFor(async () => (await h.fetchState(server, board)).getMap('objects').has('n1'), { message: 'n1 durable' })
  const before = canon(await h.fetchState(server, board))

  const corrupt = await h.request(server, 'POST', `/v1/boards/${board}/restore`, { body: new Uint8Array([7, 200, 1, 2]), contentType: 'application/octet-stream' })
  assert.equal(corrupt.status, 400, corrupt.text())
  assert.ok(corrupt.json().error.message.length > 0)
  // An incremental update (text typed after text it does not contain) is not a full state.
  const other = new Y.Doc()
  other.getText('t').insert(0, 'abc')
  const sv = Y.encodeStateVector(other)
  other.getText('t').insert(3, 'd')
  const partial = Y.encodeStateAsUpdate(other, sv)
  const incomplete = await h.request(server, 'POST', `/v1/boards/${board}/restore`, { body: partial, contentType: 'application/octet-stream' })
  assert.equal(incomplete.status, 400, incomplete.text())
  assert.equal(incomplete.json().error.code, 'incomplete_snapshot')
  const missing = await h.request(server, 'POST', `/v1/boards/${board}/restore`, { body: JSON.stringify({ version: 999999 }) })
  assert.equal(missing.status, 404)
  assert.equal(missing.json().error.code, 'version_not_found')
  const noBoard = await h.request(server, 'POST', '/v1/boards/no-such-board/restore', { body: JSON.stringify({ version: 1 }) })
  assert.equal(noBoard.status, 404)
  const junk = await h.request(server, 'POST', `/v1/boards/${board}/restore`, { body: 'not json' })
  assert.equal(junk.status, 400)

  assert.equal(canon(await h.fetchState(server, board)), before)
  const versions = (await h.fetch(server, `/v1/boards/${board}/versions`)).json().versions
  assert.equal(versions.length, 0, 'no "before restore" version for refused restores')

  // Restoring an uploaded full snapshot works too (a snapshot made by plain Yjs).
  const snap = new Y.Doc()
  const note = new Y.Map()
  snap.getMap('objects').set('from-file', note)
  note.set('kind', 'rect')
  const ok = await h.request(server, 'POST', `/v1/boards/${board}/restore`, { body: Y.encodeStateAsUpdate(snap), contentType: 'application/octet-stream' })
  assert.equal(ok.status, 200, ok.text())
  await waitFor(() => a.doc.getMap('objects').has('from-file') && !a.doc.getMap('objects').has('n1'), { message: 'A to see the uploaded snapshot' })
}))
