#!/usr/bin/env node
// Development stand-in for `sync-server serve`, built on the reference server
// (@y/websocket-server 0.1.1). It mimics only the parts of our server's contract the
// harness needs: the `listening on http://127.0.0.1:<port>` line, the `/v1/sync/{board}`
// WebSocket path, `GET /healthz` and `GET /v1/boards/{id}/state`. It has no persistence,
// no acks and no close codes, so the tests that need those skip when
// INTEROP_SERVER=reference. Not used by the committed suite's default run.
import http from 'node:http'
import { WebSocketServer } from 'ws'
import * as Y from 'yjs'
import { setupWSConnection, docs } from '@y/websocket-server/utils'

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : dflt
}
const host = opt('--bind', '127.0.0.1')
const port = Number(opt('--port', '0'))
const BOARD_ID = /^[A-Za-z0-9._-]{1,128}$/

const wss = new WebSocketServer({ noServer: true })
const server = http.createServer((req, res) => {
  const path = (req.url || '').split('?')[0]
  if (path === '/healthz') {
    res.writeHead(200).end('ok')
    return
  }
  const m = path.match(/^\/v1\/boards\/([^/]+)\/state$/)
  if (m && BOARD_ID.test(m[1])) {
    const doc = docs.get(m[1])
    const body = Buffer.from(Y.encodeStateAsUpdate(doc || new Y.Doc()))
    res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(body)
    return
  }
  res.writeHead(404).end()
})
server.on('upgrade', (req, socket, head) => {
  const path = (req.url || '').split('?')[0]
  const m = path.match(/^\/v1\/sync\/([^/]+)$/)
  if (!m || !BOARD_ID.test(m[1])) {
    socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n')
    return
  }
  wss.handleUpgrade(req, socket, head, ws => {
    setupWSConnection(ws, req, { docName: m[1] })
  })
})
server.listen(port, host, () => {
  console.log(`listening on http://${host}:${server.address().port}`)
})
process.on('SIGTERM', () => {
  for (const ws of wss.clients) ws.close(1012, 'shutting down')
  server.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 500).unref()
})
