// The board assistant end to end with real Yjs clients: the server under test talks to a fake
// OpenAI-compatible model (fake-llm.mjs) that streams scripted tool calls; y-websocket clients
// watch the board change live, see the assistant in awareness while it works, keep their own
// concurrent edits, and see an undo arrive as an ordinary update.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { Y, withHarness, waitFor, boardId, sleep, NEEDS_OUR_SERVER } from './harness.mjs'
import { FakeLlm, FAKE_KEY, FAKE_MODEL, call, toolReply, textReply, toolResult, toolResults, messages } from './fake-llm.mjs'

const TIMEOUT = 25000
const OPTS = { timeout: TIMEOUT, skip: NEEDS_OUR_SERVER }
const VIEWPORT = { x: 0, y: 0, w: 1600, h: 900 }

// ---- setup ----

/** A fake model with `script`, closed when the test ends, and a server that uses it. */
async function setup (t, h, { script, delayMs = 0 }) {
  const fake = await FakeLlm.start({ script, delayMs })
  t.after(() => fake.close())
  const server = await h.startServer(await h.database('sqlite'), {
    env: { OPENAI_BASE_URL: fake.baseUrl, OPENAI_API_KEY: FAKE_KEY, ASSISTANT_MODEL: FAKE_MODEL }
  })
  return { fake, server }
}

/** Creates `board` with `POST /v1/boards`. */
async function createBoard (h, server, board) {
  const res = await h.request(server, 'POST', '/v1/boards', { body: JSON.stringify({ id: board }) })
  assert.equal(res.status, 201, `POST /v1/boards: ${res.status} ${res.text()}`)
}

// ---- the assistant endpoint ----

/**
 * `POST /v1/boards/{board}/assistant` with `Accept: text/event-stream`, parsed as it arrives.
 * Returns at once `{ events, response, finished }`: `events` fills with `{ event, data, raw, at }`
 * (data parsed as JSON when it is), `response` resolves to `{ status, headers }` when the headers
 * arrive, `finished` to `{ status, headers, events, text }` when the body ends.
 */
function streamPrompt (server, board, payload, { timeout = 20000 } = {}) {
  const events = []
  const body = Buffer.from(JSON.stringify(payload))
  let resolveResponse
  const response = new Promise(resolve => { resolveResponse = resolve })
  const finished = new Promise((resolve, reject) => {
    const req = http.request(`${server.httpUrl}/v1/boards/${board}/assistant`, {
      method: 'POST',
      agent: false,
      timeout,
      headers: { 'content-type': 'application/json', 'content-length': body.length, accept: 'text/event-stream' }
    }, res => {
      resolveResponse({ status: res.statusCode, headers: res.headers })
      let buf = ''
      let text = ''
      res.setEncoding('utf8')
      res.on('data', s => {
        text += s
        buf += s.replace(/\r\n/g, '\n')
        let i
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i)
          buf = buf.slice(i + 2)
          const ev = parseSseBlock(block)
          if (ev) events.push({ ...ev, at: Date.now() })
        }
      })
      res.on('error', reject)
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, events, text }))
    })
    req.on('timeout', () => req.destroy(new Error(`POST assistant (SSE) on ${board} timed out after ${timeout} ms`)))
    req.on('error', e => { resolveResponse({ error: e }); reject(e) })
    req.end(body)
  })
  finished.catch(() => {})
  return { events, response, finished }
}

/** One SSE block (`event:`/`data:` lines) as `{ event, data, raw }`, or null for a comment-only block. */
function parseSseBlock (block) {
  let event = 'message'
  const data = []
  let any = false
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'event') { event = value; any = true }
    if (field === 'data') { data.push(value); any = true }
  }
  if (!any) return null
  const raw = data.join('\n')
  let parsed = raw
  try { parsed = JSON.parse(raw) } catch {}
  return { event, data: parsed, raw }
}

