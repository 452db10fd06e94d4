// Compression codecs for kafkajs, which ships gzip only.

const { CompressionTypes, CompressionCodecs } = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')
const LZ4Codec = require('kafkajs-lz4')
const { ZstdCodec } = require('zstd-codec')

// kafkajs ships gzip only. zstd-codec is pure WebAssembly, so it builds on any Node.
// Frames without a content size (librdkafka writes those) need its streaming decoder.
function zstdCodec() {
  const zstd = new Promise(resolve => ZstdCodec.run(z => resolve(z)))
  return () => ({
    async compress(encoder) {
      return Buffer.from(new (await zstd).Simple().compress(encoder.buffer))
    },
    async decompress(buffer) {
      const z = await zstd
      const out = new z.Simple().decompress(buffer) || new z.Streaming().decompress(buffer)
      return Buffer.from(out)
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

module.exports = { CODECS }
