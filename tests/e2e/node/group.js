// A three-member kafkajs consumer group: waits for the group to settle, produces, consumes
// every record, and prints assignments, values and the group's committed offsets as JSON.
//
// usage: node group.js BOOTSTRAP TOPIC GROUP PARTITIONS COUNT

const { Kafka, logLevel } = require('kafkajs')

async function main() {
  const [bootstrap, topic, groupId, partitions, count] = process.argv.slice(2)
  const total = Number(count)
  const kafka = new Kafka({ clientId: 'sluice-e2e', brokers: [bootstrap], logLevel: logLevel.WARN })
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic, numPartitions: Number(partitions) }], waitForLeaders: true })

  const values = []
  const assignments = new Map()
  // The assignment once all three members share the topic; later rebalances (members
  // leaving at the end) do not change it.
  let settledAssignments = null
  const consumers = []
  let settled
  const allSettled = new Promise(resolve => (settled = resolve))
  for (let i = 0; i < 3; i++) {
    const consumer = kafka.consumer({ groupId, sessionTimeout: 6000, heartbeatInterval: 500 })
    consumer.on(consumer.events.GROUP_JOIN, e => {
      assignments.set(i, e.payload.memberAssignment[topic] || [])
      const parts = [...assignments.values()].map(a => a.length).sort()
      if (!settledAssignments && assignments.size === 3 && parts.join(',') === '2,2,2') {
        settledAssignments = [...assignments.values()]
        settled()
      }
    })
    await consumer.connect()
    await consumer.subscribe({ topic, fromBeginning: true })
    consumers.push(consumer)
  }
  let done
  const allDone = new Promise(resolve => (done = resolve))
  for (const consumer of consumers) {
    consumer.run({
      eachMessage: async ({ message }) => {
        values.push(Number(message.value.toString()))
        if (values.length >= total) done()
      },
    })
  }
  await allSettled

  const producer = kafka.producer()
  await producer.connect()
  const messages = []
  for (let i = 0; i < total; i++) messages.push({ partition: i % Number(partitions), value: String(i) })
  await producer.send({ topic, messages })
  await producer.disconnect()

  await allDone
  // Disconnecting commits what was consumed.
  for (const consumer of consumers) await consumer.disconnect()
  const committed = await admin.fetchOffsets({ groupId, topics: [topic] })
  await admin.disconnect()
  process.stdout.write(JSON.stringify({
    assignments: settledAssignments,
    values,
    committed: committed[0].partitions,
  }) + '\n')
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
