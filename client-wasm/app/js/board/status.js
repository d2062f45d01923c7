// The status bar: connection (online, offline, reconnecting, refused), and whether every edit
// of this browser is durable on the server ("all changes saved", "N changes not yet saved"),
// from client-wasm's durable acknowledgements. A refusal says why in words.
import { h } from '../dom.js'
import { expired } from '../auth.js'

const REFUSED = {
  not_found: 'This board was deleted (or does not exist), so it cannot be opened.',
  forbidden: 'Your link does not give access to this board.',
  unauthorized: 'Your link has expired or is not valid: ask for a fresh link.',
  too_large: 'The board is over the server\'s size limit; your last change was not accepted.',
  bad_update: 'The server could not apply a change from this browser.',
  bad_message: 'The server refused this client (a protocol error).'
}

export class Status {
  constructor (el, app) {
    this.app = app
    this.conn = h('span', { className: 'conn', attrs: { role: 'status' } })
    this.saved = h('span', { className: 'saved', attrs: { 'aria-live': 'polite' } })
    this.mode = h('span', { className: 'mode' })
    this.message = h('span', { className: 'message' })
    this.zoom = h('button', { className: 'zoom', title: 'Fit the board (1)' })
    this.count = h('span', { className: 'count muted' })
    this.banner = h('div', { className: 'banner', hidden: true })
    el.append(this.conn, this.saved, this.mode, this.message, h('span', { className: 'spacer' }), this.count, this.zoom)
    app.root.querySelector('.stage').append(this.banner)
    this.zoom.onclick = () => app.interaction.fitAll()
    app.scene.onViewChange = (v) => { this.zoom.textContent = `${Math.round(v.zoom * 100)}%` }
    app.scene.onViewChange(app.scene.view)
    const c = app.client
    for (const e of ['status', 'pending', 'saved', 'synced', 'denied', 'error']) c.on(e, (d) => this.update(e, d))
    window.addEventListener('online', () => this.update())
    window.addEventListener('offline', () => this.update())
    // The count follows every change at once, remote ones too (an assistant's note, a peer's).
    app.listeners.add((name) => { if (name === 'change') this.showCount() })
    this.showCount()
    setInterval(() => this.update(), 1000)
    this.update()
  }

  /** Shows an error for a few seconds. */
  error (message) {
    this.message.textContent = message
    this.message.className = 'message error'
    clearTimeout(this.timer)
    this.timer = setTimeout(() => { this.message.textContent = ''; this.message.className = 'message' }, 6000)
  }

  update (event, detail) {
    const s = this.app.client.status()
    let state = s.state
    let label
    if (state === 'online') label = 'Online'
    else if (state === 'connecting') label = navigator.onLine ? 'Connecting…' : 'Offline'
    else if (state === 'offline') { state = navigator.onLine ? 'reconnecting' : 'offline'; label = navigator.onLine ? 'Reconnecting…' : 'Offline' }
    else if (state === 'refused') label = 'Refused'
    else label = 'Closed'
    if (expired() && state !== 'online') { state = 'refused'; label = 'Link expired' }
    this.conn.textContent = label
    this.conn.dataset.state = state
    const n = s.pending
    this.saved.textContent = n === 0 ? 'All changes saved' : `${n} ${n === 1 ? 'change' : 'changes'} not yet saved`
    this.saved.dataset.pending = String(n)
    this.mode.textContent = this.app.readOnly ? 'View only' : ''
    if (s.storageError) this.error(`This browser could not store the board offline: ${s.storageError}. Changes still go to the server.`)
    if (event === 'error' && detail?.kind === 'token') this.error(detail.message)
    const refusal = state === 'refused' ? (expired() ? REFUSED.unauthorized : REFUSED[s.refused] || s.reason || 'The server refused this board.') : null
    this.banner.hidden = !refusal
    if (refusal && this.banner.firstChild?.textContent !== refusal) {
      this.banner.replaceChildren(h('span', {}, refusal), ' ', h('a', { href: '/' }, 'All boards'))
    }
    // Refused for good: nothing typed here could reach anyone.
    if (refusal && !this.app.readOnly) this.app.setReadOnly(true)
  }

  showCount () {
    const n = this.app.scene.items.size
    this.count.textContent = `${n} ${n === 1 ? 'object' : 'objects'}`
  }
}
