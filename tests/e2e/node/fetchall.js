// Reads every record of a topic through kafkajs's own fetch and record batch decoder (the
// path its consumer uses, without a consumer group), from offset 0 up to each partition's
// high watermark, and writes them as JSON lines.

const fs = require('fs')

function createCluster(kafka) {
  const sym = Object.getOwnPropertySymbols(kafka).find(s => s.description === 'private:Kafka:createCluster')
  return kafka[sym]({})
}

// ends: [{ partition, high }] as admin.fetchTopicOffsets returns them.
async function fetchAll(kafka, topic, ends, output) {
  const cluster = createCluster(kafka)
  await cluster.connect()
  await cluster.refreshMetadata([topic])
  const out = fs.createWriteStream(output)
  for (const { partition, high } of ends) {
    const leader = cluster.findTopicPartitionMetadata(topic).find(p => p.partitionId === partition).leader
    const broker = await cluster.findBroker({ nodeId: String(leader) })
    let offset = 0
    while (offset < Number(high)) {
      const resp = await broker.fetch({
        replicaId: -1,
        isolationLevel: 1,
        maxWaitTime: 100,
        minBytes: 1,
        maxBytes: 1 << 20,
        topics: [{ topic, partitions: [{ partition, fetchOffset: String(offset), maxBytes: 1 << 20 }] }],
      })
      const p = resp.responses[0].partitions[0]
      if (p.errorCode !== 0) throw new Error(`fetch error ${p.errorCode}`)
      for (const m of p.messages) {
        if (Number(m.offset) < offset) continue
        out.write(JSON.stringify({
          partition,
          offset: Number(m.offset),
          key: m.key.toString('base64'),
          value: m.value.toString('base64'),
          headers: Object.entries(m.headers).map(([k, v]) => [k, v.toString('base64')]),
          timestamp: Number(m.timestamp),
        }) + '\n')
        offset = Number(m.offset) + 1
      }
    }
  }
  await new Promise(resolve => out.end(resolve))
  await cluster.disconnect()
}

module.exports = { fetchAll }
