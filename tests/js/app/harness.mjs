// Helpers for the board app's browser tests: the app as the server binary serves it, in
// headless Debian Chromium (through ../browser/harness.mjs), with screenshots that are checked
// not to be blank.
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { screenshot, until } from '../browser/harness.mjs'

export { launchBrowser, until } from '../browser/harness.mjs'

/**
 * Opens `/b/{board}` of `server` in a new page of `context` (with `#token=` when given) and
 * waits until the board is loaded and, unless `online: false`, synced. Page errors and
 * content-security-policy violations are collected in `page.errors`.
 */
export async function openBoard (context, server, board, { token, online = true, name } = {}) {
  const page = await context.newPage()
  watch(page)
  if (name) await page.addInitScript((n) => localStorage.setItem('board-app:me', JSON.stringify({ name: n, color: '#e91e63' })), name)
  await page.goto(`${server.httpUrl}/b/${encodeURIComponent(board)}${token ? `#token=${token}` : ''}`)
  await ready(page, online)
  return page
}

/** Waits for the board app in `page` to be loaded (and synced, with `online`). */
export async function ready (page, online = true) {
  await until(page, () => window.boardApp?.ready === true, null, { timeout: 20000, message: 'the board app to load' })
  if (online) await until(page, () => window.boardApp.client.status().state === 'online', null, { timeout: 20000, message: 'the board to sync' })
}

/** Collects page errors, console errors and CSP violations of `page` in `page.errors`. */
export function watch (page) {
  page.errors = []
  page.on('pageerror', e => page.errors.push(e.message))
  page.on('console', m => {
    // Network errors while a test has the context offline are expected.
    if (m.type() === 'error' && !/ERR_INTERNET_DISCONNECTED|Failed to load resource|WebSocket connection/.test(m.text())) page.errors.push(m.text())
  })
  return page
}

/** Saves a screenshot and asserts that it is not blank (many colours, much non-background). */
export async function shot (page, name) {
  if (page.evaluate) await page.evaluate(() => window.boardApp?.scene.flush())
  const file = await screenshot(page, name)
  const b64 = (await readFile(file)).toString('base64')
  const stats = await page.evaluate(async (data) => {
    const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0))
    const bmp = await createImageBitmap(new Blob([bytes], { type: 'image/png' }))
    const canvas = new OffscreenCanvas(bmp.width, bmp.height)
    const ctx = canvas.getContext('2d')
    ctx.drawImage(bmp, 0, 0)
    const px = ctx.getImageData(0, 0, bmp.width, bmp.height).data
    const counts = new Map()
    for (let i = 0; i < px.length; i += 16) {
      const k = (px[i] >> 3) << 10 | (px[i + 1] >> 3) << 5 | (px[i + 2] >> 3)
      counts.set(k, (counts.get(k) || 0) + 1)
    }
    const total = px.length / 16
    const top = Math.max(...counts.values())
    return { colours: counts.size, dominant: top / total }
  }, b64)
  assert.ok(stats.colours >= 8 && stats.dominant < 0.97, `screenshot ${name} looks blank: ${JSON.stringify(stats)}`)
  return file
}

/** The page's board as `[id, kind, pos, text]` rows sorted by id (what tests compare). */
export function rows (page) {
  return page.evaluate(() => window.boardApp.client.board().objects
    .map(o => [o.id, o.kind, o.pos?.map(v => Math.round(v)), o.text ?? null, o.color ?? null])
    .sort((a, b) => a[0] < b[0] ? -1 : 1))
}

/** The same rows from the server's `GET /v1/boards/{id}`. */
export async function serverRows (server, board, token) {
  const res = await fetch(`${server.httpUrl}/v1/boards/${board}`, { headers: token ? { authorization: `Bearer ${token}` } : {} })
  assert.equal(res.status, 200)
  return (await res.json()).objects
    .map(o => [o.id, o.kind, o.pos?.map(v => Math.round(v)), o.text ?? null, o.color ?? null])
    .sort((a, b) => a[0] < b[0] ? -1 : 1)
}

/** Screen coordinates of board point `p` in `page`. */
export function screenPoint (page, p) {
  return page.evaluate(([x, y]) => {
    const s = window.boardApp.scene
    const r = s.viewport.getBoundingClientRect()
    return [r.left + s.view.x + x * s.view.zoom, r.top + s.view.y + y * s.view.zoom]
  }, p)
}

/** Screen coordinates of the centre of object `id` as shown. */
export function objectCenter (page, id) {
  return page.evaluate((id) => {
    const r = window.boardApp.scene.element(id).getBoundingClientRect()
    return [r.left + r.width / 2, r.top + r.height / 2]
  }, id)
}

/** Ids of the objects in `page`'s board. */
export function objectIds (page) {
  return page.evaluate(() => window.boardApp.client.board().objects.map(o => o.id).sort())
}

/** Waits until `page` shows "All changes saved". */
export async function saved (page) {
  await until(page, () => document.querySelector('.statusbar .saved')?.textContent === 'All changes saved', null, { timeout: 15000, message: '"All changes saved"' })
}
