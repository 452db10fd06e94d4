// kafkajs reads a whole topic (every partition from offset 0) and writes it as JSON lines.
//
// usage: node consume.js BOOTSTRAP TOPIC OUT.jsonl

const { Kafka, logLevel } = require('kafkajs')
require('./codecs')
const { fetchAll } = require('./fetchall')

async function main() {
  const [bootstrap, topic, output] = process.argv.slice(2)
  const kafka = new Kafka({ clientId: 'sluice-e2e', brokers: [bootstrap], logLevel: logLevel.WARN })
  const admin = kafka.admin()
  await admin.connect()
  const ends = await admin.fetchTopicOffsets(topic)
  await admin.disconnect()
  await fetchAll(kafka, topic, ends, output)
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