/** `POST /v1/boards/{board}/assistant` without the SSE Accept header: the JSON answer at the end. */
async function jsonPrompt (h, server, board, payload, { timeout = 20000 } = {}) {
  return h.request(server, 'POST', `/v1/boards/${board}/assistant`, { body: JSON.stringify(payload), timeout })
}

const eventsNamed = (events, name) => events.filter(e => e.event === name)
const summarize = events => JSON.stringify(events.map(e => [e.event, e.raw.length > 300 ? e.raw.slice(0, 300) + '...' : e.raw]))

/** Waits for the `done` event of a streamed prompt and returns it. */
async function waitDone (stream, { timeout = 15000 } = {}) {
  const r = await stream.response
  if (r.error) throw r.error
  if (r.status !== 200) {
    const f = await stream.finished
    assert.fail(`POST assistant answered ${f.status}: ${f.text}`)
  }
  return waitFor(() => stream.events.find(e => e.event === 'done'), {
    timeout,
    message: 'the SSE done event',
    describe: () => summarize(stream.events)
  })
}

// ---- the board ----

/** Adds a sticky note the way a plain Yjs client following PROTOCOL.md ("The board document") would. */
function addSticky (doc, id, { text, x, y, color = '#fff59d', by = 'human' }) {
  doc.transact(() => {
    const o = new Y.Map()
    doc.getMap('objects').set(id, o)
    o.set('kind', 'sticky')
    o.set('pos', [x, y])
    o.set('size', [200, 200])
    o.set('rotation', 0)
    o.set('z', 'a' + id)
    o.set('color', color)
    o.set('created_by', by)
    o.set('created_at', Date.now())
    const t = new Y.Text()
    o.set('text', t)
    t.insert(0, text)
  })
}

/** The objects of `doc` as `[{ id, kind, text, pos, ... }]` (plain JSON). */
function objectsOf (doc) {
  return Object.entries(doc.getMap('objects').toJSON()).map(([id, o]) => ({ id, ...o }))
}
const stickies = doc => objectsOf(doc).filter(o => o.kind === 'sticky')
const byText = (doc, text) => objectsOf(doc).find(o => o.text === text)

/** JSON with sorted keys, so two docs that hold the same content compare equal as strings. */
function canonical (v) {
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']'
  if (v && typeof v === 'object') {
    return '{' + Object.keys(v).sort().map(k => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}'
  }
  return JSON.stringify(v)
}
const objectsJson = doc => canonical(doc.getMap('objects').toJSON())

// ---- awareness ----

const isAssistantState = s => typeof s?.user?.name === 'string' && s.user.name.includes('Assistant')

/** Records when an assistant awareness state appears and disappears on `client`'s provider. */
function watchAssistant (client) {
  const w = { seenAt: null, goneAt: null, states: [], present: false }
  const awareness = client.provider.awareness
  const check = () => {
    const states = [...awareness.getStates().entries()].filter(([id, s]) => id !== awareness.clientID && isAssistantState(s))
    const present = states.length > 0
    if (present) {
      if (w.seenAt === null) w.seenAt = Date.now()
      for (const [, s] of states) w.states.push(s)
    } else if (w.present) {
      w.goneAt = Date.now()
    }
    w.present = present
  }
  awareness.on('change', check)
  awareness.on('update', check)
  check()
  return w
}

// ---- tests ----

const NOTES = [
  { text: 'Idea: weekly demo', x: 100, y: 120, color: 'yellow' },
  { text: 'Risk: flaky CI', x: 360, y: 120, color: 'pink' },
  { text: 'Action: pin deps', x: 620, y: 120, color: 'blue' }
]
const createCalls = (notes, first = 2) => notes.map((n, i) =>
  call(`call_${first + i}`, 'createStickyNote', { text: n.text, x: n.x, y: n.y, color: n.color, frame: null }))

