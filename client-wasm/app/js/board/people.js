// Other people on the board, through presence (awareness): their cursors and names, what they
// have selected, and the objects they are dragging, shown where they drag them before the
// document has them. The assistant is one more participant while a run works.
//
// This browser's presence: `{user: {name, color}, cursor: {x, y} | null, selection: [ids],
// drag: {id: [x, y, w, h, rotation]} | null}`. Cursor and drag changes are sent at most once per
// animation frame.
import { h, safeColor } from '../dom.js'

export class People {
  constructor (app, listEl) {
    this.app = app
    this.listEl = listEl
    /** clientId -> { cursor el, state } */
    this.peers = new Map()
    /** object id -> clientId dragging it */
    this.dragged = new Map()
    this.pending = {}
    this.frame = 0
    app.client.on('presence', () => this.render())
    app.client.on('status', () => this.render())
    this.render()
  }

  /** Shares the pointer position (board coordinates), or none. */
  cursor (p) {
    this.send({ cursor: p ? { x: Math.round(p[0]), y: Math.round(p[1]) } : null })
  }

  /** Shares a drag in progress (`{id: [x, y, w, h, rotation]}`), or its end (null). */
  drag (geoms) {
    if (!geoms) {
      // The end of a drag goes at once, so nobody keeps showing a stale position.
      delete this.pending.drag
      this.app.client.updatePresence({ drag: null })
      return
    }
    this.send({ drag: geoms })
  }

  send (fields) {
    Object.assign(this.pending, fields)
    if (this.frame) return
    this.frame = requestAnimationFrame(() => {
      this.frame = 0
      const p = this.pending
      this.pending = {}
      if (Object.keys(p).length) this.app.client.updatePresence(p)
    })
  }

  /** Re-applies remote drags after the document changed under them. */
  reapply () {
    for (const [id, clientId] of this.dragged) {
      const g = this.peers.get(clientId)?.state?.drag?.[id]
      if (g && !this.isLocal(id)) this.app.scene.override(id, geom(g))
    }
  }

  isLocal (id) {
    const d = this.app.interaction.drag
    return !!(d && d.items && d.items.has(id))
  }

  render () {
    const scene = this.app.scene
    const seen = new Set()
    const nowDragged = new Map()
    const list = []
    const remoteSel = new Map()
    for (const peer of this.app.client.peers()) {
      const s = peer.state || {}
      const id = peer.clientId
      seen.add(id)
      let entry = this.peers.get(id)
      if (!entry) {
        entry = { el: h('div', { className: 'cursor' }, h('div', { className: 'arrow' }), h('div', { className: 'name' })), state: s }
        this.peers.set(id, entry)
        scene.overlay.append(entry.el)
      }
      entry.state = s
      const name = s.user?.name || `Guest ${String(id).slice(-3)}`
      const color = safeColor(s.user?.color) || '#607d8b'
      entry.el.style.setProperty('--peer', color)
      entry.el.lastChild.textContent = peer.assistant ? `${name} (working…)` : name
      entry.el.classList.toggle('assistant', !!peer.assistant)
      const c = s.cursor
      entry.el.hidden = !(c && Number.isFinite(c.x) && Number.isFinite(c.y))
      if (!entry.el.hidden) entry.el.style.transform = `translate(${c.x}px, ${c.y}px) scale(var(--inv-zoom, 1))`
      if (s.drag && typeof s.drag === 'object') {
        for (const [oid, g] of Object.entries(s.drag)) if (validGeom(g)) nowDragged.set(oid, { clientId: id, g })
      }
      if (Array.isArray(s.selection)) for (const oid of s.selection.slice(0, 100)) if (typeof oid === 'string') remoteSel.set(oid, color)
      list.push(h('span', {
        className: `avatar${peer.assistant ? ' assistant' : ''}`,
        title: peer.assistant ? `${name}: working on the board` : name,
        style: { background: color },
        dataset: { client: String(id) }
      }, peer.assistant ? '✦' : initials(name)))
    }
    for (const [id, entry] of this.peers) if (!seen.has(id)) { entry.el.remove(); this.peers.delete(id) }
    // Drags: apply the new ones, release the ones that ended.
    for (const [oid] of this.dragged) {
      if (!nowDragged.has(oid) && !this.isLocal(oid)) scene.override(oid, null)
    }
    this.dragged = new Map()
    for (const [oid, { clientId, g }] of nowDragged) {
      this.dragged.set(oid, clientId)
      if (!this.isLocal(oid) && scene.get(oid)) scene.override(oid, geom(g))
    }
    // Others' selections: an outline in their colour.
    scene.markPeers(remoteSel)
    const me = this.app.user
    this.listEl.replaceChildren(h('span', { className: 'avatar me', title: `${me.name} (you)`, style: { background: me.color } }, initials(me.name)), ...list)
    this.listEl.dataset.count = String(list.length)
  }
}

const geom = (g) => ({ pos: [g[0], g[1]], size: [g[2], g[3]], rotation: g[4] || 0 })
const validGeom = (g) => Array.isArray(g) && g.length >= 4 && g.slice(0, 5).every(Number.isFinite) && g[2] > 0 && g[3] > 0

function initials (name) {
  return name.split(/\s+/).filter(Boolean).slice(0, 2).map(w => [...w][0]).join('').toUpperCase() || '?'
}
