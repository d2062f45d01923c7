#!/usr/bin/env node
// Checks that every relative link in the repository's Markdown resolves.
//
// Files: every `*.md` tracked by git (`git ls-files '*.md'`, so nothing under node_modules/ or
// target/). Links: inline links and images, `[text](target)` and `![alt](target)` (an optional
// title after the target is allowed), and reference definitions, `[label]: target`. Skipped:
// fenced code blocks (``` or ~~~), inline code spans, targets with a URI scheme (`http:`,
// `https:`, `mailto:`, ...).
//
// A target resolves when its path (percent-decoded, `#fragment` and `?query` removed) names a
// file or directory that exists and is tracked by git, relative to the Markdown file's
// directory (a path starting with `/`: relative to the repository root, as on GitHub). A
// `#fragment` on a Markdown target, or alone (`#section`, this file), must name one of that
// file's headings, by GitHub's rule: the heading's text, lowercased, with every character that
// is not a letter, digit, `_`, `-` or space removed and each space turned into `-`; a repeated
// heading gets `-1`, `-2`, ... Fragments on other files (`file.rs#L10`) are not checked.
//
// Prints every broken link as `file:line: target (why)` and exits 1; exits 0 if there is none.
// Usage: node scripts/check-links.mjs   (from anywhere inside the repository)
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'

const root = execFileSync('git', ['rev-parse', '--show-toplevel'], { encoding: 'utf8' }).trim()
const gitFiles = (...pathspec) =>
  execFileSync('git', ['-C', root, 'ls-files', '-z', '--', ...pathspec], { encoding: 'utf8' })
    .split('\0')
    .filter(Boolean)

const tracked = new Set()
for (const file of gitFiles()) {
  tracked.add(file)
  // Every directory above a tracked file is tracked too.
  for (let dir = path.posix.dirname(file); dir !== '.'; dir = path.posix.dirname(dir)) tracked.add(dir)
}
tracked.add('.')

/**
 * The lines of `text` outside fenced code blocks, as `[lineNumber, line]`; with `blank`, the
 * contents of inline code spans are replaced by spaces.
 */
function proseLines (text, { blank = true } = {}) {
  const out = []
  let fence = null // the opening fence's character and length, while inside a block
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '')
    const m = line.match(/^ {0,3}(`{3,}|~{3,})(.*)$/)
    if (fence) {
      if (m && m[1][0] === fence[0] && m[1].length >= fence.length && m[2].trim() === '') fence = null
      return
    }
    if (m && !(m[1][0] === '`' && m[2].includes('`'))) {
      fence = m[1]
      return
    }
    out.push([i + 1, blank ? blankCodeSpans(line) : line])
  })
  return out
}

/** `line` with the contents of inline code spans replaced by spaces (same length). */
function blankCodeSpans (line) {
  return line.replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (span, ticks) =>
    ticks + ' '.repeat(span.length - 2 * ticks.length) + ticks)
}

/** A heading's text as GitHub renders it: code, emphasis, links and HTML reduced to text. */
function headingText (raw) {
  return raw
    .replace(/`+([^`]*)`+/g, '$1')
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/<[^>]+>/g, '')
    .replace(/(\*{1,3}|_{1,3})(\S(?:.*?\S)?)\1/g, '$2')
}

/** GitHub's anchor for a heading text (before the suffix for repeated headings). */
function slug (text) {
  return text.toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '').replace(/ /g, '-')
}

const anchorCache = new Map()
/** The anchors of the Markdown file `file` (repository-relative). */
function anchors (file) {
  if (anchorCache.has(file)) return anchorCache.get(file)
  const found = new Set()
  const counts = new Map()
  const add = text => {
    const base = slug(headingText(text).trim())
    const n = counts.get(base) ?? 0
    counts.set(base, n + 1)
    found.add(n === 0 ? base : `${base}-${n}`)
  }
  const lines = proseLines(readFileSync(path.join(root, file), 'utf8'), { blank: false })
  lines.forEach(([, line], k) => {
    const atx = line.match(/^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/)
    if (atx) return add(atx[1] ?? '')
    // Setext: a paragraph line underlined with `=` or `-`.
    const next = lines[k + 1]
    if (next && next[0] === lines[k][0] + 1 && /^ {0,3}(=+|-+)[ \t]*$/.test(next[1]) &&
        line.trim() !== '' && !/^ {0,3}([-*+>|#]|\d+[.)])/.test(line) && !line.includes('|')) {
      add(line.trim())
    }
  })
  for (const m of readFileSync(path.join(root, file), 'utf8').matchAll(/<a\s[^>]*(?:name|id)="([^"]+)"/g)) found.add(m[1])
  anchorCache.set(file, found)
  return found
}

/** Why `target`, linked from `file`, does not resolve; `null` if it does. */
function problem (file, target) {
  const hash = target.indexOf('#')
  const rawPath = (hash < 0 ? target : target.slice(0, hash)).replace(/\?.*$/, '')
  const fragment = hash < 0 ? null : target.slice(hash + 1)
  let decoded
  try {
    decoded = decodeURIComponent(rawPath)
  } catch {
    return 'malformed percent-encoding'
  }
  let resolved = file
  if (decoded !== '') {
    const joined = decoded.startsWith('/')
      ? path.posix.normalize(decoded.slice(1) || '.')
      : path.posix.join(path.posix.dirname(file), decoded)
    resolved = joined.replace(/\/+$/, '') || '.'
    if (resolved === '..' || resolved.startsWith('../')) return 'outside the repository'
    if (!existsSync(path.join(root, resolved))) return 'no such file or directory'
    if (!tracked.has(resolved)) return 'not tracked by git'
  }
  if (fragment !== null && fragment !== '' && resolved.endsWith('.md')) {
    let name
    try {
      name = decodeURIComponent(fragment)
    } catch {
      return 'malformed percent-encoding'
    }
    if (!anchors(resolved).has(name)) return `no heading #${name} in ${resolved}`
  }
  return null
}

const INLINE = /!?\[((?:[^[\]\\]|\\.|\[(?:[^[\]\\]|\\.)*\])*)\]\(\s*(<[^>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)/g
const DEFINITION = /^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)/

const broken = []
let checked = 0
for (const file of gitFiles('*.md')) {
  if (!existsSync(path.join(root, file))) continue // deleted in the working tree
  for (const [number, line] of proseLines(readFileSync(path.join(root, file), 'utf8'))) {
    const targets = [...line.matchAll(INLINE)].map(m => m[2])
    const def = line.match(DEFINITION)
    if (def) targets.push(def[1])
    for (let target of targets) {
      target = target.replace(/^<(.*)>$/, '$1')
      if (target === '') {
        broken.push(`${file}:${number}: (empty target)`)
        continue
      }
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue // http:, https:, mailto:, ...
      checked++
      const why = problem(file, target)
      if (why) broken.push(`${file}:${number}: ${target} (${why})`)
    }
  }
}

if (broken.length > 0) {
  console.error(`${broken.length} broken link(s) in Markdown:`)
  for (const b of broken) console.error(b)
  process.exit(1)
}
console.log(`links: ok (${checked} checked)`)
