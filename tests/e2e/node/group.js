// Three-member kafkajs groups against Sluice: the group settles, consumes, a member leaves,
// another joins, and a member started after everyone left resumes from the group's
// committed offsets. Prints what each phase saw as JSON.
//
// usage: node group.js BOOTSTRAP TOPIC GROUP PARTITIONS

const { Kafka, logLevel } = require('kafkajs')

async function main() {
  const [bootstrap, topic, groupId, partitions] = process.argv.slice(2)
  const parts = Number(partitions)
  const kafka = new Kafka({ clientId: 'sluice-e2e', brokers: [bootstrap], logLevel: logLevel.WARN })
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic, numPartitions: parts }], waitForLeaders: true })
  const producer = kafka.producer()
  await producer.connect()
  const produce = async (from, to) => {
    const messages = []
    for (let i = from; i < to; i++) messages.push({ partition: i % parts, value: String(i) })
    await producer.send({ topic, messages })
  }

  const values = []
  const assignment = new Map() // member -> its latest assignment
  const waiters = []
  const check = () => {
    for (const w of [...waiters]) {
      if (w.test()) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve()
      }
    }
  }
  const until = test => new Promise(resolve => {
    waiters.push({ test, resolve })
    check()
  })
  const sizes = members => members.map(m => (assignment.get(m) || []).length).sort().join(',')

  const start = async sink => {
    // Commit after every message, so a rebalance never hands over unacknowledged reads.
    const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, rebalanceTimeout: 10000, heartbeatInterval: 500 })
    consumer.on(consumer.events.GROUP_JOIN, e => {
      assignment.set(consumer, e.payload.memberAssignment[topic] || [])
      check()
    })
    await consumer.connect()
    await consumer.subscribe({ topic, fromBeginning: true })
    await consumer.run({
      autoCommitThreshold: 1,
      eachMessage: async ({ message }) => {
        sink.push(Number(message.value.toString()))
        check()
      },
    })
    return consumer
  }
  const stop = async consumer => {
    await consumer.disconnect()
    assignment.delete(consumer)
  }

  const members = []
  for (let i = 0; i < 3; i++) members.push(await start(values))
  await until(() => sizes(members) === '2,2,2')
  const settled = members.map(m => assignment.get(m))
  await produce(0, 300)
  await until(() => values.length >= 300)

  await stop(members.pop())
  await until(() => sizes(members) === '3,3')
  await produce(300, 450)
  await until(() => values.length >= 450)

  members.push(await start(values))
  await until(() => sizes(members) === '2,2,2')
  await produce(450, 600)
  await until(() => values.length >= 600)
  for (const m of members) await stop(m)

  const committed = await admin.fetchOffsets({ groupId, topics: [topic] })
  const late = []
  const restarted = await start(late)
  await produce(600, 630)
  await until(() => late.length >= 30)
  await stop(restarted)
  await producer.disconnect()
  await admin.disconnect()
  process.stdout.write(JSON.stringify({ settled, values, committed: committed[0].partitions, late }) + '\n')
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
