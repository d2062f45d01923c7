// Editing an object's text together. The text is a Y.Text: each keystroke becomes the smallest
// insert/delete (UTF-16 offsets, as Yjs counts), so concurrent typing merges, and a remote change
// while editing moves this caret only if it happened before it.
import { h } from '../dom.js'

/** The one edit that turns `a` into `b`: `{index, remove, insert}` (UTF-16 units). */
export function diff (a, b) {
  let s = 0
  const max = Math.min(a.length, b.length)
  while (s < max && a.charCodeAt(s) === b.charCodeAt(s)) s++
  if (s > 0 && isHigh(a.charCodeAt(s - 1))) s-- // never split a surrogate pair
  let e = 0
  while (e < max - s && a.charCodeAt(a.length - 1 - e) === b.charCodeAt(b.length - 1 - e)) e++
  if (e > 0 && isLow(a.charCodeAt(a.length - e))) e--
  return { index: s, remove: a.length - s - e, insert: b.slice(s, b.length - e) }
}

const isHigh = (c) => c >= 0xd800 && c <= 0xdbff
const isLow = (c) => c >= 0xdc00 && c <= 0xdfff

/** Where caret offset `c` goes after edit `d` made by someone else. */
export function shift (c, d) {
  if (c <= d.index) return c
  if (c >= d.index + d.remove) return c + d.insert.length - d.remove
  return d.index + d.insert.length
}

export class TextEditor {
  constructor (app) {
    this.app = app
    this.active = null
  }

  /** Starts editing `id`'s text, caret at the end. */
  start (id) {
    if (this.app.readOnly) return
    this.finish()
    const o = this.app.scene.get(id)
    const el = this.app.scene.element(id)
    if (!o || !el || o.kind === 'connector') return
    const area = h('textarea', { className: 'editor', value: o.text ?? '', spellcheck: true, attrs: { 'aria-label': 'Text' } })
    el.classList.add('editing')
    el.append(area)
    this.active = { id, el, area, value: area.value }
    area.addEventListener('input', (e) => { if (!e.isComposing) this.sync() })
    area.addEventListener('compositionend', () => this.sync())
    area.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' || (e.key === 'Enter' && (e.ctrlKey || e.metaKey))) { e.preventDefault(); this.finish() }
      e.stopPropagation()
      if ((e.ctrlKey || e.metaKey) && ['z', 'y'].includes(e.key.toLowerCase())) {
        e.preventDefault()
        const redo = e.key.toLowerCase() === 'y' || e.shiftKey
        if (redo) this.app.client.redo(); else this.app.client.undo()
      }
    })
    area.addEventListener('pointerdown', (e) => e.stopPropagation())
    area.addEventListener('blur', () => setTimeout(() => { if (this.active?.area === area && document.activeElement !== area) this.finish() }, 0))
    area.focus()
    area.setSelectionRange(area.value.length, area.value.length)
    this.app.client.updatePresence({ editing: id })
  }

  /** Sends what was typed since the last sync as one insert and/or delete. */
  sync () {
    const a = this.active
    if (!a) return
    const d = diff(a.value, a.area.value)
    if (d.remove) this.app.apply({ op: 'delete_text', id: a.id, index: d.index, len: d.remove })
    if (d.insert) this.app.apply({ op: 'insert_text', id: a.id, index: d.index, text: d.insert })
    a.value = a.area.value
  }

  /** The document changed `id` (null: deleted): keeps the editor in step, caret in place. */
  changed (id, o) {
    const a = this.active
    if (!a || a.id !== id) return
    if (!o) { this.finish(); return }
    const text = o.text ?? ''
    if (text === a.area.value) { a.value = text; return }
    const d = diff(a.area.value, text)
    const start = shift(a.area.selectionStart, d)
    const end = shift(a.area.selectionEnd, d)
    const dir = a.area.selectionDirection
    a.area.value = text
    a.value = text
    a.area.setSelectionRange(start, end, dir)
  }

  refresh () {
    const a = this.active
    if (a) this.changed(a.id, this.app.scene.get(a.id))
  }

  finish () {
    const a = this.active
    if (!a) return
    this.sync()
    this.active = null
    a.area.remove()
    a.el.classList.remove('editing')
    this.app.client.stopCapturing()
    this.app.scene.upsert(a.id, this.app.client.object(a.id))
    this.app.client.updatePresence({ editing: null })
    this.app.viewport.focus({ preventScroll: true })
  }

  /** Edits a connector's label in a small field at its middle. */
  editLabel (id) {
    const o = this.app.scene.get(id)
    if (!o) return
    const ga = this.app.scene.geom(o.from)
    const gb = this.app.scene.geom(o.to)
    if (!ga || !gb) return
    const x = (ga.pos[0] + ga.size[0] / 2 + gb.pos[0] + gb.size[0] / 2) / 2
    const y = (ga.pos[1] + ga.size[1] / 2 + gb.pos[1] + gb.size[1] / 2) / 2
    const input = h('input', { className: 'label-editor', value: o.label ?? '', maxLength: 200, style: { transform: `translate(${x}px, ${y}px) translate(-50%, -50%)` } })
    this.app.scene.overlay.append(input)
    const done = (save) => {
      if (!input.isConnected) return
      const v = input.value.trim()
      input.remove()
      if (save && v !== (o.label ?? '')) this.app.apply({ op: 'set_label', id, label: v || null })
      this.app.viewport.focus({ preventScroll: true })
    }
    input.addEventListener('keydown', (e) => {
      e.stopPropagation()
      if (e.key === 'Enter') done(true)
      if (e.key === 'Escape') done(false)
    })
    input.addEventListener('pointerdown', (e) => e.stopPropagation())
    input.addEventListener('blur', () => done(true))
    input.focus()
    input.select()
  }
}
