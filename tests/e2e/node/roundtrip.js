// kafkajs against Sluice: produce records read from a JSON-lines file with a codec, then
// read them back through kafkajs's own fetch and record batch decoder, and write what was
// read as JSON lines. The Python test compares both sides.
//
// Consumer groups are not used: kafkajs has no group-less consumer, and groups arrive
// with their own issue. The fetch goes through kafkajs's cluster and broker code, the same
// path its consumer uses.
//
// usage: node roundtrip.js BOOTSTRAP TOPIC CODEC IN.jsonl OUT.jsonl

const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')
const { CODECS } = require('./codecs')
const { fetchAll } = require('./fetchall')

async function main() {
  const [bootstrap, topic, codec, input, output] = process.argv.slice(2)
  const kafka = new Kafka({ clientId: 'sluice-e2e', brokers: [bootstrap], logLevel: logLevel.WARN })
  const records = fs.readFileSync(input, 'utf8').trim().split('\n').map(l => JSON.parse(l))

  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true })

  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  const chunk = 1000
  for (let i = 0; i < records.length; i += chunk) {
    const byPartition = new Map()
    for (const r of records.slice(i, i + chunk)) {
      if (!byPartition.has(r.partition)) byPartition.set(r.partition, [])
      byPartition.get(r.partition).push({
        partition: r.partition,
        key: Buffer.from(r.key, 'base64'),
        value: Buffer.from(r.value, 'base64'),
        headers: Object.fromEntries(r.headers.map(([k, v]) => [k, Buffer.from(v, 'base64')])),
        timestamp: String(r.timestamp),
      })
    }
    await producer.sendBatch({
      acks: -1,
      compression: CODECS[codec],
      topicMessages: [{ topic, messages: [...byPartition.values()].flat() }],
    })
  }
  await producer.disconnect()

  const ends = await admin.fetchTopicOffsets(topic)
  const firstTs = await admin.fetchTopicOffsetsByTimestamp(topic, records[0].timestamp)
  await admin.disconnect()

  await fetchAll(kafka, topic, ends, output)
  process.stdout.write(JSON.stringify({ ends, firstTs }) + '\n')
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
