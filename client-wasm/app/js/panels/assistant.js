// The assistant panel: a prompt, the run's progress live from the server-sent events (each
// tool call as it lands; the notes themselves appear on the board for everyone, since the
// assistant edits as one more peer), cancel, and undo of a run as a whole.
import { h, when, toast } from '../dom.js'
import { api, getJson, postJson, ApiError } from '../api.js'

export class AssistantPanel {
  constructor (app) {
    this.app = app
    this.base = `/v1/boards/${encodeURIComponent(app.board)}/assistant`
    this.prompt = h('textarea', { className: 'prompt', rows: 3, maxLength: 4000, placeholder: 'Ask the assistant, e.g. "lay out a retro board with three columns"', attrs: { 'aria-label': 'Prompt' } })
    this.run = h('button', { type: 'submit', className: 'primary', dataset: { action: 'run' } }, 'Run')
    this.cancel = h('button', { type: 'button', className: 'secondary', dataset: { action: 'cancel' }, hidden: true, onclick: () => this.stop() }, 'Cancel')
    this.progress = h('ol', { className: 'progress', attrs: { 'aria-live': 'polite', 'aria-label': 'Progress' } })
    this.notice = h('p', { className: 'notice', hidden: true })
    this.runs = h('ol', { className: 'runs', attrs: { 'aria-label': 'Earlier runs' } })
    const form = h('form', { className: 'assistant-form' }, this.prompt, h('div', { className: 'row' }, this.run, this.cancel))
    form.onsubmit = (e) => { e.preventDefault(); this.start() }
    this.prompt.addEventListener('keydown', (e) => {
      e.stopPropagation()
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); this.start() }
    })
    this.el = h('section', { className: 'panel assistant' }, h('h2', {}, 'Assistant'), this.notice, form, this.progress, h('h3', {}, 'Earlier runs'), this.runs)
    this.current = null
  }

  async shown () {
    const ro = this.app.readOnly
    this.prompt.disabled = ro || !!this.current
    this.run.disabled = ro || !!this.current
    if (!this.current) this.prompt.focus()
    await this.refresh()
  }

  async refresh () {
    try {
      const { runs } = await getJson(`${this.base}/runs?limit=10`)
      this.runs.replaceChildren(...runs.map(r => this.runItem(r)))
      if (!runs.length) this.runs.append(h('li', { className: 'muted' }, 'None yet.'))
    } catch (err) {
      this.runs.replaceChildren(h('li', { className: 'muted' }, err.status === 0 ? 'Needs a connection to the server.' : err.message))
    }
  }

  runItem (r) {
    const undo = h('button', { className: 'secondary', dataset: { action: 'undo', run: r.id }, disabled: this.app.readOnly || !!r.undone_at || r.state === 'running', onclick: () => this.undo(r.id, undo) }, r.undone_at ? 'Undone' : 'Undo')
    return h('li', { dataset: { run: r.id, state: r.state } },
      h('div', { className: 'v-title' }, r.prompt),
      h('div', { className: 'muted' }, `${r.state} · ${when(r.started_at)}${r.user ? ` · ${r.user}` : ''} · +${r.objects_created} −${r.objects_deleted}`),
      r.summary ? h('div', { className: 'summary' }, r.summary) : null,
      h('div', { className: 'row' }, undo))
  }

  line (text, cls = '') {
    const li = h('li', { className: cls }, text)
    this.progress.append(li)
    li.scrollIntoView({ block: 'nearest' })
    return li
  }

  busy (on) {
    this.run.disabled = on || this.app.readOnly
    this.prompt.disabled = on || this.app.readOnly
    this.cancel.hidden = !on
  }

  async start () {
    const prompt = this.prompt.value.trim()
    if (!prompt || this.current) return
    this.progress.replaceChildren()
    this.notice.hidden = true
    const v = this.app.scene.visible()
    const body = { prompt, user: this.app.user.name, viewport: { x: Math.round(v.x), y: Math.round(v.y), w: Math.round(v.w), h: Math.round(v.h) } }
    this.current = { id: null, abort: new AbortController() }
    this.busy(true)
    this.line(`“${prompt}”`, 'asked')
    try {
      const res = await api('POST', this.base, { body, accept: 'text/event-stream', signal: this.current.abort.signal })
      await readEvents(res.body, (name, data) => this.event(name, data))
      this.prompt.value = ''
    } catch (err) {
      if (err.name === 'AbortError') this.line('Stopped following the run.', 'muted')
      else if (err instanceof ApiError && err.code === 'assistant_not_configured') this.showNotice(`The assistant is not set up on this server. ${err.message}.`)
      else this.line(`Error: ${err.message}`, 'error')
    } finally {
      this.current = null
      this.busy(false)
      this.refresh()
    }
  }

  event (name, data) {
    switch (name) {
      case 'run':
        this.current.id = data.run_id
        this.el.dataset.run = data.run_id
        break
      case 'step':
        this.line(`Step ${data.step}…`, 'step')
        break
      case 'tool': {
        let args = ''
        try { args = summarize(JSON.parse(data.arguments)) } catch { args = '' }
        // A call that changed nothing is a read, unless its result says it failed.
        const failed = !data.applied && data.result && typeof data.result === 'object' && (data.result.ok === false || 'error' in data.result || 'errors' in data.result)
        const mark = data.applied ? '✓' : failed ? '✗' : '·'
        this.line(`${mark} ${data.name}${args ? `: ${args}` : ''}`, `tool${failed ? ' failed' : data.applied ? '' : ' read'}`)
        break
      }
      case 'text':
        if (data.text?.trim()) { this.line(data.text, 'text'); this.lastText = data.text }
        break
      case 'done': {
        const li = this.line(`${data.status}${data.error ? `: ${data.error}` : ''} · ${data.objects_created} created, ${data.objects_deleted} deleted`, `done ${data.status}`)
        if (data.summary && data.summary !== this.lastText) this.line(data.summary, 'summary')
        if (data.tool_calls?.length && !this.app.readOnly) {
          const b = h('button', { className: 'secondary', dataset: { action: 'undo-run' }, onclick: () => this.undo(data.run_id, b) }, 'Undo this run')
          li.append(' ', b)
        }
        break
      }
    }
  }

  showNotice (text) {
    this.notice.textContent = text
    this.notice.hidden = false
  }

  async stop () {
    const c = this.current
    if (!c) return
    if (!c.id) { c.abort.abort(); return }
    try { await postJson(`${this.base}/runs/${encodeURIComponent(c.id)}/cancel`, {}) } catch (err) { toast(`Could not cancel: ${err.message}`, 'error') }
  }

  async undo (run, button) {
    if (button) button.disabled = true
    try {
      await postJson(`${this.base}/runs/${encodeURIComponent(run)}/undo`, {})
      if (button) button.textContent = 'Undone'
      toast('The run was undone for everyone')
      this.refresh()
    } catch (err) {
      if (button) button.disabled = false
      toast(`Could not undo: ${err.message}`, 'error')
    }
  }
}

/** Reads server-sent events from a response body, calling `fn(name, json)` for each. */
export async function readEvents (body, fn) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader()
  let buf = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) break
    buf += value
    let i
    while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, i)
      buf = buf.slice(buf[i] === '\r' ? i + 4 : i + 2)
      let name = 'message'
      const data = []
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith('event:')) name = line.slice(6).trim()
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''))
      }
      if (!data.length) continue
      try { fn(name, JSON.parse(data.join('\n'))) } catch (e) { console.warn('assistant event', name, e) }
    }
  }
}

function summarize (args) {
  if (!args || typeof args !== 'object') return ''
  const text = args.text ?? args.title ?? args.label
  if (typeof text === 'string') return `“${text.slice(0, 60)}”`
  if (Array.isArray(args.items)) return `${args.items.length} items`
  return ''
}
