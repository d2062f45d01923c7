// What pointer and keyboard do on the board: tools (select, hand, sticky note, rectangle,
// ellipse, text, frame, connector), selection and multi-selection, move, resize, rotate,
// colour, z-order, delete, undo/redo, pan and zoom.
//
// A drag is shown at once (a geometry override in the scene), travels to others through
// presence (`drag`), and reaches the document at most every DOC_INTERVAL ms and on drop: the
// document keeps a tombstone for every overwritten position, so it is not written per frame.
import { h, svg } from '../dom.js'
import { BoardClient } from '../../pkg/client_wasm.js'
import { bounds, overlaps, resizeFrom, center, round } from './geometry.js'
import { DEFAULT_SIZE } from './scene.js'

export const DOC_INTERVAL = 250
/** Drags of more objects than this reach the document on the drop only. */
const LIVE_DOC_MAX = 20
const PALETTE = ['#fff59d', '#ffcc80', '#ef9a9a', '#f48fb1', '#ce93d8', '#90caf9', '#80deea', '#a5d6a7', '#e0e0e0', '#ffffff', '#263238']
// Icons are SVG paths on a 24 × 24 grid (no icon font: nothing to download, nothing missing).
const TOOLS = [
  ['select', 'V', 'Select and move', 'M5 3l14 8-6 1.5L10 19z'],
  ['hand', 'H', 'Pan', 'M8 11V5a1.5 1.5 0 013 0v5m0-1V3.5a1.5 1.5 0 013 0V10m0-5a1.5 1.5 0 013 0v6m0-3a1.5 1.5 0 013 0v5a7 7 0 01-7 7h-1a7 7 0 01-5.6-2.8L4 14a1.5 1.5 0 012.4-1.8L8 14'],
  ['sticky', 'N', 'Sticky note', 'M4 4h16v11l-5 5H4zM15 20v-5h5'],
  ['rect', 'R', 'Rectangle', 'M3 6h18v12H3z'],
  ['ellipse', 'O', 'Ellipse', 'M12 5c5 0 9 3.1 9 7s-4 7-9 7-9-3.1-9-7 4-7 9-7z'],
  ['text', 'T', 'Text', 'M5 5h14M12 5v14M9 19h6'],
  ['frame', 'F', 'Frame', 'M7 3v18M17 3v18M3 7h18M3 17h18'],
  ['connector', 'C', 'Connector', 'M5 19L19 5M11 5h8v8']
]
const ACTIONS = {
  undo: 'M9 14L4 9l5-5M4 9h10a6 6 0 010 12h-3',
  redo: 'M15 14l5-5-5-5M20 9H10a6 6 0 000 12h3',
  in: 'M11 4a7 7 0 110 14 7 7 0 010-14zM21 21l-5-5M8 11h6M11 8v6',
  out: 'M11 4a7 7 0 110 14 7 7 0 010-14zM21 21l-5-5M8 11h6'
}
const icon = (d) => svg('svg', { viewBox: '0 0 24 24', width: '20', height: '20', 'aria-hidden': 'true' }, svg('path', { d }))
const EDITABLE = new Set(['sticky', 'rect', 'ellipse', 'text', 'frame'])

export class Interaction {
  constructor (app, rail, context) {
    this.app = app
    this.scene = app.scene
    this.tool = 'select'
    this.drag = null
    this.space = false
    this.buttons = new Map()
    for (const [tool, key, label, path] of TOOLS) {
      const b = h('button', {
        className: 'tool',
        title: `${label} (${key})`,
        dataset: { tool },
        attrs: { 'aria-label': label, 'aria-pressed': 'false' },
        onclick: () => this.setTool(tool)
      }, icon(path))
      this.buttons.set(tool, b)
      rail.append(b)
    }
    rail.append(h('div', { className: 'rail-gap' }),
      h('button', { className: 'tool', title: 'Undo (Ctrl+Z)', dataset: { action: 'undo' }, attrs: { 'aria-label': 'Undo' }, onclick: () => this.undo() }, icon(ACTIONS.undo)),
      h('button', { className: 'tool', title: 'Redo (Ctrl+Shift+Z)', dataset: { action: 'redo' }, attrs: { 'aria-label': 'Redo' }, onclick: () => this.redo() }, icon(ACTIONS.redo)),
      h('button', { className: 'tool', title: 'Zoom in (+)', attrs: { 'aria-label': 'Zoom in' }, onclick: () => this.zoomBy(1.25) }, icon(ACTIONS.in)),
      h('button', { className: 'tool', title: 'Zoom out (-)', attrs: { 'aria-label': 'Zoom out' }, onclick: () => this.zoomBy(0.8) }, icon(ACTIONS.out)))
    this.context = context
    this.buildContext()
    this.setTool('select')

    const vp = app.viewport
    vp.addEventListener('pointerdown', (e) => this.down(e))
    vp.addEventListener('pointermove', (e) => this.move(e))
    vp.addEventListener('pointerup', (e) => this.up(e))
    vp.addEventListener('pointercancel', (e) => this.up(e, true))
    vp.addEventListener('pointerleave', () => this.app.people.cursor(null))
    vp.addEventListener('dblclick', (e) => this.dblclick(e))
    vp.addEventListener('wheel', (e) => this.wheel(e), { passive: false })
    window.addEventListener('keydown', (e) => this.key(e))
    window.addEventListener('keyup', (e) => { if (e.code === 'Space') { this.space = false; vp.classList.remove('panning') } })
  }

