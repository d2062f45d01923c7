// The chat panel: the board's `chat` array, for everyone on the board (and kept offline).
import { h, when } from '../dom.js'
import { BoardClient } from '../../pkg/client_wasm.js'

export class ChatPanel {
  constructor (app) {
    this.app = app
    this.list = h('ol', { className: 'chat-list', attrs: { 'aria-label': 'Messages' } })
    this.input = h('textarea', { className: 'chat-input', placeholder: 'Message everyone on this board', maxLength: 4000, rows: 2, attrs: { 'aria-label': 'Message' } })
    this.send = h('button', { type: 'submit', className: 'primary' }, 'Send')
    const form = h('form', { className: 'chat-form' }, this.input, this.send)
    form.onsubmit = (e) => { e.preventDefault(); this.post() }
    this.input.addEventListener('keydown', (e) => {
      e.stopPropagation()
      if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); this.post() }
    })
    this.el = h('section', { className: 'panel chat' }, h('h2', {}, 'Chat'), this.list, form)
    this.count = 0
  }

  shown () { this.list.scrollTop = this.list.scrollHeight; this.input.focus() }

  setReadOnly (ro) { this.input.disabled = ro; this.send.disabled = ro }

  post () {
    const text = this.input.value.trim()
    if (!text) return
    const done = this.app.apply({ op: 'post_chat', id: BoardClient.newId(), author: this.app.user.name, text, at: Date.now() })
    if (done) this.input.value = ''
  }

  render (chat) {
    const atEnd = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 8
    this.list.replaceChildren(...(chat || []).slice(-500).map(m => h('li', { className: m.author === this.app.user.name ? 'mine' : '' },
      h('div', { className: 'meta' }, h('b', {}, String(m.author ?? '?')), ' ', h('time', {}, Number.isFinite(m.at) ? when(m.at) : '')),
      h('div', { className: 'body' }, String(m.text ?? '')))))
    if (atEnd) this.list.scrollTop = this.list.scrollHeight
    const n = (chat || []).length
    const button = this.app.root.querySelector('[data-panel=chat]')
    if (button && n > this.count && this.el.isConnected === false && this.count) button.classList.add('unread')
    if (this.el.isConnected) button?.classList.remove('unread')
    this.count = n
  }
}
