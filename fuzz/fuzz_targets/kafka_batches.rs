//! Kafka record batches from arbitrary bytes, as a produce request carries them: header
//! walking, validation, CRC checks and record decoding never panic, and a batch that
//! decodes re-encodes to one that decodes to the same records.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice_protocols::kafka::batch;
use sluice_protocols::kafka::records::{decode_batch, encode_batch};

fuzz_target!(|data: &[u8]| {
    for info in batch::iter_headers(data) {
        let Ok(info) = info else { break };
        let _ = batch::verify_crc(data, &info);
    }
    if batch::validate_produce(data).is_err() {
        return;
    }
    let bytes = Bytes::copy_from_slice(data);
    if let Ok((header, records)) = decode_batch(&bytes) {
        let mut out = BytesMut::new();
        if encode_batch(&header, &records, &mut out).is_ok() {
            let (_, again) = decode_batch(&out.freeze()).expect("a re-encoded batch decodes");
            assert_eq!(again, records);
        }
    }
});
