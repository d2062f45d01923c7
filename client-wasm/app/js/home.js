// The list of boards at `/`: open, create (empty or from an exported file), delete. Boards this
// browser opened are remembered, so the list still shows them offline.
import { api, getJson, postJson, boardIdFrom, BOARD_ID, ApiError } from './api.js'
import { claims } from './auth.js'
import { h, when, toast } from './dom.js'

const RECENT = 'board-app:recent'

/** Remembers that this browser opened `board` (most recent first, at most 50). */
export function rememberBoard (board, title) {
  const list = recentBoards().filter(b => b.id !== board)
  list.unshift({ id: board, title: title || '', at: Date.now() })
  localStorage.setItem(RECENT, JSON.stringify(list.slice(0, 50)))
}

function recentBoards () {
  try { return JSON.parse(localStorage.getItem(RECENT)) || [] } catch { return [] }
}

export async function showHome (root) {
  document.title = 'Boards'
  const c = claims()
  const list = h('ul', { className: 'board-list', attrs: { 'aria-label': 'Boards' } })
  const more = h('button', { className: 'secondary', hidden: true }, 'More')
  const note = h('p', { className: 'muted' })
  const name = h('input', { type: 'text', placeholder: 'New board name', maxLength: 100, attrs: { 'aria-label': 'New board name' } })
  const create = h('button', { type: 'submit', className: 'primary' }, 'Create board')
  const file = h('input', { type: 'file', accept: '.yjs,.bin,application/octet-stream', hidden: true })
  const importBtn = h('button', { type: 'button', className: 'secondary', onclick: () => file.click() }, 'Create from file…')
  const form = h('form', { className: 'create' }, name, create, importBtn, file)
  const canCreate = !c || c.role === 'admin' || (c.role === 'write' && c.board === '*')
  if (!canCreate) form.hidden = true

  root.replaceChildren(h('main', { className: 'home' },
    h('header', {}, h('h1', {}, 'Boards'), c ? h('span', { className: 'badge' }, `${c.role} token${c.board && c.board !== '*' ? ` for ${c.board}` : ''}`) : h('span', { className: 'badge warn' }, 'open development mode')),
    form, note, list, more))

  form.onsubmit = async (e) => {
    e.preventDefault()
    const title = name.value.trim()
    const id = BOARD_ID.test(title) && title.length <= 40 ? title : boardIdFrom(title)
    try {
      await postJson('/v1/boards', { id })
      rememberBoard(id, title)
      location.href = `/b/${encodeURIComponent(id)}`
    } catch (err) {
      toast(err.message, 'error')
    }
  }
  file.onchange = async () => {
    const f = file.files[0]
    if (!f) return
    const id = boardIdFrom(f.name.replace(/\.[^.]*$/, ''))
    try {
      await api('POST', `/v1/boards?id=${encodeURIComponent(id)}`, { body: new Uint8Array(await f.arrayBuffer()) })
      rememberBoard(id, f.name)
      location.href = `/b/${encodeURIComponent(id)}`
    } catch (err) {
      toast(`Could not import ${f.name}: ${err.message}`, 'error')
    }
    file.value = ''
  }

  const item = (id, detail, removable) => {
    const li = h('li', { dataset: { board: id } },
      h('a', { href: `/b/${encodeURIComponent(id)}` }, id),
      h('span', { className: 'muted' }, detail))
    if (removable) {
      li.append(h('button', {
        className: 'icon danger',
        title: `Delete ${id}`,
        attrs: { 'aria-label': `Delete ${id}` },
        onclick: async () => {
          if (!confirm(`Delete the board "${id}" for everyone? Its history is deleted too.`)) return
          try {
            await api('DELETE', `/v1/boards/${encodeURIComponent(id)}`)
            li.remove()
          } catch (err) { toast(err.message, 'error') }
        }
      }, '✕'))
    }
    return li
  }

  const showRecent = (why) => {
    note.textContent = why
    const recent = recentBoards()
    list.replaceChildren(...recent.map(b => item(b.id, `opened ${when(b.at)}`, false)))
    if (!recent.length) list.append(h('li', { className: 'muted' }, 'No board opened in this browser yet.'))
  }

  let after = null
  const page = async () => {
    const q = new URLSearchParams({ limit: '100' })
    if (after) q.set('after', after)
    const res = await getJson(`/v1/boards?${q}`)
    const rows = res.boards || []
    list.append(...rows.map(b => item(b.id ?? b, b.updated_at ? `changed ${when(b.updated_at)}` : '', canCreate || c?.role === 'admin')))
    after = res.next_after || null
    more.hidden = !after
    if (!list.children.length) list.append(h('li', { className: 'muted' }, 'No boards yet: create one above.'))
  }
  more.onclick = () => page().catch(err => toast(err.message, 'error'))
  try {
    await page()
  } catch (err) {
    if (err instanceof ApiError && err.status === 0) showRecent('Offline: boards opened in this browser.')
    else if (err instanceof ApiError && (err.status === 401 || err.status === 403)) showRecent(`This token cannot list boards (${err.message}). Boards opened in this browser:`)
    else { showRecent(''); toast(err.message, 'error') }
  }
}
