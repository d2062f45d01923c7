// Tokens. With AUTH_SECRET set, the page is opened with a link carrying a token in its fragment
// (`/b/{board}#token=...`, which `sync-server token --url` prints). The token is moved to
// session storage, for this tab only, and the fragment is removed from the address bar, so it
// is not shared by copying the address. Without a token (open development mode) nothing is sent.

const KEY = 'board-app:token'

/** Reads a token from the fragment, if any, and remembers it for this tab. */
export function takeTokenFromUrl () {
  const params = new URLSearchParams(location.hash.slice(1))
  const token = params.get('token')
  if (!token) return false
  sessionStorage.setItem(KEY, token)
  params.delete('token')
  const rest = params.toString()
  history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''))
  return true
}

/** The current token, or null in open development mode. */
export function token () {
  return sessionStorage.getItem(KEY)
}

/**
 * What the token says about itself (`role`, `board`, `exp`, `sub`), read without verifying it:
 * only to shape the interface (the server checks every request). Null without a token.
 */
export function claims () {
  const t = token()
  if (!t) return null
  try {
    const payload = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    return JSON.parse(atob(payload))
  } catch {
    return { role: 'unknown' }
  }
}

/** Whether the token has expired (with no token: false). */
export function expired () {
  const c = claims()
  return !!(c && typeof c.exp === 'number' && c.exp * 1000 <= Date.now())
}

/** The headers an API request carries. */
export function authHeaders () {
  const t = token()
  return t ? { authorization: `Bearer ${t}` } : {}
}
