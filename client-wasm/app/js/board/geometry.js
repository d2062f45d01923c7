// Plane geometry for the board: rectangles with a rotation about their centre, points, and where
// a connector meets an object's outline.

export const DEG = Math.PI / 180

/** Rotates `[x, y]` by `deg` degrees about the origin. */
export function rotate ([x, y], deg) {
  if (!deg) return [x, y]
  const c = Math.cos(deg * DEG)
  const s = Math.sin(deg * DEG)
  return [x * c - y * s, x * s + y * c]
}

/** The centre of an object's box. */
export function center (g) {
  return [g.pos[0] + g.size[0] / 2, g.pos[1] + g.size[1] / 2]
}

/** The four corners of an object's box in board coordinates (rotation applied). */
export function corners (g) {
  const [cx, cy] = center(g)
  const [w, h] = [g.size[0] / 2, g.size[1] / 2]
  return [[-w, -h], [w, -h], [w, h], [-w, h]].map(p => {
    const [x, y] = rotate(p, g.rotation || 0)
    return [cx + x, cy + y]
  })
}

/** The axis-aligned bounds `{x, y, w, h}` of a set of object boxes. */
export function bounds (geoms) {
  let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity
  for (const g of geoms) {
    if (!g.rotation) {
      x0 = Math.min(x0, g.pos[0]); y0 = Math.min(y0, g.pos[1])
      x1 = Math.max(x1, g.pos[0] + g.size[0]); y1 = Math.max(y1, g.pos[1] + g.size[1])
      continue
    }
    for (const [x, y] of corners(g)) {
      x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y)
    }
  }
  return x0 === Infinity ? null : { x: x0, y: y0, w: x1 - x0, h: y1 - y0 }
}

/** Whether board point `p` lies inside an object's (rotated) box. */
export function contains (g, p) {
  const [cx, cy] = center(g)
  const [x, y] = rotate([p[0] - cx, p[1] - cy], -(g.rotation || 0))
  return Math.abs(x) <= g.size[0] / 2 && Math.abs(y) <= g.size[1] / 2
}

/** Whether two axis-aligned rectangles `{x, y, w, h}` overlap. */
export function overlaps (a, b) {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h
}

/**
 * Where the segment from an object's centre towards board point `toward` leaves the object's
 * outline (a rectangle, or an ellipse for `ellipse`), rotation included.
 */
export function outlinePoint (g, kind, toward) {
  const [cx, cy] = center(g)
  const [dx, dy] = rotate([toward[0] - cx, toward[1] - cy], -(g.rotation || 0))
  const w = g.size[0] / 2
  const h = g.size[1] / 2
  if (dx === 0 && dy === 0) return [cx, cy]
  let t
  if (kind === 'ellipse') t = 1 / Math.sqrt((dx * dx) / (w * w) + (dy * dy) / (h * h))
  else t = Math.min(dx ? w / Math.abs(dx) : Infinity, dy ? h / Math.abs(dy) : Infinity)
  t = Math.min(t, 1)
  const [ox, oy] = rotate([dx * t, dy * t], g.rotation || 0)
  return [cx + ox, cy + oy]
}

/**
 * The box that resizing from `handle` (`nw`, `ne`, `se`, `sw`) to board point `p` gives, the
 * opposite corner staying where it is, in the object's own rotated frame; at least `min` wide
 * and high.
 */
export function resizeFrom (g, handle, p, min = 8) {
  const r = g.rotation || 0
  const sx = handle.includes('w') ? -1 : 1
  const sy = handle.includes('n') ? -1 : 1
  const [cx, cy] = center(g)
  const [fx, fy] = rotate([-sx * g.size[0] / 2, -sy * g.size[1] / 2], r)
  const fixed = [cx + fx, cy + fy]
  let [dx, dy] = rotate([p[0] - fixed[0], p[1] - fixed[1]], -r)
  dx = sx * Math.max(min, sx * dx)
  dy = sy * Math.max(min, sy * dy)
  const [mx, my] = rotate([dx / 2, dy / 2], r)
  const size = [Math.abs(dx), Math.abs(dy)]
  const c = [fixed[0] + mx, fixed[1] + my]
  return { pos: [c[0] - size[0] / 2, c[1] - size[1] / 2], size, rotation: r }
}

/** Rounds a coordinate for the document: 1/100 of a unit is plenty, and keeps updates small. */
export const round = (v) => Math.round(v * 100) / 100