  setReadOnly (ro) {
    for (const [tool, b] of this.buttons) b.disabled = ro && tool !== 'select' && tool !== 'hand'
    for (const b of this.context.querySelectorAll('button')) b.disabled = ro
    if (ro && !['select', 'hand'].includes(this.tool)) this.setTool('select')
  }

  setTool (tool) {
    this.tool = tool
    for (const [t, b] of this.buttons) {
      b.classList.toggle('active', t === tool)
      b.setAttribute('aria-pressed', String(t === tool))
    }
    this.app.viewport.dataset.tool = tool
  }

  // --- selection ------------------------------------------------------------------------

  select (ids, add = false) {
    const sel = this.app.selection
    if (!add) sel.clear()
    for (const id of ids) if (this.scene.get(id)) sel.add(id)
    this.renderSelection()
    this.app.client.updatePresence({ selection: [...sel].slice(0, 100) })
  }

  /** Drops deleted objects from the selection and redraws it (after remote changes). */
  prune () {
    let changed = false
    for (const id of this.app.selection) if (!this.scene.get(id)) { this.app.selection.delete(id); changed = true }
    this.renderSelection()
    if (changed) this.app.client.updatePresence({ selection: [...this.app.selection].slice(0, 100) })
  }

  renderSelection () {
    const sel = [...this.app.selection].filter(id => this.scene.get(id))
    let box = this.selBox
    const shapes = sel.filter(id => this.scene.get(id).kind !== 'connector')
    this.scene.markSelected(new Set(sel))
    this.context.hidden = !sel.length || this.app.readOnly
    if (!shapes.length) { box?.remove(); this.selBox = null; return }
    if (!box) {
      box = this.selBox = h('div', { className: 'selection' })
      for (const handle of ['nw', 'ne', 'se', 'sw', 'rot']) box.append(h('div', { className: `handle ${handle}`, dataset: { handle } }))
      this.scene.overlay.append(box)
    }
    const single = shapes.length === 1
    const g = single ? this.scene.geom(shapes[0]) : null
    const r = single ? { x: g.pos[0], y: g.pos[1], w: g.size[0], h: g.size[1] } : bounds(shapes.map(id => this.scene.geom(id)))
    box.style.transform = `translate(${r.x}px, ${r.y}px)${single && g.rotation ? ` rotate(${g.rotation}deg)` : ''}`
    box.style.width = `${r.w}px`
    box.style.height = `${r.h}px`
    box.classList.toggle('multi', !single)
    box.classList.toggle('locked', this.app.readOnly)
  }

  // --- pointer --------------------------------------------------------------------------

