//! The qcow2 sans-IO core on arbitrary bytes: header parsing, then the mapper both ways
//! (tables first from the same bytes, and forward-only in uneven chunks), with every
//! compressed cluster inflated. Invariants: no panic, no action outside the virtual disk,
//! nothing inflates past one cluster.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rivet_images::qcow2::{Action, ClusterDecompressor, Header, Mapper};

/// Keeps each run's memory small; the parser itself has no such limit.
const PARKING_LIMIT: u64 = 8 << 20;

fn check(header: &Header, actions: &mut Vec<Action>, decompressor: &mut ClusterDecompressor, cluster: &mut [u8]) {
    for action in actions.drain(..) {
        let (guest, len) = match &action {
            Action::Write { guest, data } => (*guest, data.len() as u64),
            Action::Zero { guest, len } => (*guest, *len),
            Action::Inflate { guest, len, input } => {
                assert!(*len <= header.cluster_size());
                assert!(input.len() as u64 <= 2 * header.cluster_size() + 512);
                let _ = decompressor.decompress(input, cluster);
                (*guest, *len)
            }
        };
        assert!(guest + len <= header.virtual_size, "action beyond the virtual disk");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = Header::parse(data) else {
        return;
    };
    let file = Bytes::copy_from_slice(data);
    let mut decompressor = ClusterDecompressor::new(header.compression);
    let mut cluster = vec![0u8; header.cluster_size() as usize];
    let mut actions = Vec::new();

    // Tables first, from the same bytes.
    if let Ok(mut mapper) = Mapper::new(&header, data, Some(data.len() as u64), PARKING_LIMIT) {
        let mut ok = true;
        if let Some((offset, len)) = mapper.l1_range() {
            ok = data
                .get(offset as usize..(offset + len) as usize)
                .is_some_and(|table| mapper.provide_l1(table, &mut actions).is_ok());
        }
        for offset in mapper.unknown_l2_tables() {
            let end = offset as usize + header.cluster_size() as usize;
            ok = ok
                && data
                    .get(offset as usize..end)
                    .is_some_and(|table| mapper.provide_l2(offset, table, &mut actions).is_ok());
        }
        check(&header, &mut actions, &mut decompressor, &mut cluster);
        if ok && mapper.feed(0, &file, &mut actions).is_ok() {
            let _ = mapper.finish(&mut actions);
        }
        check(&header, &mut actions, &mut decompressor, &mut cluster);
    }

    // Forward-only, in chunks whose sizes come from the data itself.
    if let Ok(mut mapper) = Mapper::new(&header, data, None, PARKING_LIMIT) {
        let step = 1 + data.get(7).copied().unwrap_or(13) as usize * 97;
        let mut offset = 0;
        let mut failed = false;
        while offset < file.len() && !failed {
            let end = (offset + step).min(file.len());
            failed = mapper.feed(offset as u64, &file.slice(offset..end), &mut actions).is_err();
            check(&header, &mut actions, &mut decompressor, &mut cluster);
            offset = end;
        }
        if !failed {
            let _ = mapper.finish(&mut actions);
            check(&header, &mut actions, &mut decompressor, &mut cluster);
        }
    }
});
