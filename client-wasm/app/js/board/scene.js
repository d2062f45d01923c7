// The board's picture. Near (zoom at least FAR), each object on or near the screen is an element
// inside a "world" element that pans and zooms with a single CSS transform; objects are placed
// with transforms (no layout on a move), painted in the order of their `z` key (DOM order), and
// connectors are redrawn when either end moves. Only objects within a margin around the view
// have elements (culling), so a big board costs what is on screen. Far out, text is unreadable
// and thousands of objects may be on screen: they are drawn on one canvas instead.
// Geometry can be overridden per object (a drag in progress, here or at another peer) without
// touching the document.
import { h, svg, safeColor } from '../dom.js'
import { center, outlinePoint, bounds, contains, overlaps, corners } from './geometry.js'

const DEFAULT_SIZE = { sticky: [200, 200], rect: [160, 100], ellipse: [160, 100], text: [200, 40], frame: [480, 320] }
const KNOWN = new Set(['sticky', 'rect', 'ellipse', 'text', 'frame', 'connector'])
/** Below this zoom the board is drawn on a canvas. */
export const FAR = 0.3
const FILL = { sticky: '#fff59d', rect: '#e3f2fd', ellipse: '#e8f5e9', text: 'rgba(0,0,0,0)', frame: 'rgba(255,255,255,0.5)' }

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
    this.canvas = h('canvas', { className: 'far-canvas', hidden: true })
    viewport.append(this.canvas, this.world)
    /** id -> { o: the object as crdt-schema reads it, el: its element while it has one } */
    this.items = new Map()
    /** ids in paint order */
    this.order = []
    /** object id -> Set of connector ids that end at it */
    this.ends = new Map()
    /** id -> geometry override `{pos, size, rotation}` (live drags) */
    this.overrides = new Map()
    /** ids with an element in the layer */
    this.attached = new Set()
    /** the part of the board (board coordinates) that has elements */
    this.area = null
    /** decorations: this browser's selection, and others' (id -> colour) */
    this.selected = new Set()
    this.peerSelected = new Map()
    this.view = { x: 0, y: 0, zoom: 1 }
    this.far = false
    this.dirty = new Set()
    this.frame = 0
    this.viewDirty = false
    this.canvasDirty = false
    this.onViewChange = () => {}
    // The viewport's box, kept from layout as it happens: reading it on demand
    // (getBoundingClientRect) would force a layout of every object after each change.
    this.box = viewport.getBoundingClientRect()
    new ResizeObserver(() => {
      this.box = viewport.getBoundingClientRect()
      this.viewDirty = true
      this.schedule()
    }).observe(viewport)
  }

  /** The viewport's box in client coordinates (`left`, `top`, `width`, `height`). */
  rect () { return this.box }

  // --- the view -------------------------------------------------------------------------

  /** Sets the view: board point p appears at screen point `p * zoom + (x, y)`. */
  setView (x, y, zoom) {
    const z = Math.min(8, Math.max(0.02, zoom))
    const zoomed = z !== this.view.zoom
    this.view = { x, y, zoom: z }
    this.world.style.transform = `translate(${x}px, ${y}px) scale(${z})`
    if (zoomed) this.overlay.style.setProperty('--inv-zoom', String(1 / z))
    this.viewDirty = true
    this.schedule()
    this.onViewChange(this.view)
  }

  /** Zooms by `factor` keeping screen point `(sx, sy)` (viewport coordinates) in place. */
  zoomAt (factor, sx, sy) {
    const { x, y, zoom } = this.view
    const z = Math.min(8, Math.max(0.02, zoom * factor))
    const k = z / zoom
    this.setView(sx - (sx - x) * k, sy - (sy - y) * k, z)
  }

  /** Board coordinates of client coordinates. */
  toBoard (clientX, clientY) {
    const r = this.box
    return [(clientX - r.left - this.view.x) / this.view.zoom, (clientY - r.top - this.view.y) / this.view.zoom]
  }

  /** The visible part of the board, in board coordinates. */
  visible () {
    const r = this.box
    const { x, y, zoom } = this.view
    return { x: -x / zoom, y: -y / zoom, w: r.width / zoom, h: r.height / zoom }
  }

  /** Fits `rect` (board coordinates) in the viewport, with a margin; at most at 100%. */
  fit (rect) {
    const r = this.box
    if (!rect || !r.width) return this.setView(r.width / 2, r.height / 2, 1)
    const zoom = Math.min(1, Math.max(0.02, Math.min((r.width - 80) / Math.max(rect.w, 1), (r.height - 80) / Math.max(rect.h, 1))))
    this.setView(r.width / 2 - (rect.x + rect.w / 2) * zoom, r.height / 2 - (rect.y + rect.h / 2) * zoom, zoom)
  }

  /** Centres board point `p` at `zoom` and draws at once (before editing there, say). */
  focusOn (p, zoom) {
    const r = this.box
    this.setView(r.width / 2 - p[0] * zoom, r.height / 2 - p[1] * zoom, zoom)
    this.flush()
  }

  // --- objects --------------------------------------------------------------------------

  /** Replaces every object (after loading). */
  setAll (objects) {
    this.items.clear()
    this.ends.clear()
    this.attached.clear()
    this.layer.replaceChildren()
    this.area = null
    const list = objects.map(o => ({ ...o, z: o.z ?? '' })).sort((a, b) => before(a, b) ? -1 : before(b, a) ? 1 : 0)
    this.order = list.map(o => o.id)
    for (const o of list) {
      this.items.set(o.id, { o, el: null })
      this.link(o)
    }
    this.viewDirty = true
    this.canvasDirty = true
    this.schedule()
  }

  /** Adds or updates one object (null `o` removes `id`). */
  upsert (id, o) {
    const item = this.items.get(id)
    if (!o) {
      if (!item) return
      this.detach(id)
      this.unlink(item.o)
      this.order.splice(this.indexOf(item.o), 1)
      this.items.delete(id)
      this.overrides.delete(id)
      this.touchEnds(id)
      this.canvasDirty = true
      this.schedule()
      return
    }
    o = { ...o, z: o.z ?? '' }
    if (!item || item.o.kind !== o.kind) {
      if (item) this.upsert(id, null)
      this.items.set(id, { o, el: null })
      this.insertOrder(o)
      this.link(o)
    } else {
      const old = item.o
      if (old.z !== o.z) {
        this.order.splice(this.indexOf(old), 1)
        item.o = o
        this.insertOrder(o)
        // Moved in paint order: the same element goes where it now belongs.
        if (this.attached.has(id)) { this.detach(id); this.attach(id) }
      }
      if (old.from !== o.from || old.to !== o.to) { this.unlink(old); this.link(o) }
      item.o = o
      item.fill = undefined
    }
    this.touch(id)
    this.touchEnds(id)
  }

  /** Sets (or with null clears) a geometry override for `id`. */
  override (id, geom) {
    if (geom) this.overrides.set(id, geom)
    else if (!this.overrides.delete(id)) return
    this.touch(id)
    this.touchEnds(id)
  }

  /** The object's geometry as shown (an override if any, else the document's). */
  geom (id) {
    const item = this.items.get(id)
    if (!item) return null
    const o = item.o
    const ov = this.overrides.get(id)
    return {
      pos: point(ov?.pos ?? o.pos) ?? [0, 0],
      size: extent(ov?.size ?? o.size) ?? DEFAULT_SIZE[o.kind] ?? [120, 80],
      rotation: Number.isFinite(ov?.rotation ?? o.rotation) ? (ov?.rotation ?? o.rotation) : 0
    }
  }

  get (id) { return this.items.get(id)?.o }

  /** The object's element, drawing it now if it has none (it is then near the view). */
  element (id) {
    const item = this.items.get(id)
    if (!item) return null
    if (!this.attached.has(id) && !this.far) {
      this.attach(id)
      this.paint(id)
    }
    return item.el
  }

  /** Ids of the objects whose frame is `frameId`. */
  children (frameId) {
    const out = []
    for (const [id, { o }] of this.items) if (o.frame === frameId) out.push(id)
    return out
  }

  /** The topmost frame (other than those in `except`) containing board point `p`. */
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

  /** The topmost object at board point `p` (connectors within a few pixels), or null. */
  pick (p) {
    const slack = 6 / this.view.zoom
    for (let i = this.order.length - 1; i >= 0; i--) {
      const id = this.order[i]
      const o = this.items.get(id).o
      if (o.kind === 'connector') {
        const ends = this.connectorEnds(o)
        if (ends && distToSegment(p, ends[0], ends[1]) <= slack) return id
      } else if (contains(this.geom(id), p)) {
        return id
      }
    }
    return null
  }

  /** Marks this browser's selection. */
  markSelected (ids) {
    for (const id of this.selected) if (!ids.has(id)) this.touch(id)
    for (const id of ids) if (!this.selected.has(id)) this.touch(id)
    this.selected = new Set(ids)
  }

  /** Marks others' selections (`id -> colour`). */
  markPeers (marks) {
    for (const id of this.peerSelected.keys()) if (!marks.has(id)) this.touch(id)
    for (const [id, c] of marks) if (this.peerSelected.get(id) !== c) this.touch(id)
    this.peerSelected = marks
  }

  // --- drawing --------------------------------------------------------------------------

  touch (id) {
    this.dirty.add(id)
    this.canvasDirty = true
    this.schedule()
  }

  schedule () {
    if (this.frame) return
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw() })
  }

  /** Draws everything pending now (used before screenshots, and by `focusOn`). */
  flush () {
    if (this.frame) cancelAnimationFrame(this.frame)
    this.frame = 0
    this.draw()
  }

  draw () {
    const far = this.view.zoom < FAR
    if (far !== this.far) {
      this.far = far
      this.layer.hidden = far
      this.canvas.hidden = !far
      this.viewDirty = true
      this.canvasDirty = true
    }
    if (far) {
      this.dirty.clear()
      if (this.viewDirty || this.canvasDirty) this.drawCanvas()
      this.viewDirty = false
      this.canvasDirty = false
      return
    }
    if (this.viewDirty) {
      this.viewDirty = false
      const v = this.visible()
      if (!this.area || !inside(v, this.area)) this.cull(v)
    }
    const ids = [...this.dirty]
    this.dirty.clear()
    for (const id of ids) {
      const item = this.items.get(id)
      if (!item) continue
      if (!this.attached.has(id)) {
        if (this.area && this.near(id, this.area)) { this.attach(id); this.paint(id) }
      } else {
        this.paint(id)
      }
    }
  }

  /** Gives elements to the objects near view `v` (a view and a half around it), in order. */
  cull (v) {
    const area = { x: v.x - v.w, y: v.y - v.h, w: v.w * 3, h: v.h * 3 }
    this.area = area
    const els = []
    const now = new Set()
    for (const id of this.order) {
      if (!this.near(id, area)) continue
      const item = this.items.get(id)
      if (!item.el) item.el = this.make(item.o)
      now.add(id)
      els.push(item.el)
    }
    const fresh = [...now].filter(id => !this.attached.has(id))
    this.attached = now
    this.layer.replaceChildren(...els)
    for (const id of fresh) this.paint(id)
    for (const id of this.dirty) if (now.has(id)) this.paint(id)
    this.dirty.clear()
  }

  near (id, area) {
    const o = this.items.get(id).o
    if (o.kind === 'connector') {
      const e = this.connectorEnds(o)
      if (!e) return false
      return overlaps(area, { x: Math.min(e[0][0], e[1][0]), y: Math.min(e[0][1], e[1][1]), w: Math.abs(e[0][0] - e[1][0]) + 1, h: Math.abs(e[0][1] - e[1][1]) + 1 })
    }
    const g = this.geom(id)
    if (!g.rotation) return overlaps(area, { x: g.pos[0], y: g.pos[1], w: g.size[0], h: g.size[1] + (o.kind === 'frame' ? 30 : 0) })
    return overlaps(area, bounds([g]))
  }

  /** Puts `id`'s element into the layer, before the next object in paint order that has one. */
  attach (id) {
    const item = this.items.get(id)
    if (!item.el) item.el = this.make(item.o)
    if (this.attached.has(id)) return
    let next = null
    for (let i = this.indexOf(item.o) + 1; i < this.order.length; i++) {
      if (this.attached.has(this.order[i])) { next = this.items.get(this.order[i]).el; break }
    }
    this.layer.insertBefore(item.el, next)
    this.attached.add(id)
  }

  detach (id) {
    const item = this.items.get(id)
    if (item?.el) item.el.remove()
    this.attached.delete(id)
  }

  drawCanvas () {
    const r = this.box
    const dpr = window.devicePixelRatio || 1
    const w = Math.round(r.width * dpr); const hgt = Math.round(r.height * dpr)
    if (this.canvas.width !== w || this.canvas.height !== hgt) { this.canvas.width = w; this.canvas.height = hgt }
    const ctx = this.canvas.getContext('2d')
    ctx.setTransform(1, 0, 0, 1, 0, 0)
    ctx.clearRect(0, 0, w, hgt)
    const { x, y, zoom } = this.view
    ctx.setTransform(zoom * dpr, 0, 0, zoom * dpr, x * dpr, y * dpr)
    const v = this.visible()
    // Runs of objects with the same fill and outline go in one path: a fill and a stroke per
    // run, not per object (thousands of objects on screen here).
    let fill = null; let stroke = null; let open = false
    const flushRun = () => { if (open) { ctx.fill(); ctx.stroke(); open = false } }
    ctx.lineWidth = 1 / zoom
    for (const id of this.order) {
      const item = this.items.get(id)
      const o = item.o
      if (o.kind === 'connector') continue
      const { pos, size, rotation: rot } = this.geom(id)
      if (!rot && (pos[0] > v.x + v.w || pos[1] > v.y + v.h || pos[0] + size[0] < v.x || pos[1] + size[1] < v.y)) continue
      if (item.fill === undefined) item.fill = safeColor(o.color) || FILL[o.kind] || '#fafafa'
      const s = this.selected.has(id) ? '#2f5dff' : (this.peerSelected.get(id) || (o.kind === 'frame' ? '#9aa3b5' : 'rgba(0,0,0,0.2)'))
      if (item.fill !== fill || s !== stroke) {
        flushRun()
        if (item.fill !== fill) { fill = item.fill; ctx.fillStyle = fill }
        if (s !== stroke) { stroke = s; ctx.strokeStyle = s }
      }
      if (!open) { ctx.beginPath(); open = true }
      if (o.kind === 'ellipse') {
        ctx.moveTo(pos[0] + size[0], pos[1] + size[1] / 2)
        ctx.ellipse(pos[0] + size[0] / 2, pos[1] + size[1] / 2, size[0] / 2, size[1] / 2, rot * Math.PI / 180, 0, Math.PI * 2)
      } else if (rot) {
        const c = corners({ pos, size, rotation: rot })
        ctx.moveTo(c[0][0], c[0][1]); for (let i = 1; i < 4; i++) ctx.lineTo(c[i][0], c[i][1]); ctx.closePath()
      } else {
        ctx.rect(pos[0], pos[1], size[0], size[1])
      }
    }
    flushRun()
    ctx.lineWidth = 2 / zoom
    ctx.beginPath()
    for (const id of this.order) {
      const o = this.items.get(id).o
      if (o.kind !== 'connector') continue
      const e = this.connectorEnds(o)
      if (!e) continue
      ctx.moveTo(e[0][0], e[0][1]); ctx.lineTo(e[1][0], e[1][1])
    }
    ctx.strokeStyle = '#4b5565'
    ctx.stroke()
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
    for (let i = Math.max(0, lo - 1); i < this.order.length && i <= lo + 1; i++) if (this.order[i] === o.id) return i
    return this.order.indexOf(o.id)
  }

  /** Inserts `o` into the paint order. */
  insertOrder (o) {
    let lo = 0; let hi = this.order.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (before(this.items.get(this.order[mid]).o, o)) lo = mid + 1
      else hi = mid
    }
    this.order.splice(lo, 0, o.id)
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
    for (const c of set) this.touch(c)
  }

  /** Where a connector starts and ends (on its objects' outlines), or null. */
  connectorEnds (o) {
    const a = this.items.get(o.from)
    const b = this.items.get(o.to)
    if (!a || !b || a.o.kind === 'connector' || b.o.kind === 'connector') return null
    const ga = this.geom(o.from)
    const gb = this.geom(o.to)
    return [outlinePoint(ga, a.o.kind, center(gb)), outlinePoint(gb, b.o.kind, center(ga))]
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
    if (!item?.el) return
    const { o, el } = item
    el.classList.toggle('selected', this.selected.has(id))
    const peer = this.peerSelected.get(id)
    if ((el.dataset.peer || '') !== (peer || '')) {
      el.dataset.peer = peer || ''
      el.classList.toggle('peer-selected', !!peer)
      if (peer) el.style.setProperty('--peer', peer)
      else el.style.removeProperty('--peer')
    }
    if (o.kind === 'connector') return this.paintConnector(o, el)
    const g = this.geom(id)
    el.style.transform = `translate(${g.pos[0]}px, ${g.pos[1]}px)${g.rotation ? ` rotate(${g.rotation}deg)` : ''}`
    el.style.width = `${g.size[0]}px`
    el.style.height = `${g.size[1]}px`
    const color = safeColor(o.color) || ''
    if (el.dataset.color !== color) {
      el.dataset.color = color
      if (color) el.style.setProperty('--fill', color)
      else el.style.removeProperty('--fill')
    }
    const text = o.text ?? ''
    if (el.parts.text.textContent !== text && !el.classList.contains('editing')) el.parts.text.textContent = text
    el.classList.toggle('dragging', this.overrides.has(id))
  }

  paintConnector (o, el) {
    const { hit, line, label } = el.parts
    const e = this.connectorEnds(o)
    if (!e) { el.style.display = 'none'; return }
    el.style.display = ''
    const [p, q] = e
    for (const l of [hit, line]) {
      l.setAttribute('x1', p[0]); l.setAttribute('y1', p[1]); l.setAttribute('x2', q[0]); l.setAttribute('y2', q[1])
    }
    const color = safeColor(o.color)
    if (color) line.style.stroke = color
    else line.style.removeProperty('stroke')
    label.setAttribute('x', (p[0] + q[0]) / 2)
    label.setAttribute('y', (p[1] + q[1]) / 2 - 6)
    if (label.textContent !== (o.label ?? '')) label.textContent = o.label ?? ''
  }
}

// Geometry from the document is whatever a peer wrote: anything not a sane number is replaced.
const LIMIT = 1e7
const point = (p) => Array.isArray(p) && p.length === 2 && p.every(v => Number.isFinite(v) && Math.abs(v) <= LIMIT) ? p : null
const extent = (s) => Array.isArray(s) && s.length === 2 && s.every(v => Number.isFinite(v) && v > 0 && v <= LIMIT) ? s : null

/** Whether rectangle `a` lies inside rectangle `b`. */
const inside = (a, b) => a.x >= b.x && a.y >= b.y && a.x + a.w <= b.x + b.w && a.y + a.h <= b.y + b.h

function distToSegment (p, a, b) {
  const dx = b[0] - a[0]; const dy = b[1] - a[1]
  const len = dx * dx + dy * dy
  const t = len ? Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len)) : 0
  return Math.hypot(p[0] - (a[0] + t * dx), p[1] - (a[1] + t * dy))
}

export { DEFAULT_SIZE }
