// The board's picture: one element per object inside a "world" element that pans and zooms with
// a single CSS transform. Objects are positioned with transforms (no layout on a move), painted
// in the order of their `z` key (DOM order), and connectors are redrawn when either end moves.
// Geometry can be overridden per object (a drag in progress, here or at another peer) without
// touching the document.
import { h, svg, safeColor } from '../dom.js'
import { center, outlinePoint } from './geometry.js'

const DEFAULT_SIZE = { sticky: [200, 200], rect: [160, 100], ellipse: [160, 100], text: [200, 40], frame: [480, 320] }
const KNOWN = new Set(['sticky', 'rect', 'ellipse', 'text', 'frame', 'connector'])

/** Paint order: by `z`, then by id (as crdt-schema orders them). */
const before = (a, b) => (a.z < b.z) || (a.z === b.z && a.id < b.id)

export class Scene {
  /**
   * @param {HTMLElement} viewport the element the board is drawn in (clips, takes the input)
   */
  constructor (viewport) {
    this.viewport = viewport
    this.layer = h('div', { className: 'layer objects' })
    this.overlay = h('div', { className: 'layer overlay' })
    this.world = h('div', { className: 'world' }, this.layer, this.overlay)
    viewport.append(this.world)
    /** id -> { o: the object as crdt-schema reads it, el } */
    this.items = new Map()
    /** ids in paint order */
    this.order = []
    /** object id -> Set of connector ids that end at it */
    this.ends = new Map()
    /** id -> geometry override `{pos, size, rotation}` (live drags) */
    this.overrides = new Map()
    this.view = { x: 0, y: 0, zoom: 1 }
    this.dirty = new Set()
    this.frame = 0
    this.onViewChange = () => {}
  }

  // --- the view -------------------------------------------------------------------------

  /** Sets the view: board point p appears at screen point `p * zoom + (x, y)`. */
  setView (x, y, zoom) {
    const z = Math.min(8, Math.max(0.05, zoom))
    const zoomed = z !== this.view.zoom
    this.view = { x, y, zoom: z }
    this.world.style.transform = `translate(${x}px, ${y}px) scale(${z})`
    if (zoomed) this.overlay.style.setProperty('--inv-zoom', String(1 / z))
    this.onViewChange(this.view)
  }

  /** Zooms by `factor` keeping screen point `(sx, sy)` (viewport coordinates) in place. */
  zoomAt (factor, sx, sy) {
    const { x, y, zoom } = this.view
    const z = Math.min(8, Math.max(0.05, zoom * factor))
    const k = z / zoom
    this.setView(sx - (sx - x) * k, sy - (sy - y) * k, z)
  }

  /** Board coordinates of a pointer event (or of client coordinates). */
  toBoard (clientX, clientY) {
    const r = this.viewport.getBoundingClientRect()
    return [(clientX - r.left - this.view.x) / this.view.zoom, (clientY - r.top - this.view.y) / this.view.zoom]
  }

  /** The visible part of the board, in board coordinates. */
  visible () {
    const r = this.viewport.getBoundingClientRect()
    const { x, y, zoom } = this.view
    return { x: -x / zoom, y: -y / zoom, w: r.width / zoom, h: r.height / zoom }
  }

  /** Fits `rect` (board coordinates) in the viewport, with a margin. */
  fit (rect) {
    const r = this.viewport.getBoundingClientRect()
    if (!rect || !r.width) return this.setView(r.width / 2, r.height / 2, 1)
    const zoom = Math.min(1, Math.max(0.05, Math.min((r.width - 80) / rect.w, (r.height - 80) / rect.h)))
    this.setView(r.width / 2 - (rect.x + rect.w / 2) * zoom, r.height / 2 - (rect.y + rect.h / 2) * zoom, zoom)
  }

  // --- objects --------------------------------------------------------------------------

