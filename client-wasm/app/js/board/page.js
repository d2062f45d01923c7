// One board: the layout (top bar, tool rail, canvas, side panels, status bar), the client, and
// the wiring between them. The board lives in client-wasm's replica; the scene mirrors it.
import { BoardClient } from '../../pkg/client_wasm.js'
import { h, svg } from '../dom.js'
import { token, claims, expired } from '../auth.js'
import { rememberBoard } from '../home.js'
import { Scene } from './scene.js'
import { Interaction } from './interact.js'
import { People } from './people.js'
import { TextEditor } from './text.js'
import { Status } from './status.js'
import { ChatPanel } from '../panels/chat.js'
import { HistoryPanel } from '../panels/history.js'
import { AssistantPanel } from '../panels/assistant.js'

const COLORS = ['#e91e63', '#9c27b0', '#3f51b5', '#03a9f4', '#009688', '#8bc34a', '#ff9800', '#795548']

/** Who this browser is: a name and colour kept in local storage. */
function me () {
  let who
  try { who = JSON.parse(localStorage.getItem('board-app:me')) } catch {}
  if (!who?.name) {
    who = { name: claims()?.sub || `Guest ${Math.floor(Math.random() * 900 + 100)}`, color: COLORS[Math.floor(Math.random() * COLORS.length)] }
    localStorage.setItem('board-app:me', JSON.stringify(who))
  }
  return who
}