  down (e) {
    if (e.button === 2) return
    const app = this.app
    if (app.text.active && !e.target.closest('.editing')) app.text.finish()
    if (e.target.closest('.editing')) return
    app.viewport.focus({ preventScroll: true })
    const p = this.scene.toBoard(e.clientX, e.clientY)
    const start = { x: e.clientX, y: e.clientY, p }
    if (e.button === 1 || this.space || this.tool === 'hand') {
      this.drag = { type: 'pan', start, view: { ...this.scene.view } }
    } else if (app.readOnly) {
      const hit = this.hit(e)
      this.select(hit ? [hit] : [])
      this.drag = hit ? null : { type: 'pan', start, view: { ...this.scene.view } }
    } else if (e.target.dataset.handle) {
      this.startTransform(e.target.dataset.handle, start)
    } else if (EDITABLE.has(this.tool) && this.tool !== 'select') {
      this.drag = { type: 'create', kind: this.tool, start, ghost: h('div', { className: `ghost ${this.tool}` }) }
      this.scene.overlay.append(this.drag.ghost)
      this.paintGhost(p)
    } else if (this.tool === 'connector') {
      const from = this.hit(e)
      if (!from || this.scene.get(from).kind === 'connector') return
      this.drag = { type: 'connect', from, start, ghost: h('div', { className: 'ghost-line' }) }
      this.scene.overlay.append(this.drag.ghost)
    } else {
      const hit = this.hit(e)
      if (hit) {
        if (e.shiftKey) this.select([hit], true)
        else if (!app.selection.has(hit)) this.select([hit])
        this.startMove(start)
      } else {
        if (!e.shiftKey) this.select([])
        this.drag = { type: 'marquee', start, base: new Set(app.selection), box: h('div', { className: 'marquee' }) }
        this.scene.overlay.append(this.drag.box)
      }
    }
    if (this.drag) app.viewport.setPointerCapture(e.pointerId)
  }

  move (e) {
    const p = this.scene.toBoard(e.clientX, e.clientY)
    this.app.people.cursor(p)
    const d = this.drag
    if (!d) return
    const dx = p[0] - d.start.p[0]
    const dy = p[1] - d.start.p[1]
    switch (d.type) {
      case 'pan': {
        this.scene.setView(d.view.x + e.clientX - d.start.x, d.view.y + e.clientY - d.start.y, d.view.zoom)
        break
      }
      case 'move': {
        if (!d.moved && Math.hypot(e.clientX - d.start.x, e.clientY - d.start.y) < 3) return
        d.moved = true
        const step = e.shiftKey ? snap : (v) => v
        for (const [id, g] of d.items) this.scene.override(id, { ...g, pos: [round(g.pos[0] + step(dx)), round(g.pos[1] + step(dy))] })
        this.live(d)
        break
      }
      case 'resize': {
        const g = resizeFrom(d.g, d.handle, p)
        if (e.shiftKey) g.size[1] = g.size[0] * d.g.size[1] / d.g.size[0]
        g.pos = g.pos.map(round); g.size = g.size.map(round)
        this.scene.override(d.id, g)
        d.moved = true
        this.live(d)
        break
      }
      case 'rotate': {
        const c = center(d.g)
        let deg = Math.atan2(p[1] - c[1], p[0] - c[0]) * 180 / Math.PI + 90
        if (e.shiftKey) deg = Math.round(deg / 15) * 15
        deg = round(((deg % 360) + 360) % 360)
        this.scene.override(d.id, { ...d.g, rotation: deg })
        d.moved = true
        this.live(d)
        break
      }
      case 'create': this.paintGhost(p); break
      case 'connect': {
        const a = center(this.scene.geom(d.from))
        const len = Math.hypot(p[0] - a[0], p[1] - a[1])
        Object.assign(d.ghost.style, { transform: `translate(${a[0]}px, ${a[1]}px) rotate(${Math.atan2(p[1] - a[1], p[0] - a[0])}rad)`, width: `${len}px` })
        break
      }
      case 'marquee': {
        const r = rectOf(d.start.p, p)
        Object.assign(d.box.style, { transform: `translate(${r.x}px, ${r.y}px)`, width: `${r.w}px`, height: `${r.h}px` })
        const ids = new Set(d.base)
        for (const [id, { o }] of this.scene.items) {
          if (o.kind === 'connector') continue
          const b = bounds([this.scene.geom(id)])
          if (overlaps(r, b) && b.x >= r.x && b.y >= r.y && b.x + b.w <= r.x + r.w && b.y + b.h <= r.y + r.h) ids.add(id)
        }
        if (ids.size !== this.app.selection.size || [...ids].some(id => !this.app.selection.has(id))) this.select(ids)
        break
      }
    }
    if (d.type === 'move' || d.type === 'resize' || d.type === 'rotate') this.renderSelection()
  }

