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
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')
const LZ4Codec = require('kafkajs-lz4')
const { ZstdCodec } = require('zstd-codec')

// kafkajs ships gzip only. zstd-codec is pure WebAssembly, so it builds on any Node.
function zstdCodec() {
  const simple = new Promise(resolve => ZstdCodec.run(z => resolve(new z.Simple())))
  return () => ({
    async compress(encoder) {
      return Buffer.from((await simple).compress(encoder.buffer))
    },
    async decompress(buffer) {
      return Buffer.from((await simple).decompress(buffer))
    },
  })
}

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = new LZ4Codec().codec
CompressionCodecs[CompressionTypes.ZSTD] = zstdCodec()

const CODECS = {
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
}

function createCluster(kafka) {
  const sym = Object.getOwnPropertySymbols(kafka).find(s => s.description === 'private:Kafka:createCluster')
  return kafka[sym]({})
}

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
  process.stdout.write(JSON.stringify({ ends, firstTs }) + '\n')
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
