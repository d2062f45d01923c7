// The board app's entry: `/` is the list of boards, `/b/{board}` one board. Registers the
// service worker that keeps the app shell for offline use.
import init from '../pkg/client_wasm.js'
import { takeTokenFromUrl } from './auth.js'
import { BOARD_ID } from './api.js'
import { showHome } from './home.js'
import { showBoard } from './board/page.js'
import { h } from './dom.js'

const root = document.getElementById('root')

async function start () {
  takeTokenFromUrl()
  if ('serviceWorker' in navigator) {
    // Not awaited: the page works without it, it only makes the next load work offline.
    navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(e => console.warn('service worker:', e.message))
  }
  const match = location.pathname.match(/^\/b\/([^/]+)\/?$/)
  if (match) {
    const board = decodeURIComponent(match[1])
    if (!BOARD_ID.test(board)) return fatal(`"${board}" is not a board id (1-128 characters of letters, digits, ".", "_" and "-").`)
    performance.mark('board-app:start')
    await init()
    await showBoard(root, board)
  } else {
    await showHome(root)
  }
  document.documentElement.dataset.ready = 'true'
}

function fatal (message) {
  root.replaceChildren(h('div', { className: 'fatal' }, h('h1', {}, 'Cannot open this board'), h('p', {}, message), h('a', { href: '/' }, 'All boards')))
  document.documentElement.dataset.ready = 'true'
}

window.addEventListener('hashchange', () => {
  // A fresh link with a new token for the page already open.
  if (takeTokenFromUrl()) window.dispatchEvent(new Event('board-app:token'))
})

start().catch(e => {
  console.error(e)
  fatal(e.message || String(e))
})
