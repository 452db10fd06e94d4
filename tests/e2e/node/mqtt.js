// mqtt.js against Sluice: a 5.0 subscriber and a 3.1.1 publisher, each at its own URL
// (mqtt://HOST:PORT, or ws://HOST:PORT/mqtt); prints what the subscriber received as JSON.
//
// usage: node mqtt.js SUB_URL PUB_URL   (MQTT_CA=FILE: the CA of mqtts:// and wss:// URLs)

const fs = require('fs')
const mqtt = require('mqtt')

const tls = process.env.MQTT_CA ? { ca: fs.readFileSync(process.env.MQTT_CA) } : {}

async function main() {
  const [subUrl, pubUrl] = process.argv.slice(2)
  const sub = await mqtt.connectAsync(subUrl, { protocolVersion: 5, clientId: 'js-sub', clean: true, ...tls })
  const got = []
  const all = new Promise(resolve => {
    sub.on('message', (topic, payload, packet) => {
      got.push({ topic, payload: payload.toString(), qos: packet.qos, user: packet.properties?.userProperties })
      if (got.length === 11) resolve()
    })
  })
  await sub.subscribeAsync('js/#', { qos: 2 })
  const pub = await mqtt.connectAsync(pubUrl, { protocolVersion: 4, clientId: 'js-pub', clean: true, ...tls })
  for (let i = 0; i < 10; i++) {
    await pub.publishAsync(`js/${i % 3}`, `m${i}`, { qos: 1 })
  }
  await pub.publishAsync('js/last', 'q2', { qos: 2 })
  await Promise.race([all, new Promise((_, reject) => setTimeout(() => reject(new Error(`only ${got.length} messages`)), 15000))])
  await pub.endAsync()
  await sub.endAsync()
  process.stdout.write(JSON.stringify(got) + '\n')
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
