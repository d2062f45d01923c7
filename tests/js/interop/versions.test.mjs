// Version history over HTTP: named versions, automatic checkpoints with retention, reading a
// version as JSON or as a Yjs update (which never changes the board), deleting.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Y, withHarness, waitFor, boardId } from './harness.mjs'

const TIMEOUT = 30000

test('named versions: save, list, read as JSON and Yjs, delete', { timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'))
  const board = boardId('versions')
  const a = await h.syncedClient(server, board)
  const note = new Y.Map()
  a.doc.getMap('objects').set('n1', note)
  note.set('kind', 'sticky')
  note.set('pos', [5, 6])
  a.doc.getMap('meta').set('title', 'Planning')
  await waitFor(async () => (await h.fetchState(server, board)).getMap('meta').get('title') === 'Planning', { message: 'title durable' })

  const created = await h.request(server, 'POST', `/v1/boards/${board}/versions`, { body: JSON.stringify({ label: 'Kick-off', author: 'ana' }) })
  assert.equal(created.status, 201, created.text())
  const v = created.json()
  assert.equal(v.kind, 'named')
  assert.equal(v.label, 'Kick-off')
  assert.equal(v.author, 'ana')
  assert.ok(v.size > 0 && v.created_at > 1.7e12 && v.covers_seq >= 1, JSON.stringify(v))

  // Later edits do not change the version.
  a.doc.getMap('meta').set('title', 'Later')
  note.set('pos', [50, 60])
  await waitFor(async () => (await h.fetchState(server, board)).getMap('meta').get('title') === 'Later', { message: 'edit durable' })

  const list = (await h.fetch(server, `/v1/boards/${board}/versions`)).json().versions
  assert.deepEqual(list.map(x => x.id), [v.id])
  const asJson = (await h.fetch(server, `/v1/boards/${board}/versions/${v.id}`)).json()
  assert.equal(asJson.version.id, v.id)
  assert.equal(asJson.board.meta.title, 'Planning')
  assert.deepEqual(asJson.board.objects.map(o => [o.id, o.pos]), [['n1', [5, 6]]])
  for (const path of [`/v1/boards/${board}/versions/${v.id}?format=yjs`]) {
    const bin = await h.fetch(server, path)
    assert.equal(bin.status, 200)
    assert.equal(bin.headers['content-type'], 'application/octet-stream')
    const doc = new Y.Doc()
    Y.applyUpdate(doc, new Uint8Array(bin.body))
    assert.equal(doc.getMap('meta').get('title'), 'Planning')
  }
  // Reading a version never changes the board.
  const live = await h.fetchState(server, board)
  assert.equal(live.getMap('meta').get('title'), 'Later')
  assert.equal(a.doc.getMap('meta').get('title'), 'Later')

  // Errors.
  assert.equal((await h.fetch(server, `/v1/boards/${board}/versions/424242`)).status, 404)
  const badId = await h.fetch(server, `/v1/boards/${board}/versions/abc`)
  assert.equal(badId.status, 400)
  assert.equal(badId.json().error.code, 'invalid_version')
  assert.equal((await h.fetch(server, '/v1/boards/nope/versions')).status, 404)
  const noLabel = await h.request(server, 'POST', `/v1/boards/${board}/versions`, { body: JSON.stringify({ label: '  ' }) })
  assert.equal(noLabel.status, 400)

  assert.equal((await h.request(server, 'DELETE', `/v1/boards/${board}/versions/${v.id}`)).status, 204)
  assert.equal((await h.request(server, 'DELETE', `/v1/boards/${board}/versions/${v.id}`)).status, 404)
  assert.deepEqual((await h.fetch(server, `/v1/boards/${board}/versions`)).json().versions, [])
}))

test('automatic checkpoints keep exactly the newest K, and never touch named versions', { timeout: TIMEOUT }, t => withHarness(t, async h => {
  const server = await h.startServer(await h.database('sqlite'), { args: ['--checkpoint-rows', '5', '--keep-auto-versions', '2'] })
  const board = boardId('retention')
  const a = await h.syncedClient(server, board)
  const counter = a.doc.getMap('objects')
  counter.set('seed', 0)
  await waitFor(async () => (await h.fetchState(server, board)).getMap('objects').has('seed'), { message: 'seed durable' })
  const named = (await h.request(server, 'POST', `/v1/boards/${board}/versions`, { body: JSON.stringify({ label: 'keep me' }) })).json()

  // 30 separate durable edits: a checkpoint every 5 updates.
  for (let i = 0; i < 30; i++) {
    counter.set('seed', i + 1)
    await waitFor(async () => (await h.fetchState(server, board)).getMap('objects').get('seed') === i + 1, { message: `edit ${i} durable` })
  }
  let versions
  await waitFor(async () => {
    versions = (await h.fetch(server, `/v1/boards/${board}/versions`)).json().versions
    const autos = versions.filter(v => v.kind === 'auto')
    return autos.length === 2 && autos[0].covers_seq >= 26
  }, { message: 'two newest automatic versions', describe: () => JSON.stringify(versions) })
  const autos = versions.filter(v => v.kind === 'auto')
  assert.ok(autos.every(v => v.reason === 'checkpoint' && v.author === 'server'), JSON.stringify(autos))
  assert.ok(autos[0].covers_seq > autos[1].covers_seq)
  assert.ok(versions.some(v => v.id === named.id && v.kind === 'named'))
  // Automatic versions follow retention; they cannot be deleted by hand.
  const refused = await h.request(server, 'DELETE', `/v1/boards/${board}/versions/${autos[0].id}`)
  assert.equal(refused.status, 409)
  assert.equal(refused.json().error.code, 'automatic_version')
}))
