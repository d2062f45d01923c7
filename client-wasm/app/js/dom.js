// DOM helpers. Elements are built with properties, never with HTML strings, so board text is
// always text (and the content security policy needs no inline styles).

/**
 * Creates an element: `h('button', { className: 'x', onclick }, 'Label', child)`. Keys of
 * `props` that are DOM properties are set as properties; `dataset` and `style` objects are
 * merged; `attrs` sets attributes (for SVG and ARIA).
 */
export function h (tag, props = {}, ...children) {
  const el = document.createElement(tag)
  setProps(el, props)
  for (const c of children.flat()) if (c != null && c !== false) el.append(c)
  return el
}

const SVG_NS = 'http://www.w3.org/2000/svg'

/** Creates an SVG element with attributes. */
export function svg (tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v)
  for (const c of children.flat()) if (c != null) el.append(c)
  return el
}

function setProps (el, props) {
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset' || k === 'style') Object.assign(el[k], v)
    else if (k === 'attrs') for (const [a, av] of Object.entries(v)) el.setAttribute(a, av)
    else el[k] = v
  }
}

/** Formats a Unix time in milliseconds for people. */
export function when (ms) {
  const d = new Date(ms)
  const today = new Date()
  const sameDay = d.toDateString() === today.toDateString()
  return sameDay
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' })
}

/** A short toast at the bottom of the window. */
export function toast (message, kind = 'info') {
  let box = document.getElementById('toasts')
  if (!box) {
    box = h('div', { id: 'toasts', attrs: { role: 'status', 'aria-live': 'polite' } })
    document.body.append(box)
  }
  const el = h('div', { className: `toast ${kind}` }, message)
  box.append(el)
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000)
}

/** Triggers a download of `blob` as `name`. */
export function download (blob, name) {
  const url = URL.createObjectURL(blob)
  const a = h('a', { href: url, download: name })
  document.body.append(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 1000)
}

/**
 * A colour from the board or another peer, used only if it is a plain colour (a hex value, a
 * name, rgb()/hsl()), never arbitrary CSS; otherwise null.
 */
export function safeColor (c) {
  return typeof c === 'string' && /^(#[0-9a-fA-F]{3,8}|[a-zA-Z]{3,20}|(rgb|hsl)a?\([0-9., %/]{1,60}\))$/.test(c) ? c : null
}