  /** Replaces every object (after loading). */
  setAll (objects) {
    this.items.clear()
    this.ends.clear()
    this.order = []
    const sorted = objects.map(o => ({ ...o, z: o.z ?? '' })).sort((a, b) => before(a, b) ? -1 : before(b, a) ? 1 : 0)
    const frag = document.createDocumentFragment()
    for (const o of sorted) {
      const el = this.make(o)
      this.items.set(o.id, { o, el })
      this.order.push(o.id)
      this.link(o)
      frag.append(el)
    }
    this.layer.replaceChildren(frag)
    for (const id of this.order) this.paint(id)
  }

  /** Adds or updates one object (null `o` removes `id`). */
  upsert (id, o) {
    const item = this.items.get(id)
    if (!o) {
      if (!item) return
      item.el.remove()
      this.unlink(item.o)
      this.items.delete(id)
      this.order.splice(this.indexOf(item.o), 1)
      this.overrides.delete(id)
      this.touchEnds(id)
      return
    }
    o = { ...o, z: o.z ?? '' }
    if (!item || item.o.kind !== o.kind) {
      if (item) this.upsert(id, null)
      const el = this.make(o)
      this.items.set(id, { o, el })
      this.place(o, el)
      this.link(o)
    } else {
      const old = item.o
      if (old.z !== o.z) {
        this.order.splice(this.indexOf(old), 1)
        item.o = o
        this.place(o, item.el)
      }
      if (old.from !== o.from || old.to !== o.to) { this.unlink(old); this.link(o) }
      item.o = o
    }
    this.paint(id)
    this.touchEnds(id)
  }

  /** Sets (or with null clears) a geometry override for `id`. */
  override (id, geom) {
    if (geom) this.overrides.set(id, geom)
    else if (!this.overrides.delete(id)) return
    this.dirty.add(id)
    this.touchEnds(id)
    this.schedule()
  }

  /** The object's geometry as shown (an override if any, else the document's). */
  geom (id) {
    const item = this.items.get(id)
    if (!item) return null
    const o = item.o
    const ov = this.overrides.get(id)
    return {
      pos: ov?.pos ?? o.pos ?? [0, 0],
      size: ov?.size ?? o.size ?? DEFAULT_SIZE[o.kind] ?? [120, 80],
      rotation: ov?.rotation ?? o.rotation ?? 0
    }
  }

  get (id) { return this.items.get(id)?.o }

  element (id) { return this.items.get(id)?.el }

  /** Ids of the objects whose frame is `frameId`. */
  children (frameId) {
    const out = []
    for (const [id, { o }] of this.items) if (o.frame === frameId) out.push(id)
    return out
  }

  /** The topmost frame (other than `except`) containing board point `p`. */
  frameAt (p, except) {
    for (let i = this.order.length - 1; i >= 0; i--) {
      const id = this.order[i]
      const o = this.items.get(id).o
      if (o.kind !== 'frame' || except.has(id)) continue
      const g = this.geom(id)
      if (p[0] >= g.pos[0] && p[0] <= g.pos[0] + g.size[0] && p[1] >= g.pos[1] && p[1] <= g.pos[1] + g.size[1]) return id
    }
    return null
  }

  // --- internals ------------------------------------------------------------------------