  up (e, cancelled = false) {
    const d = this.drag
    this.drag = null
    if (!d) return
    const p = this.scene.toBoard(e.clientX, e.clientY)
    switch (d.type) {
      case 'move': case 'resize': case 'rotate':
        if (cancelled) { for (const id of d.items.keys()) this.scene.override(id, null) } else if (d.moved) this.commit(d, true)
        this.app.client.updatePresence({ drag: null })
        if (d.type === 'move' && d.moved && !cancelled) this.reframe(d)
        for (const id of d.items.keys()) this.scene.override(id, null)
        this.app.client.stopCapturing()
        this.renderSelection()
        break
      case 'create': {
        d.ghost.remove()
        if (cancelled) break
        const r = rectOf(d.start.p, p)
        const size = r.w < 8 && r.h < 8 ? DEFAULT_SIZE[d.kind] : [Math.max(r.w, 20), Math.max(r.h, 20)]
        const pos = r.w < 8 && r.h < 8 ? [d.start.p[0] - size[0] / 2, d.start.p[1] - size[1] / 2] : [r.x, r.y]
        const id = this.create(d.kind, pos, size)
        if (id && (d.kind === 'sticky' || d.kind === 'text')) this.app.text.start(id)
        break
      }
      case 'connect': {
        d.ghost.remove()
        const to = this.hit(e)
        if (cancelled || !to || to === d.from || this.scene.get(to).kind === 'connector') break
        const id = BoardClient.newId()
        const done = this.app.apply({ op: 'create', id, kind: 'connector', from: d.from, to, created_by: this.app.user.name, created_at: Date.now() })
        if (done) { this.select([id]); this.setTool('select') }
        break
      }
      case 'marquee': d.box.remove(); break
    }
  }

  dblclick (e) {
    if (this.app.readOnly) return
    const hit = this.hit(e)
    if (hit) {
      const o = this.scene.get(hit)
      // Far out the board is a picture: come close to the object first.
      if (this.scene.far) this.scene.focusOn(o.kind === 'connector' ? this.scene.toBoard(e.clientX, e.clientY) : center(this.scene.geom(hit)), 1)
      if (o.kind === 'connector') return this.app.text.editLabel(hit)
      if (EDITABLE.has(o.kind)) return this.app.text.start(hit)
    } else if (this.tool === 'select') {
      const p = this.scene.toBoard(e.clientX, e.clientY)
      const size = DEFAULT_SIZE.sticky
      const id = this.create('sticky', [p[0] - size[0] / 2, p[1] - size[1] / 2], size)
      if (id) this.app.text.start(id)
    }
  }

