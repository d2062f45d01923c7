// The history panel: versions (named and automatic, newest first), save a named version,
// preview one read-only, restore it (a forward change: everyone sees it without reloading),
// export the board as a file, restore from a file.
import { h, when, toast, download } from '../dom.js'
import { api, getJson, postJson } from '../api.js'
import { Scene } from '../board/scene.js'
import { bounds } from '../board/geometry.js'

export class HistoryPanel {
  constructor (app) {
    this.app = app
    const base = `/v1/boards/${encodeURIComponent(app.board)}`
    this.base = base
    this.list = h('ol', { className: 'versions', attrs: { 'aria-label': 'Versions' } })
    this.label = h('input', { type: 'text', placeholder: 'Name this version', maxLength: 200, attrs: { 'aria-label': 'Version name' } })
    this.save = h('button', { type: 'submit', className: 'primary' }, 'Save version')
    const form = h('form', { className: 'save-version' }, this.label, this.save)
    form.onsubmit = async (e) => {
      e.preventDefault()
      const label = this.label.value.trim()
      if (!label) return this.label.focus()
      try {
        await postJson(`${base}/versions`, { label, author: app.user.name })
        this.label.value = ''
        toast(`Saved "${label}"`)
        await this.refresh()
      } catch (err) { toast(`Could not save the version: ${err.message}`, 'error') }
    }
    this.label.addEventListener('keydown', (e) => e.stopPropagation())
    const file = h('input', { type: 'file', hidden: true, accept: '.yjs,.bin,application/octet-stream' })
    file.onchange = async () => {
      const f = file.files[0]
      file.value = ''
      if (!f || !confirm(`Replace this board's content with ${f.name} for everyone? The current state is kept as a version.`)) return
      try {
        await api('POST', `${base}/restore`, { body: new Uint8Array(await f.arrayBuffer()) })
        toast(`Restored from ${f.name}`)
        await this.refresh()
      } catch (err) { toast(`Could not restore from ${f.name}: ${err.message}`, 'error') }
    }
    this.restoreFile = h('button', { className: 'secondary', onclick: () => file.click() }, 'Restore from file…')
    this.el = h('section', { className: 'panel history' },
      h('h2', {}, 'History'), form, this.list,
      h('div', { className: 'row' },
        h('button', { className: 'secondary', dataset: { action: 'export' }, onclick: () => this.export() }, 'Export board'),
        this.restoreFile, file))
  }

  async shown () {
    const ro = this.app.readOnly
    this.save.disabled = ro; this.label.disabled = ro; this.restoreFile.disabled = ro
    await this.refresh()
  }

  async refresh () {
    let versions
    try {
      versions = (await getJson(`${this.base}/versions`)).versions
    } catch (err) {
      this.list.replaceChildren(h('li', { className: 'muted' }, err.status === 0 ? 'History needs a connection to the server.' : err.message))
      return
    }
    if (!versions.length) return this.list.replaceChildren(h('li', { className: 'muted' }, 'No versions yet.'))
    this.list.replaceChildren(...versions.map(v => h('li', { dataset: { version: String(v.id), kind: v.kind } },
      h('div', { className: 'v-title' }, v.label || (v.kind === 'auto' ? `Automatic${v.reason ? `: ${v.reason}` : ''}` : `Version ${v.id}`)),
      h('div', { className: 'muted' }, `${when(v.created_at)}${v.author ? ` · ${v.author}` : ''}`),
      h('div', { className: 'row' },
        h('button', { className: 'secondary', dataset: { action: 'preview' }, onclick: () => this.preview(v) }, 'Preview'),
        h('button', { className: 'secondary', dataset: { action: 'restore' }, disabled: this.app.readOnly, onclick: () => this.restore(v) }, 'Restore')))))
  }

  async restore (v) {
    try {
      await postJson(`${this.base}/restore`, { version: v.id })
      toast(`Restored ${v.label || `version ${v.id}`}: everyone sees it now`)
      this.closePreview()
      await this.refresh()
    } catch (err) { toast(`Could not restore: ${err.message}`, 'error') }
  }

  /** Shows version `v` over the board, read-only, until closed or restored. */
  async preview (v) {
    let data
    try {
      data = await getJson(`${this.base}/versions/${v.id}`)
    } catch (err) { return toast(`Could not load the version: ${err.message}`, 'error') }
    this.closePreview()
    const viewport = h('div', { className: 'viewport preview-viewport' })
    const bar = h('div', { className: 'preview-bar' },
      h('span', {}, `Previewing ${v.label || `version ${v.id}`} (${when(v.created_at)}), read-only`),
      h('button', { className: 'primary', dataset: { action: 'restore-preview' }, disabled: this.app.readOnly, onclick: () => this.restore(v) }, 'Restore this version'),
      h('button', { className: 'secondary', dataset: { action: 'close-preview' }, onclick: () => this.closePreview() }, 'Close'))
    this.overlay = h('div', { className: 'preview' }, bar, viewport)
    this.app.root.querySelector('.stage').append(this.overlay)
    const scene = new Scene(viewport)
    scene.setAll(data.board.objects)
    scene.fit(bounds(data.board.objects.filter(o => o.kind !== 'connector').map(o => scene.geom(o.id))))
    viewport.addEventListener('wheel', (e) => {
      e.preventDefault()
      const r = scene.rect()
      if (e.ctrlKey) scene.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top)
      else scene.setView(scene.view.x - e.deltaX, scene.view.y - e.deltaY, scene.view.zoom)
    }, { passive: false })
  }

  closePreview () {
    this.overlay?.remove()
    this.overlay = null
  }

  async export () {
    try {
      const res = await api('GET', `${this.base}/state`)
      download(await res.blob(), `${this.app.board}.yjs`)
    } catch (err) { toast(`Could not export: ${err.message}`, 'error') }
  }
}
