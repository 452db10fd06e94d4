// kafkajs over SASL_PLAINTEXT, or SASL_SSL when given a CA file: produces one record, then
// reads the topic from the start. Prints {"count": N}.
//
// usage: node sasl.js BOOTSTRAP MECHANISM USER PASSWORD TOPIC [CA_FILE]

const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')

async function main() {
  const [bootstrap, mechanism, username, password, topic, ca] = process.argv.slice(2)
  const kafka = new Kafka({
    clientId: 'sasl-e2e', brokers: [bootstrap], logLevel: logLevel.WARN,
    sasl: { mechanism, username, password },
    ssl: ca ? { ca: [fs.readFileSync(ca)] } : false,
  })
  const producer = kafka.producer()
  await producer.connect()
  await producer.send({ topic, messages: [{ partition: 0, value: 'kafkajs' }] })
  await producer.disconnect()
  const admin = kafka.admin()
  await admin.connect()
  const offsets = await admin.fetchTopicOffsets(topic)
  await admin.disconnect()
  const end = offsets.reduce((n, p) => n + Number(p.high), 0)
  const consumer = kafka.consumer({ groupId: 'sasl-js', maxWaitTimeInMs: 500 })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  let count = 0
  await new Promise((resolve, reject) => {
    consumer.run({ eachMessage: async () => { if (++count >= end) resolve() } }).catch(reject)
  })
  await consumer.disconnect()
  console.log(JSON.stringify({ count }))
}

main().catch(e => { console.error(e); process.exit(1) })
