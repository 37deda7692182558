// aedes (npm) as a test broker: node aedes_broker.mjs PORT
import { Aedes } from 'aedes'
import { createServer } from 'node:net'

const port = Number(process.argv[2])
const broker = await Aedes.createBroker({ concurrency: 1000 })
const server = createServer(broker.handle)
server.listen(port, '127.0.0.1', () => console.log(`aedes ${process.env.npm_package_version ?? ''} listening on ${port}`))
broker.on('clientError', (client, error) => console.log(`clientError ${client?.id}: ${error.message}`))
broker.on('connectionError', (client, error) => console.log(`connectionError ${client?.id}: ${error.message}`))
process.on('SIGTERM', () => { server.close(); broker.close(() => process.exit(0)) })
