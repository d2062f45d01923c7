// The HTTP API (README.md, "API"): JSON in and out, errors as `ApiError` with the server's
// code and message.
import { authHeaders } from './auth.js'

export class ApiError extends Error {
  constructor (status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

/** Calls `path`; `body` is JSON unless it is a Blob, ArrayBuffer or typed array. */
export async function api (method, path, { body, accept, signal } = {}) {
  const headers = { ...authHeaders() }
  let payload
  if (body instanceof Blob || body instanceof ArrayBuffer || ArrayBuffer.isView(body)) {
    headers['content-type'] = 'application/octet-stream'
    payload = body
  } else if (body !== undefined) {
    headers['content-type'] = 'application/json'
    payload = JSON.stringify(body)
  }
  if (accept) headers.accept = accept
  let res
  try {
    res = await fetch(path, { method, headers, body: payload, signal })
  } catch (e) {
    if (e.name === 'AbortError') throw e
    throw new ApiError(0, 'offline', 'The server cannot be reached (offline?)')
  }
  if (!res.ok) {
    let code = `http_${res.status}`
    let message = res.statusText || `HTTP ${res.status}`
    try {
      const err = (await res.json()).error
      if (err) ({ code, message } = err)
    } catch {}
    throw new ApiError(res.status, code, message)
  }
  return res
}

export const getJson = async (path) => (await api('GET', path)).json()
export const postJson = async (path, body) => {
  const res = await api('POST', path, { body })
  return res.status === 204 ? null : res.json()
}

/** Board ids: 1-128 characters of [A-Za-z0-9._-]. */
export const BOARD_ID = /^[A-Za-z0-9._-]{1,128}$/

/** A board id from a title: lower-case words joined by dashes, plus a short random suffix. */
export function boardIdFrom (title) {
  const slug = title.toLowerCase().normalize('NFKD').replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 60)
  const suffix = Math.random().toString(36).slice(2, 8)
  return slug ? `${slug}-${suffix}` : `board-${suffix}`
}