  indexOf (o) {
    let lo = 0; let hi = this.order.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      const m = this.items.get(this.order[mid])?.o
      if (m && before(m, o)) lo = mid + 1
      else hi = mid
    }
    // Equal keys: find the exact id around lo.
    for (let i = Math.max(0, lo - 1); i < this.order.length; i++) if (this.order[i] === o.id) return i
    return this.order.indexOf(o.id)
  }

  /** Inserts `o` into the paint order and the DOM. */
  place (o, el) {
    let lo = 0; let hi = this.order.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (before(this.items.get(this.order[mid]).o, o)) lo = mid + 1
      else hi = mid
    }
    this.order.splice(lo, 0, o.id)
    const next = this.order[lo + 1]
    this.layer.insertBefore(el, next ? this.items.get(next).el : null)
  }

  link (o) {
    if (o.kind !== 'connector') return
    for (const end of [o.from, o.to]) {
      if (!end) continue
      if (!this.ends.has(end)) this.ends.set(end, new Set())
      this.ends.get(end).add(o.id)
    }
  }

  unlink (o) {
    if (o.kind !== 'connector') return
    for (const end of [o.from, o.to]) this.ends.get(end)?.delete(o.id)
  }

  touchEnds (id) {
    const set = this.ends.get(id)
    if (!set || !set.size) return
    for (const c of set) this.dirty.add(c)
    this.schedule()
  }

  schedule () {
    if (this.frame) return
    this.frame = requestAnimationFrame(() => {
      this.frame = 0
      const ids = [...this.dirty]
      this.dirty.clear()
      for (const id of ids) this.paint(id)
    })
  }

  /** Paints everything now (used by tests and before screenshots). */
  flush () {
    if (this.frame) cancelAnimationFrame(this.frame)
    this.frame = 0
    const ids = [...this.dirty]
    this.dirty.clear()
    for (const id of ids) this.paint(id)
  }

  make (o) {
    if (o.kind === 'connector') {
      const hit = svg('line', { class: 'hit' })
      const line = svg('line', { class: 'line', 'marker-end': 'url(#arrow)' })
      const label = svg('text', { class: 'label', 'text-anchor': 'middle' })
      const el = svg('svg', { class: 'connector', 'data-id': o.id, 'data-kind': 'connector', width: '1', height: '1' }, hit, line, label)
      el.parts = { hit, line, label }
      return el
    }
    const text = h('div', { className: 'text' })
    const kind = KNOWN.has(o.kind) ? o.kind : 'unknown'
    const el = h('div', { className: `obj ${kind}`, dataset: { id: o.id, kind: o.kind } }, text)
    if (kind === 'unknown') el.append(h('div', { className: 'kind-tag' }, o.kind))
    el.parts = { text }
    return el
  }

  paint (id) {
    const item = this.items.get(id)
    if (!item) return
    const { o, el } = item
    if (o.kind === 'connector') return this.paintConnector(o, el)
    const g = this.geom(id)
    el.style.transform = `translate(${g.pos[0]}px, ${g.pos[1]}px)${g.rotation ? ` rotate(${g.rotation}deg)` : ''}`
    el.style.width = `${g.size[0]}px`
    el.style.height = `${g.size[1]}px`
    const color = safeColor(o.color) || ''
    if (el.dataset.color !== color) {
      el.dataset.color = color
      el.style.setProperty('--fill', color || null)
    }
    const text = o.text ?? ''
    if (el.parts.text.textContent !== text && !el.classList.contains('editing')) el.parts.text.textContent = text
    el.classList.toggle('dragging', this.overrides.has(id))
  }

  paintConnector (o, el) {
    const a = this.items.get(o.from)
    const b = this.items.get(o.to)
    const { hit, line, label } = el.parts
    if (!a || !b) { el.style.display = 'none'; return }
    el.style.display = ''
    const ga = this.geom(o.from)
    const gb = this.geom(o.to)
    const p = outlinePoint(ga, a.o.kind, center(gb))
    const q = outlinePoint(gb, b.o.kind, center(ga))
    for (const l of [hit, line]) {
      l.setAttribute('x1', p[0]); l.setAttribute('y1', p[1]); l.setAttribute('x2', q[0]); l.setAttribute('y2', q[1])
    }
    line.style.stroke = safeColor(o.color) || ''
    label.setAttribute('x', (p[0] + q[0]) / 2)
    label.setAttribute('y', (p[1] + q[1]) / 2 - 6)
    if (label.textContent !== (o.label ?? '')) label.textContent = o.label ?? ''
  }
}

export { DEFAULT_SIZE }
