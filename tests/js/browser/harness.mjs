// Browser test harness: serves the test page and client-wasm/pkg over loopback HTTP, launches
// Debian's Chromium through playwright-core, and saves screenshots under
// target/browser-screenshots/. The sync server comes from the interop harness.
import http from 'node:http'
import { readFile, mkdir } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { REPO_ROOT } from '../interop/harness.mjs'

export const PKG_DIR = path.join(REPO_ROOT, 'client-wasm/pkg')
export const SCREENSHOTS = path.join(REPO_ROOT, 'target/browser-screenshots')
const PAGE = fileURLToPath(new URL('./page.html', import.meta.url))
const SW = fileURLToPath(new URL('./sw.js', import.meta.url))
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium'

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.ts': 'text/plain' }

/** Serves the test page at `/` and client-wasm/pkg at `/pkg/`; resolves to `{ url, close }`. */
export async function startStatic () {
  if (!existsSync(path.join(PKG_DIR, 'client_wasm.js'))) {
    throw new Error(`${PKG_DIR} is missing: run scripts/build-client.sh first`)
  }
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x')
    let file
    if (url.pathname === '/favicon.ico') return res.writeHead(204).end()
    if (url.pathname === '/' || url.pathname === '/index.html') file = PAGE
    else if (url.pathname === '/sw.js') file = SW
    else if (url.pathname.startsWith('/pkg/')) {
      file = path.join(PKG_DIR, path.normalize(url.pathname.slice(5)).replace(/^(\.\.[/\\])+/, ''))
    }
    try {
      if (!file) throw new Error('not found')
      const body = await readFile(file)
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' })
      res.end(body)
    } catch {
      res.writeHead(404).end()
    }
  })
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${server.address().port}/`
  return { url, close: () => new Promise(resolve => server.close(resolve)) }
}

/** Headless Debian Chromium with the flags this machine needs (no network beyond loopback). */
export async function launchBrowser () {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (scripts/install-chromium.sh installs it)`)
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
}

/** A new page in `context` with the test page loaded and the module initialised. */
export async function openPage (context, staticUrl) {
  const page = await context.newPage()
  const errors = []
  page.on('pageerror', e => errors.push(e))
  page.on('console', m => { if (m.type() === 'error') errors.push(new Error(m.text())) })
  page.errors = errors
  await page.goto(staticUrl)
  await page.waitForFunction(() => window.ready === true, null, { timeout: 20000 })
  return page
}

/** Saves a screenshot of `page` as target/browser-screenshots/<name>.png; returns the path. */
export async function screenshot (page, name) {
  await mkdir(SCREENSHOTS, { recursive: true })
  const file = path.join(SCREENSHOTS, `${name}.png`)
  await page.screenshot({ path: file })
  return file
}

/** Polls `fn` in the page until it returns a truthy value. */
export async function until (page, fn, arg, { timeout = 10000, message = 'condition' } = {}) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout, polling: 20 })
    return await handle.jsonValue()
  } catch (e) {
    e.message = `timed out waiting for ${message}: ${e.message}`
    throw e
  }
}
