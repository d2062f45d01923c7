// A fake OpenAI-compatible chat-completions server for the assistant tests: real HTTP on
// 127.0.0.1:0, a scripted sequence of streamed replies (one per request, in order), every request
// body recorded. The JS twin of ai-agent/tests/assistant/fake.rs.
//
//   const fake = await FakeLlm.start({ script: [toolReply([...]), textReply('Done.')], delayMs: 150 })
//   fake.baseUrl        // http://127.0.0.1:PORT/v1 (OPENAI_BASE_URL)
//   fake.requests       // parsed bodies, in order
//
// A script entry is a reply, or a function `(body, index, fake) => reply` (sync or async) that
// builds it from the request (e.g. from the tool results the server sent back). A reply is
// `{ chunks: [...], delayMs?, tail? }` (SSE: each chunk as `data: <json>\n\n`, `delayMs` between
// chunks, then `data: [DONE]\n\n` unless `tail: 'cut'`), or `{ status, json }` (an error answer).
import http from 'node:http'
import { EventEmitter } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'

export const FAKE_KEY = 'test-key'
export const FAKE_MODEL = 'fake-model'

/** One `chat.completion.chunk` with one choice. */
export function chunk (delta, finishReason = null, id = 'c1') {
  return {
    id,
    object: 'chat.completion.chunk',
    created: 0,
    model: 'fake',
    choices: [{ index: 0, delta, finish_reason: finishReason }]
  }
}

/** The final usage chunk (`choices: []`). */
export function usageChunk (prompt = 100, completion = 20, id = 'c1') {
  return {
    id,
    object: 'chat.completion.chunk',
    created: 0,
    model: 'fake',
    choices: [],
    usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
  }
}

/** A tool call `{ id, name, args }`; `args` is an object (serialised) or a raw string. */
export function call (id, name, args) {
  return { id, name, args: typeof args === 'string' ? args : JSON.stringify(args) }
}

/** Splits `s` into `n` pieces of about equal length (fewer if it is shorter). */
function pieces (s, n) {
  const size = Math.max(1, Math.ceil(s.length / n))
  const out = []
  for (let i = 0; i < s.length; i += size) out.push(s.slice(i, i + size))
  return out.length ? out : ['']
}

/**
 * A reply calling `calls` (index 0, 1, 2, ...): per call a header chunk with id, type, name and
 * empty arguments, then the arguments in `argPieces` pieces; then `finish_reason: tool_calls`
 * and a usage chunk.
 */
export function toolReply (calls, { argPieces = 3, usage = [100, 20], delayMs } = {}) {
  const chunks = []
  calls.forEach((c, index) => {
    const head = { index, id: c.id, type: 'function', function: { name: c.name, arguments: '' } }
    chunks.push(chunk(index === 0 ? { role: 'assistant', tool_calls: [head] } : { tool_calls: [head] }))
    for (const piece of pieces(c.args, argPieces)) {
      chunks.push(chunk({ tool_calls: [{ index, function: { arguments: piece } }] }))
    }
  })
  chunks.push(chunk({}, 'tool_calls'))
  chunks.push(usageChunk(...usage))
  return { chunks, delayMs, calls }
}

/** A final text reply: the text (in `textPieces` chunks), `finish_reason: stop`, usage. */
export function textReply (text, { textPieces = 1, usage = [50, 10], delayMs } = {}) {
  const chunks = []
  pieces(text, textPieces).forEach((piece, i) => {
    chunks.push(chunk(i === 0 ? { role: 'assistant', content: piece } : { content: piece }))
  })
  chunks.push(chunk({}, 'stop'))
  chunks.push(usageChunk(...usage))
  return { chunks, delayMs, text }
}

/** The messages of a recorded request. */
export function messages (body) {
  return Array.isArray(body?.messages) ? body.messages : []
}

/** The `role: tool` messages of a request as `{ id, content }` (content parsed as JSON if it is). */
export function toolResults (body) {
  return messages(body).filter(m => m.role === 'tool').map(m => {
    let content = m.content
    // Content may be a string or an array of text parts.
    if (Array.isArray(content)) content = content.map(p => p.text ?? '').join('')
    try { content = JSON.parse(content) } catch {}
    return { id: m.tool_call_id, content }
  })
}

/** The tool result for call `id` in `body`, or undefined. */
export function toolResult (body, id) {
  return toolResults(body).find(r => r.id === id)?.content
}

