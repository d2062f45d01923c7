#!/usr/bin/env node
// The Hocuspocus server itself (@hocuspocus/server 4.x, in memory, no extensions) for the fan-out
// benchmark (`scripts/bench-fanout.sh`, server `hocuspocus`): every document is accepted without
// a token, nothing is stored. Prints `listening on http://HOST:PORT` once it accepts sockets.
import { Server } from '@hocuspocus/server'

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : dflt
}
const server = new Server({
  address: opt('--bind', '127.0.0.1'),
  port: Number(opt('--port', '0')),
  quiet: true
})
await server.listen()
console.log(`listening on http://${server.address.address}:${server.address.port}`)
const stop = () => server.destroy().finally(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