export async function showBoard (root, board) {
  document.title = `${board} · Boards`
  const c = claims()
  const readOnlyToken = c?.role === 'read'
  const user = me()

  // --- layout ---------------------------------------------------------------------------
  const viewport = h('div', { className: 'viewport', tabIndex: 0, attrs: { 'aria-label': 'Board canvas' } })
  const defs = svg('svg', { class: 'defs', width: '0', height: '0', 'aria-hidden': 'true' },
    svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '8', markerHeight: '8', orient: 'auto-start-reverse' },
      svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: 'context-stroke' }))))
  const title = h('input', { className: 'title', value: board, attrs: { 'aria-label': 'Board title' }, maxLength: 200 })
  const peopleEl = h('div', { className: 'people', attrs: { 'aria-label': 'People on this board' } })
  const nameInput = h('input', { className: 'my-name', value: user.name, maxLength: 40, title: 'Your name', attrs: { 'aria-label': 'Your name' } })
  const panelButtons = h('div', { className: 'panel-buttons' })
  const topbar = h('header', { className: 'topbar' },
    h('a', { href: '/', className: 'home-link', title: 'All boards' }, '◧'), title, h('div', { className: 'spacer' }), peopleEl, nameInput, panelButtons)
  const rail = h('nav', { className: 'rail', attrs: { 'aria-label': 'Tools' } })
  const context = h('div', { className: 'context', hidden: true })
  const side = h('aside', { className: 'side', hidden: true })
  const statusEl = h('footer', { className: 'statusbar' })
  const stage = h('div', { className: 'stage' }, viewport, context)
  root.replaceChildren(h('div', { className: 'app' }, defs, topbar, h('div', { className: 'middle' }, rail, stage, side), statusEl))

  // --- client ---------------------------------------------------------------------------
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:'
  const options = { url: `${proto}//${location.host}/v1/sync`, board, presence: { user }, connect: !expired() }
  // Called before every connection, so a fresh link opened in this tab is picked up.
  if (token()) options.token = async () => token()
  performance.mark('board-app:open')
  const client = await BoardClient.open(options)
  performance.mark('board-app:opened')
  const scene = new Scene(viewport)
  // Focused while the canvas is still empty: focusing later would lay every object out at once.
  viewport.focus({ preventScroll: true })
  const app = {
    board, client, scene, user, root, viewport, context,
    readOnly: readOnlyToken,
    selection: new Set(),
    listeners: new Set(),
    /** Applies one operation; returns its result, or null after telling the user why not. */
    apply (op) {
      try {
        return client.apply(op)
      } catch (e) {
        app.status.error(e.issues ? e.issues.map(i => i.message).join('; ') : e.message)
        return null
      }
    },
    emit (name, detail) { for (const fn of app.listeners) fn(name, detail) }
  }
  window.boardApp = app // for tests and benchmarks

  app.status = new Status(statusEl, app)
  app.text = new TextEditor(app)
  app.people = new People(app, peopleEl)
  app.interaction = new Interaction(app, rail, context)
  const panels = {
    chat: new ChatPanel(app),
    history: new HistoryPanel(app),
    assistant: new AssistantPanel(app)
  }
  let open = null
  const showPanel = (name) => {
    open = open === name ? null : name
    side.hidden = !open
    side.replaceChildren(...(open ? [panels[open].el] : []))
    for (const b of panelButtons.children) b.classList.toggle('active', b.dataset.panel === open)
    if (open) panels[open].shown?.()
  }
  for (const [name, label] of [['chat', 'Chat'], ['history', 'History'], ['assistant', 'Assistant']]) {
    panelButtons.append(h('button', { className: 'panel-button', dataset: { panel: name }, onclick: () => showPanel(name) }, label))
  }
  app.showPanel = showPanel

  // --- document -> scene ----------------------------------------------------------------
  const refreshTitle = (meta) => {
    const t = meta?.title
    if (document.activeElement !== title) title.value = t || board
    document.title = `${t || board} · Boards`
  }
  const loadAll = () => {
    const b = client.board()
    scene.setAll(b.objects)
    refreshTitle(b.meta)
    panels.chat.render(b.chat)
    app.interaction.prune()
    return b
  }
  // The view fits the board when it first has objects (from IndexedDB, or from the server on a
  // first visit), unless the user has moved it by then.
  let fitted = false
  const fitOnce = () => {
    if (fitted || !scene.items.size) return
    fitted = true
    app.interaction.fitAll()
  }
  scene.viewport.addEventListener('pointerdown', () => { fitted = true }, { once: true })
  scene.viewport.addEventListener('wheel', () => { fitted = true }, { once: true })
  loadAll()
  fitOnce()
  client.on('change', (e) => {
    // Many objects at once (the first sync of a big board): rebuilding is faster than upserts.
    if (e.all || e.objects.length > 500) {
      app.text.finish()
      loadAll()
      fitOnce()
    } else {
      for (const id of e.objects) {
        const o = client.object(id)
        scene.upsert(id, o)
        app.text.changed(id, o)
      }
      if (e.meta || e.chat) {
        const b = client.board()
        if (e.meta) refreshTitle(b.meta)
        if (e.chat) panels.chat.render(b.chat)
      }
      if (e.objects.length) { app.interaction.prune(); fitOnce() }
    }
    app.people.reapply()
    app.emit('change', e)
  })
  rememberBoard(board)

  title.onchange = () => {
    const t = title.value.trim()
    if (t) app.apply({ op: 'set_title', title: t })
  }
  title.onkeydown = (e) => { if (e.key === 'Enter' || e.key === 'Escape') { title.blur(); e.stopPropagation() } }
  nameInput.onchange = () => {
    user.name = nameInput.value.trim() || user.name
    nameInput.value = user.name
    localStorage.setItem('board-app:me', JSON.stringify(user))
    client.updatePresence({ user })
  }

  app.setReadOnly = (ro) => {
    app.readOnly = ro
    root.querySelector('.app').classList.toggle('read-only', ro)
    title.disabled = ro
    app.interaction.setReadOnly(ro)
    panels.chat.setReadOnly(ro)
  }
  app.setReadOnly(readOnlyToken || !!client.status().readOnly)
  client.on('status', () => { if (client.status().readOnly && !app.readOnly) app.setReadOnly(true) })
  // A fresh link opened in this tab: its token's role decides again, and the client reconnects
  // (also after it gave up on an expired token).
  window.addEventListener('board-app:token', () => {
    app.setReadOnly(claims()?.role === 'read')
    client.connect()
    app.status.update()
  })
  app.ready = true
  performance.mark('board-app:ready')
}