  wheel (e) {
    e.preventDefault()
    const r = this.scene.rect()
    if (e.ctrlKey || e.metaKey) {
      this.scene.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top)
    } else {
      const v = this.scene.view
      this.scene.setView(v.x - e.deltaX, v.y - e.deltaY, v.zoom)
    }
  }

  // --- keyboard -------------------------------------------------------------------------

  key (e) {
    const inField = e.target.closest?.('input, textarea, [contenteditable]')
    const mod = e.ctrlKey || e.metaKey
    if (mod && e.key.toLowerCase() === 'z') { e.preventDefault(); return e.shiftKey ? this.redo() : this.undo() }
    if (mod && e.key.toLowerCase() === 'y') { e.preventDefault(); return this.redo() }
    if (inField) return
    if (e.code === 'Space') { this.space = true; this.app.viewport.classList.add('panning'); e.preventDefault(); return }
    const sel = [...this.app.selection]
    if (e.key === 'Escape') {
      if (this.drag) { this.up({ clientX: 0, clientY: 0 }, true); return }
      this.select([]); this.setTool('select'); return
    }
    if (mod && e.key.toLowerCase() === 'a') { e.preventDefault(); return this.select([...this.scene.items.keys()]) }
    if (mod && e.key.toLowerCase() === 'd') { e.preventDefault(); return this.duplicate() }
    if (e.key === '+' || e.key === '=') return this.zoomBy(1.25)
    if (e.key === '-') return this.zoomBy(0.8)
    if (e.key === '1' && !mod) return this.fitAll()
    if (this.app.readOnly) return
    if ((e.key === 'Delete' || e.key === 'Backspace') && sel.length) { e.preventDefault(); return this.remove() }
    if (e.key === 'Enter' && sel.length === 1) { e.preventDefault(); return this.app.text.start(sel[0]) }
    if (e.key.startsWith('Arrow') && sel.length) {
      e.preventDefault()
      const step = e.shiftKey ? 10 : 1
      const [dx, dy] = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[e.key]
      for (const id of this.withChildren(sel)) {
        const o = this.scene.get(id)
        if (o.kind === 'connector') continue
        const g = this.scene.geom(id)
        this.app.apply({ op: 'move', id, pos: [round(g.pos[0] + dx), round(g.pos[1] + dy)] })
      }
      return
    }
    if (e.key === ']') return this.arrange(true)
    if (e.key === '[') return this.arrange(false)
    if (!mod && !e.altKey) {
      const tool = TOOLS.find(t => t[1].toLowerCase() === e.key.toLowerCase())
      if (tool) this.setTool(tool[0])
    }
  }

  // --- operations -----------------------------------------------------------------------

  create (kind, pos, size) {
    const id = BoardClient.newId()
    const op = { op: 'create', id, kind, pos: pos.map(round), size: size.map(round), created_by: this.app.user.name, created_at: Date.now() }
    if (kind === 'frame') { op.z = this.app.client.bottomZ(); op.text = 'Frame' }
    if (kind === 'sticky') op.color = '#fff59d'
    if (kind === 'text') op.text = ''
    if (!this.app.apply(op)) return null
    if (kind !== 'frame') {
      const frame = this.scene.frameAt(center({ pos, size }), new Set([id]))
      if (frame) this.app.apply({ op: 'set_frame', id, frame })
    } else {
      // A frame drawn around objects takes them in.
      const r = { x: pos[0], y: pos[1], w: size[0], h: size[1] }
      for (const [other, { o }] of this.scene.items) {
        if (other === id || o.kind === 'frame' || o.kind === 'connector' || o.frame) continue
        const [cx, cy] = center(this.scene.geom(other))
        if (cx >= r.x && cx <= r.x + r.w && cy >= r.y && cy <= r.y + r.h) this.app.apply({ op: 'set_frame', id: other, frame: id })
      }
    }
    this.app.client.stopCapturing()
    this.select([id])
    this.setTool('select')
    return id
  }

  remove () {
    for (const id of this.app.selection) if (this.scene.get(id)) this.app.apply({ op: 'delete', id })
    this.app.client.stopCapturing()
    this.select([])
  }

  duplicate () {
    if (this.app.readOnly) return
    const ids = []
    for (const id of this.app.selection) {
      const o = this.scene.get(id)
      if (!o || o.kind === 'connector') continue
      const g = this.scene.geom(id)
      const nid = this.create(o.kind, [g.pos[0] + 20, g.pos[1] + 20], g.size)
      if (!nid) continue
      if (o.text) this.app.apply({ op: 'set_text', id: nid, text: o.text })
      if (o.color) this.app.apply({ op: 'set_color', id: nid, color: o.color })
      if (o.rotation) this.app.apply({ op: 'rotate', id: nid, rotation: o.rotation })
      ids.push(nid)
    }
    this.select(ids)
  }

  color (color) {
    for (const id of this.app.selection) this.app.apply({ op: 'set_color', id, color })
    this.app.client.stopCapturing()
  }

  /** Brings the selection to the front (or sends it to the back), keeping its own order. */
  arrange (front) {
    const ids = [...this.app.selection].sort((a, b) => {
      const za = this.scene.get(a).z; const zb = this.scene.get(b).z
      return za < zb ? -1 : za > zb ? 1 : 0
    })
    if (!front) ids.reverse()
    for (const id of ids) this.app.apply({ op: 'set_z', id, z: front ? this.app.client.topZ() : this.app.client.bottomZ() })
    this.app.client.stopCapturing()
  }

  undo () { if (!this.app.readOnly && this.app.client.undo()) this.app.text.refresh() }
  redo () { if (!this.app.readOnly && this.app.client.redo()) this.app.text.refresh() }

  zoomBy (f) {
    const r = this.scene.rect()
    this.scene.zoomAt(f, r.width / 2, r.height / 2)
  }

  fitAll () {
    const ids = [...this.scene.items.keys()].filter(id => this.scene.get(id).kind !== 'connector')
    this.scene.fit(bounds(ids.map(id => this.scene.geom(id))))
  }

  // --- drags ----------------------------------------------------------------------------

  /** The object under a pointer event (under the pointer itself while the viewport captures it). */
  hit (e) {
    if (this.scene.far) return this.scene.pick(this.scene.toBoard(e.clientX, e.clientY))
    const target = e.target === this.app.viewport || e.type === 'pointerup' ? document.elementFromPoint(e.clientX, e.clientY) : e.target
    const el = target?.closest?.('[data-id]')
    return el && this.scene.get(el.dataset.id) ? el.dataset.id : null
  }

  /** `ids` plus the contents of every frame among them. */
  withChildren (ids) {
    const out = new Set(ids)
    for (const id of ids) if (this.scene.get(id)?.kind === 'frame') for (const c of this.scene.children(id)) out.add(c)
    return out
  }

  startMove (start) {
    const items = new Map()
    for (const id of this.withChildren([...this.app.selection])) {
      if (this.scene.get(id).kind !== 'connector') items.set(id, this.scene.geom(id))
    }
    this.drag = { type: 'move', start, items, last: 0 }
  }

  startTransform (handle, start) {
    const id = [...this.app.selection].find(i => this.scene.get(i)?.kind !== 'connector')
    if (!id || this.app.selection.size !== 1) return
    const g = this.scene.geom(id)
    this.drag = { type: handle === 'rot' ? 'rotate' : 'resize', handle, id, g, start, items: new Map([[id, g]]), last: 0 }
  }

  /** Shares a drag in progress: presence every pointer move, the document every DOC_INTERVAL. */
  live (d) {
    const drag = {}
    let n = 0
    for (const id of d.items.keys()) {
      if (n++ >= 100) break
      const g = this.scene.geom(id)
      drag[id] = [g.pos[0], g.pos[1], g.size[0], g.size[1], g.rotation]
    }
    this.app.people.drag(drag)
    // Many objects at once reach the document on the drop only: each is one operation.
    const now = performance.now()
    if (d.items.size <= LIVE_DOC_MAX && now - d.last >= DOC_INTERVAL) {
      if (d.last) this.commit(d, false)
      d.last = now
    }
  }

  /** Writes the dragged geometry into the document. */
  commit (d, final) {
    for (const [id, g0] of d.items) {
      const o = this.scene.get(id)
      if (!o) continue
      const g = this.scene.geom(id)
      if (!o.pos || g.pos[0] !== o.pos[0] || g.pos[1] !== o.pos[1]) this.app.apply({ op: 'move', id, pos: g.pos })
      if (d.type === 'resize' && (!o.size || g.size[0] !== o.size[0] || g.size[1] !== o.size[1])) this.app.apply({ op: 'resize', id, size: g.size })
      if (d.type === 'rotate' && g.rotation !== (o.rotation ?? 0)) this.app.apply({ op: 'rotate', id, rotation: g.rotation })
    }
    if (final) this.app.people.drag(null)
  }

  /** After a move, puts each moved object in the frame its centre landed in (or none). */
  reframe (d) {
    const moved = new Set(d.items.keys())
    for (const id of moved) {
      const o = this.scene.get(id)
      if (!o || o.kind === 'frame' || (o.frame && moved.has(o.frame))) continue
      const frame = this.scene.frameAt(center(this.scene.geom(id)), moved)
      if ((frame || null) !== (o.frame || null)) this.app.apply({ op: 'set_frame', id, frame })
    }
  }

  paintGhost (p) {
    const d = this.drag
    const r = rectOf(d.start.p, p)
    Object.assign(d.ghost.style, { transform: `translate(${r.x}px, ${r.y}px)`, width: `${r.w}px`, height: `${r.h}px` })
  }

  buildContext () {
    const swatches = PALETTE.map(c => h('button', { className: 'swatch', title: c, dataset: { color: c }, style: { background: c }, onclick: () => this.color(c) }))
    this.context.append(
      h('div', { className: 'swatches' }, swatches),
      h('button', { title: 'Bring to front (])', dataset: { action: 'front' }, onclick: () => this.arrange(true) }, 'Front'),
      h('button', { title: 'Send to back ([)', dataset: { action: 'back' }, onclick: () => this.arrange(false) }, 'Back'),
      h('button', { title: 'Duplicate (Ctrl+D)', dataset: { action: 'duplicate' }, onclick: () => this.duplicate() }, 'Duplicate'),
      h('button', { className: 'danger', title: 'Delete (Del)', dataset: { action: 'delete' }, onclick: () => this.remove() }, 'Delete'))
  }
}

const snap = (v) => Math.round(v / 20) * 20

function rectOf (a, b) {
  return { x: Math.min(a[0], b[0]), y: Math.min(a[1], b[1]), w: Math.abs(a[0] - b[0]), h: Math.abs(a[1] - b[1]) }
}