test('a prompt creates sticky notes that a connected client sees live, before the run ends', OPTS, t => withHarness(t, async h => {
  const { fake, server } = await setup(t, h, {
    delayMs: 120,
    script: [
      toolReply([call('call_1', 'getBoardState', { region: null })]),
      toolReply(createCalls(NOTES)),
      // The answer takes ~0.6 s more: the notes must reach A before it ends.
      textReply('Done.', { textPieces: 3 })
    ]
  })
  const board = boardId('ai-live')
  await createBoard(h, server, board)
  const a = await h.syncedClient(server, board)
  const aw = watchAssistant(a)

  // When each note appears in A's doc, and when the third does.
  const seen = new Map()
  let threeAt = null
  a.doc.on('update', () => {
    for (const o of stickies(a.doc)) if (!seen.has(o.text)) seen.set(o.text, Date.now())
    if (threeAt === null && stickies(a.doc).length >= 3) threeAt = Date.now()
  })

  const started = Date.now()
  const stream = streamPrompt(server, board, { prompt: 'Add three notes about the retro', viewport: VIEWPORT })
  const head = await stream.response
  assert.equal(head.status, 200, `POST assistant: ${JSON.stringify(head)}`)
  assert.match(String(head.headers['content-type']), /^text\/event-stream/)
  const done = await waitDone(stream)
  const doneAt = done.at
  const { events } = await stream.finished

  // The run took a while (the model is slow), and A saw all three notes well before it ended.
  assert.ok(doneAt - started > 1000, `the run took ${doneAt - started} ms`)
  assert.ok(threeAt !== null, `A saw ${stickies(a.doc).length} notes: ${JSON.stringify(objectsOf(a.doc))}`)
  assert.ok(threeAt < doneAt, `A saw the third note at +${threeAt - started} ms, done arrived at +${doneAt - started} ms`)
  assert.ok(seen.get(NOTES[0].text) <= seen.get(NOTES[2].text), 'notes arrive in call order')

  // A's notes: the texts and coordinates the model asked for.
  const notes = stickies(a.doc)
  assert.equal(notes.length, 3, JSON.stringify(notes))
  for (const n of NOTES) {
    const o = byText(a.doc, n.text)
    assert.ok(o, `note ${n.text}: ${JSON.stringify(notes)}`)
    assert.equal(o.kind, 'sticky')
    assert.deepEqual(o.pos, [n.x, n.y], `pos of ${n.text}`)
    assert.equal(typeof o.color, 'string')
    assert.ok(!('x' in o) && !('y' in o), `position is one pos value: ${JSON.stringify(o)}`)
    // Model aliases never become document ids.
    assert.ok(!/^n\d+$/.test(o.id), `object id ${o.id} is an alias`)
  }

  // Events: run first, done last, a step per model call, a tool event per call.
  assert.equal(events[0]?.event, 'run', summarize(events))
  const run = events[0].data
  assert.equal(typeof run.run_id, 'string')
  assert.ok(run.run_id.length > 0)
  assert.ok('before_version' in run, `run event: ${events[0].raw}`)
  assert.equal(events.at(-1).event, 'done', summarize(events))
  assert.equal(eventsNamed(events, 'done').length, 1)
  assert.equal(eventsNamed(events, 'step').length, 3, summarize(events))
  const tools = eventsNamed(events, 'tool').map(e => e.data)
  assert.deepEqual(tools.map(c => c.name), ['getBoardState', 'createStickyNote', 'createStickyNote', 'createStickyNote'])
  assert.deepEqual(tools.map(c => c.step), [1, 2, 2, 2])
  assert.ok(tools.slice(1).every(c => c.applied === true && c.result?.ok === true), JSON.stringify(tools))
  assert.equal(tools[0].applied, false, 'reading the board changes nothing')
  assert.ok(eventsNamed(events, 'text').some(e => JSON.stringify(e.data).includes('Done.')), summarize(events))
  // The tool events arrived before done, as the calls were made.
  assert.ok(eventsNamed(events, 'tool').every(e => e.at <= doneAt))

  const outcome = done.data
  assert.equal(outcome.run_id, run.run_id)
  assert.equal(outcome.status, 'completed', done.raw)
  assert.equal(outcome.summary, 'Done.')
  assert.equal(outcome.objects_created, 3)
  assert.equal(outcome.tool_calls.length, 4)
  assert.deepEqual(outcome.usage, { prompt_tokens: 250, completion_tokens: 50, total_tokens: 300 })

  // Presence: the assistant showed up in A's awareness while it worked, and left at the end.
  assert.ok(aw.seenAt !== null, 'A never saw the assistant in awareness')
  assert.ok(aw.seenAt >= started && aw.seenAt < doneAt, `assistant seen at +${aw.seenAt - started} ms, done at +${doneAt - started} ms`)
  await waitFor(() => aw.goneAt !== null && !aw.present, {
    timeout: 3000,
    message: "the assistant's awareness state to be removed after the run",
    describe: () => JSON.stringify([...a.provider.awareness.getStates()])
  })

  // What the model was sent: streamed requests with tools, the model name, then the results.
  assert.deepEqual(fake.problems, [])
  assert.equal(fake.requests.length, 3)
  const [r0, r1, r2] = fake.requests
  assert.equal(r0.model, FAKE_MODEL)
  assert.equal(r0.stream, true)
  assert.equal(r0.stream_options?.include_usage, true)
  const toolNames = (r0.tools || []).map(x => x.function?.name)
  for (const name of ['getBoardState', 'createStickyNote', 'moveObject']) assert.ok(toolNames.includes(name), `tools: ${toolNames}`)
  assert.ok(messages(r0).some(m => m.role === 'user' && m.content === 'Add three notes about the retro'),
    JSON.stringify(messages(r0)))
  assert.equal(toolResults(r1)[0]?.id, 'call_1')
  assert.ok(toolResult(r1, 'call_1')?.board?.objects, `getBoardState result: ${JSON.stringify(toolResults(r1))}`)
  const created = ['call_2', 'call_3', 'call_4'].map(id => toolResult(r2, id))
  assert.ok(created.every(r => r?.ok === true), JSON.stringify(toolResults(r2)))
  assert.deepEqual(created.map(r => r.created), [['n1'], ['n2'], ['n3']])
  // The assistant message repeats the calls before their results.
  const assistantMsg = messages(r2).findLast(m => m.role === 'assistant')
  assert.equal(assistantMsg?.tool_calls?.length, 3, JSON.stringify(messages(r2)))

  // The run is recorded.
  const runs = await h.fetch(server, `/v1/boards/${board}/assistant/runs`)
  assert.equal(runs.status, 200, runs.text())
  const [rec] = runs.json().runs
  assert.equal(rec.id, run.run_id, runs.text())
  assert.equal(rec.prompt, 'Add three notes about the retro')
  assert.equal(rec.state, 'completed', runs.text())
  assert.equal(rec.objects_created, 3)
  assert.equal(rec.prompt_tokens, 250)
  assert.equal(rec.completion_tokens, 50)
  assert.ok('user' in rec, runs.text())

  // The notes are durable: the server's state holds exactly what A holds.
  const stored = await h.fetchState(server, board)
  assert.equal(objectsJson(stored), objectsJson(a.doc))
  t.diagnostic(`assistant in awareness +${aw.seenAt - started} ms, 3 notes at A +${threeAt - started} ms, ` +
    `done +${doneAt - started} ms, awareness cleared +${aw.goneAt - started} ms`)
}))