export class FakeLlm extends EventEmitter {
  /** Starts the fake; `delayMs` is the default pause between chunks. */
  static async start ({ script = [], delayMs = 0, key = FAKE_KEY } = {}) {
    const fake = new FakeLlm(script, delayMs, key)
    await new Promise((resolve, reject) => {
      fake.server.once('error', reject)
      fake.server.listen(0, '127.0.0.1', resolve)
    })
    fake.port = fake.server.address().port
    return fake
  }

  constructor (script, delayMs, key) {
    super()
    this.script = [...script]
    this.delayMs = delayMs
    this.key = key
    /** Parsed request bodies, in order. */
    this.requests = []
    /** `{ at, path, method, authorization }` per request. */
    this.meta = []
    /** Problems the fake saw (wrong path or key, script exhausted, a script function threw). */
    this.problems = []
    /** Replies whose stream the client dropped before the end. */
    this.aborted = 0
    this.sockets = new Set()
    this.server = http.createServer((req, res) => { this.handle(req, res) })
    this.server.on('connection', s => {
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
  }

  get baseUrl () { return `http://127.0.0.1:${this.port}/v1` }

  /** Adds entries at the end of the script. */
  push (...entries) { this.script.push(...entries) }

  /** Resolves once `n` requests arrived. */
  waitForRequests (n, timeout = 10000) {
    if (this.requests.length >= n) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.off('request', check)
        reject(new Error(`fake LLM: ${this.requests.length} requests after ${timeout} ms, waiting for ${n}`))
      }, timeout)
      const check = () => {
        if (this.requests.length >= n) {
          clearTimeout(t)
          this.off('request', check)
          resolve()
        }
      }
      this.on('request', check)
    })
  }

  async handle (req, res) {
    const chunks = []
    for await (const c of req) chunks.push(c)
    const raw = Buffer.concat(chunks).toString()
    const authorization = req.headers.authorization
    const path = req.url.split('?')[0]
    if (req.method !== 'POST' || path !== '/v1/chat/completions') {
      this.problems.push(`unexpected ${req.method} ${req.url}`)
      return this.error(res, 404, 'not_found', `no route ${req.method} ${req.url}`)
    }
    if (authorization !== `Bearer ${this.key}`) {
      this.problems.push(`bad authorization header: ${JSON.stringify(authorization)}`)
      return this.error(res, 401, 'invalid_api_key', 'Incorrect API key provided')
    }
    let body
    try {
      body = JSON.parse(raw)
    } catch (e) {
      this.problems.push(`request body is not JSON: ${raw.slice(0, 200)}`)
      return this.error(res, 400, 'invalid_json', 'body is not JSON')
    }
    const index = this.requests.length
    this.requests.push(body)
    this.meta.push({ at: Date.now(), path, method: req.method, authorization })
    this.emit('request', index, body)

    let entry = this.script.shift()
    if (entry === undefined) {
      this.problems.push(`script exhausted at request #${index + 1}`)
      return this.error(res, 500, 'script_exhausted', 'the fake has no more scripted replies')
    }
    let reply
    try {
      reply = typeof entry === 'function' ? await entry(body, index, this) : entry
    } catch (e) {
      this.problems.push(`script function for request #${index + 1} threw: ${e.stack || e}`)
      return this.error(res, 500, 'script_error', String(e.message || e))
    }
    if (reply.status) {
      res.writeHead(reply.status, { 'content-type': 'application/json', ...(reply.headers || {}) })
      return res.end(JSON.stringify(reply.json ?? {}))
    }
    await this.stream(res, reply, index)
  }

  error (res, status, code, message) {
    res.writeHead(status, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: { message, type: 'invalid_request_error', param: null, code } }))
  }

  async stream (res, reply, index) {
    const delay = reply.delayMs ?? this.delayMs
    let closed = false
    res.on('close', () => { closed = true })
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
    res.flushHeaders()
    const chunks = reply.chunks || []
    for (let i = 0; i < chunks.length; i++) {
      if (closed) break
      if (i > 0 && delay > 0) await sleep(delay)
      if (closed) break
      res.write(`data: ${JSON.stringify(chunks[i])}\n\n`)
    }
    if (closed || res.writableEnded) {
      this.aborted++
      this.emit('aborted', index)
      return
    }
    if (reply.tail !== 'cut') res.write('data: [DONE]\n\n')
    res.end()
    this.emit('replied', index)
  }

  async close () {
    for (const s of this.sockets) s.destroy()
    await new Promise(resolve => this.server.close(() => resolve()))
  }
}
