// Two-member kafkajs groups whose members bootstrap to different gateways, started again
// and again: prints, for each start-up, how long until both members had partitions.
//
// usage: node startups.js BOOTSTRAP_A BOOTSTRAP_B TOPIC PARTITIONS STARTUPS TIMEOUT_MS

const { Kafka, logLevel } = require('kafkajs')

async function startup(bootstraps, topic, partitions, groupId, timeoutMs) {
  const assigned = new Map() // member -> its latest assignment
  // Settled: every member has partitions, and together they hold each partition once.
  const settled = () => {
    const all = [...assigned.values()].flat().sort((x, y) => x - y)
    return assigned.size === bootstraps.length && [...assigned.values()].every(a => a.length > 0) &&
      all.length === partitions && all.every((p, i) => p === i)
  }
  let done
  const both = new Promise(resolve => { done = resolve })
  const began = Date.now()
  const consumers = bootstraps.map((b, i) => {
    const kafka = new Kafka({ clientId: `startup-${i}`, brokers: [b], logLevel: logLevel.NOTHING })
    // kafkajs heartbeats between fetches: a short long-poll lets a member hear of a rebalance
    // within a second instead of after its 5 s default.
    const c = kafka.consumer({ groupId, sessionTimeout: 10000, rebalanceTimeout: 10000, heartbeatInterval: 500, maxWaitTimeInMs: 500 })
    c.on(c.events.GROUP_JOIN, e => {
      assigned.set(i, e.payload.memberAssignment[topic] || [])
      if (settled()) done()
    })
    return c
  })
  for (const c of consumers) {
    await c.connect()
    await c.subscribe({ topic, fromBeginning: true })
    await c.run({ eachMessage: async () => {} })
  }
  let timer
  await Promise.race([both, new Promise(resolve => { timer = setTimeout(resolve, timeoutMs) })])
  clearTimeout(timer)
  const ms = settled() ? Date.now() - began : null
  await Promise.all(consumers.map(c => c.disconnect()))
  return { ms }
}

async function main() {
  const [a, b, topic, partitions, startups, timeoutMs] = process.argv.slice(2)
  const results = []
  for (let i = 0; i < Number(startups); i++) {
    const pair = i % 2 === 0 ? [a, b] : [b, a]
    results.push(await startup(pair, topic, Number(partitions), `js-startup-${i}`, Number(timeoutMs)))
  }
  console.log(JSON.stringify(results))
}

main().catch(e => { console.error(e); process.exit(1) })