test('a human moving an object while the assistant moves it converges on every client', OPTS, t => withHarness(t, async h => {
  const HUMAN_ID = 'human-note-1'
  const AI_TARGET = [800, 600]
  const A_OFFLINE = [444, 333]
  const candidates = [[100, 100], AI_TARGET, A_OFFLINE]
  let a, b
  let dragger = null
  let alias = null
  let bMoves = 0
  const bSaw = []
  const stopDragging = () => { if (dragger) clearInterval(dragger); dragger = null }
  t.after(stopDragging)

  const { fake, server } = await setup(t, h, {
    delayMs: 60,
    script: [
      toolReply([call('call_1', 'getBoardState', { region: null })]),
      body => {
        const state = toolResult(body, 'call_1')
        const entry = (state?.board?.objects || []).find(o => o.text === 'Move me')
        if (!entry) throw new Error(`no "Move me" in getBoardState's result: ${JSON.stringify(toolResults(body))}`)
        alias = entry.id ?? entry.a
        // Now, while the model streams its move and the server applies it:
        // A moves the note offline, so its write is certainly concurrent with the assistant's
        // (neither has seen the other); B drags it live, one pos write every 15 ms.
        a.provider.disconnect()
        a.doc.getMap('objects').get(HUMAN_ID).set('pos', A_OFFLINE)
        dragger = setInterval(() => {
          bMoves++
          const p = [200 + bMoves, 300 + bMoves]
          candidates.push(p)
          b.doc.getMap('objects').get(HUMAN_ID).set('pos', p)
        }, 15)
        return toolReply([call('call_2', 'moveObject', { id: alias, x: AI_TARGET[0], y: AI_TARGET[1] })])
      },
      () => {
        // The move was applied (its result is in this request): B lets go, A comes back
        // online. A's offline value and B's last drag are concurrent: the CRDT picks one.
        stopDragging()
        a.provider.connect()
        return textReply('Moved it.', { textPieces: 3 })
      }
    ]
  })
  const board = boardId('ai-move')
  await createBoard(h, server, board)
  a = await h.syncedClient(server, board)
  b = await h.syncedClient(server, board)
  addSticky(a.doc, HUMAN_ID, { text: 'Move me', x: 100, y: 100 })
  await waitFor(() => b.doc.getMap('objects').has(HUMAN_ID), { message: 'B to see the note' })
  // What B receives from others for the note's position.
  b.doc.getMap('objects').get(HUMAN_ID).observe((ev, tr) => {
    if (!tr.local && ev.keysChanged.has('pos')) bSaw.push(JSON.stringify(ev.target.get('pos')))
  })

  const stream = streamPrompt(server, board, { prompt: 'Move the note to the bottom right', viewport: VIEWPORT })
  const done = await waitDone(stream)
  await waitFor(() => dragger === null && a.provider.synced, { message: 'B to stop dragging and A to resync' })

  assert.deepEqual(fake.problems, [])
  assert.equal(done.data.status, 'completed', done.raw)
  assert.equal(fake.requests.length, 3)
  const move = done.data.tool_calls.find(c => c.name === 'moveObject')
  assert.ok(move, done.raw)
  assert.equal(move.result?.ok, true, JSON.stringify(move))
  assert.equal(move.applied, true, JSON.stringify(move))
  assert.deepEqual(toolResult(fake.requests[2], 'call_2'), move.result)
  assert.ok(typeof alias === 'string' && alias.length > 0, `alias ${alias}`)
  assert.ok(bSaw.includes(JSON.stringify(AI_TARGET)), `B saw the assistant's move live: ${bSaw.slice(0, 5)}`)
  assert.ok(bMoves >= 5, `B moved the note ${bMoves} times during the run`)

  // A, B and the server converge, and a client connecting afterwards gets the same.
  await waitFor(async () => {
    const stored = await h.fetchState(server, board)
    const s = objectsJson(stored)
    return s === objectsJson(a.doc) && s === objectsJson(b.doc)
  }, {
    timeout: 5000,
    message: 'A, B and the server to hold the same objects',
    describe: () => `A ${objectsJson(a.doc)}\nB ${objectsJson(b.doc)}`
  })
  const c = await h.syncedClient(server, board)
  const ja = a.doc.getMap('objects').toJSON()
  assert.deepEqual(b.doc.getMap('objects').toJSON(), ja)
  assert.deepEqual(c.doc.getMap('objects').toJSON(), ja)

  // The note has exactly one position, one somebody wrote, and is otherwise intact.
  const note = ja[HUMAN_ID]
  assert.deepEqual(Object.keys(ja), [HUMAN_ID], 'nothing else on the board')
  assert.equal(note.kind, 'sticky')
  assert.equal(note.text, 'Move me')
  assert.deepEqual(note.size, [200, 200])
  assert.ok(!('x' in note) && !('y' in note), `no separate x/y keys: ${JSON.stringify(note)}`)
  assert.ok(Array.isArray(note.pos) && note.pos.length === 2 && note.pos.every(Number.isFinite), JSON.stringify(note))
  assert.ok(candidates.map(p => JSON.stringify(p)).includes(JSON.stringify(note.pos)), `final pos ${JSON.stringify(note.pos)}`)
  for (const [name, doc] of [['A', a.doc], ['B', b.doc], ['C', c.doc]]) {
    assert.deepEqual(doc.getMap('objects').get(HUMAN_ID).get('pos'), note.pos, name)
  }
  const winner = JSON.stringify(note.pos) === JSON.stringify(A_OFFLINE) ? "A's offline move"
    : JSON.stringify(note.pos) === JSON.stringify(AI_TARGET) ? "the assistant's move" : "B's last drag"
  t.diagnostic(`final pos ${JSON.stringify(note.pos)} (${winner}) after B's ${bMoves} live moves, A's offline move and the assistant's`)
}))

test('undo removes what the run created, as an update clients receive, and keeps human notes', OPTS, t => withHarness(t, async h => {
  let a
  const { fake, server } = await setup(t, h, {
    delayMs: 40,
    script: [
      toolReply([call('call_1', 'getBoardState', { region: null })]),
      toolReply(createCalls(NOTES)),
      // While the model "writes" its answer, a human adds a note.
      () => {
        addSticky(a.doc, 'human-during', { text: 'Human during the run', x: 100, y: 500 })
        return textReply('Added three notes.', { textPieces: 4 })
      }
    ]
  })
  const board = boardId('ai-undo')
  await createBoard(h, server, board)
  a = await h.syncedClient(server, board)
  const b = await h.syncedClient(server, board)
  addSticky(a.doc, 'human-before', { text: 'Human before the run', x: 1000, y: 100 })

  const stream = streamPrompt(server, board, { prompt: 'Add three notes', viewport: VIEWPORT })
  const done = await waitDone(stream)
  assert.equal(done.data.status, 'completed', done.raw)
  const runId = done.data.run_id
  addSticky(a.doc, 'human-after', { text: 'Human after the run', x: 100, y: 800 })
  const humanTexts = ['Human before the run', 'Human during the run', 'Human after the run']
  await waitFor(() => stickies(b.doc).length === 6, {
    message: 'B to hold 3 AI notes and 3 human notes',
    describe: () => JSON.stringify(objectsOf(b.doc))
  })

  // A and B watch the undo arrive.
  const removedAt = {}
  for (const [name, c] of [['A', a], ['B', b]]) {
    c.doc.getMap('objects').observe(ev => {
      for (const [, change] of ev.changes.keys) {
        if (change.action === 'delete') removedAt[name] = (removedAt[name] || 0) + 1
      }
    })
  }
  const res = await h.request(server, 'POST', `/v1/boards/${board}/assistant/runs/${runId}/undo`)
  assert.equal(res.status, 200, `undo: ${res.status} ${res.text()}`)
  assert.match(String(res.headers['content-type']), /json/)
  assert.equal(typeof res.json(), 'object')

  for (const [name, c] of [['A', a], ['B', b]]) {
    await waitFor(() => NOTES.every(n => !byText(c.doc, n.text)), {
      message: `${name} to lose the assistant's notes`,
      describe: () => JSON.stringify(objectsOf(c.doc))
    })
    assert.deepEqual(stickies(c.doc).map(o => o.text).sort(), [...humanTexts].sort(), name)
    assert.equal(removedAt[name], 3, `${name} saw 3 removals`)
  }
  const stored = await h.fetchState(server, board)
  assert.equal(objectsJson(stored), objectsJson(a.doc))
  assert.equal(objectsJson(b.doc), objectsJson(a.doc))
  assert.deepEqual(fake.problems, [])

  // Undoing it again changes nothing (the answer's shape is the server's; no 5xx).
  const before = objectsJson(a.doc)
  const again = await h.request(server, 'POST', `/v1/boards/${board}/assistant/runs/${runId}/undo`)
  assert.ok(again.status < 500, `second undo: ${again.status} ${again.text()}`)
  await sleep(200)
  assert.equal(objectsJson(a.doc), before, 'a second undo changed the board')
  assert.equal(objectsJson(await h.fetchState(server, board)), before)

  // The record is still there and no longer running.
  const runs = (await h.fetch(server, `/v1/boards/${board}/assistant/runs`)).json().runs
  assert.equal(runs[0].id, runId)
  assert.notEqual(runs[0].state, 'running', JSON.stringify(runs[0]))
  t.diagnostic(`undo answered ${res.text()}; again ${again.status} ${again.text()}`)
}))

test('a second prompt while a run works answers 409 assistant_busy, and one after it ends runs', OPTS, t => withHarness(t, async h => {
  const { fake, server } = await setup(t, h, {
    script: [
      // A slow first step: 12 chunks, 150 ms apart.
      textReply('Thinking about it at length.', { textPieces: 10, delayMs: 150 }),
      textReply('Second run.')
    ]
  })
  const board = boardId('ai-busy')
  await createBoard(h, server, board)

  const first = streamPrompt(server, board, { prompt: 'Think slowly' })
  const runEvent = await waitFor(() => first.events.find(e => e.event === 'run'), {
    message: 'the first run to start',
    describe: () => summarize(first.events)
  })
  await fake.waitForRequests(1)

  const busy = await jsonPrompt(h, server, board, { prompt: 'Me too' })
  assert.equal(busy.status, 409, `second prompt: ${busy.status} ${busy.text()}`)
  const err = busy.json().error
  assert.equal(err?.code, 'assistant_busy', busy.text())
  assert.equal(typeof err.message, 'string')
  assert.ok(err.message.includes(runEvent.data.run_id), `message names the active run ${runEvent.data.run_id}: ${err.message}`)
  // The refused prompt never reached the model.
  assert.equal(fake.requests.length, 1)
  assert.equal(first.events.some(e => e.event === 'done'), false, 'the first run was still working')

  const done = await waitDone(first)
  assert.equal(done.data.status, 'completed', done.raw)
  assert.equal(done.data.summary, 'Thinking about it at length.')

  // Once it ended, the board takes a new prompt (JSON answer without the SSE Accept header).
  const again = await jsonPrompt(h, server, board, { prompt: 'Now you' })
  assert.equal(again.status, 200, `prompt after the run: ${again.status} ${again.text()}`)
  const body = again.json()
  assert.equal(body.status, 'completed', again.text())
  assert.equal(typeof body.run_id, 'string')
  assert.notEqual(body.run_id, runEvent.data.run_id)
  assert.equal(body.summary, 'Second run.')
  assert.equal(fake.requests.length, 2)
  assert.deepEqual(fake.problems, [])

  const runs = (await h.fetch(server, `/v1/boards/${board}/assistant/runs`)).json().runs
  assert.deepEqual(runs.map(r => r.id), [body.run_id, runEvent.data.run_id], 'newest first')
}))
