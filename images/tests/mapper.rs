//! The sans-IO qcow2 mapper against `qemu-img convert -O raw`: every variant qemu-img and
//! qemu-io write, mapped with the tables provided up front and forward-only, fed in chunks
//! of random sizes. The guest disk starts filled with a marker byte, so a byte that no action
//! covers shows up as a difference.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use rivet_images::qcow2::{Action, ClusterDecompressor, Header, Mapper, StreamError};
use rivet_tests::scratch_dir;

use common::{Rng, corpus, corpus_of, reference_raw};

const MARKER: u8 = 0xA5;

fn apply(
    header: &Header,
    disk: &mut [u8],
    actions: &mut Vec<Action>,
    decompressor: &mut ClusterDecompressor,
) {
    let mut cluster = vec![0u8; header.cluster_size() as usize];
    for action in actions.drain(..) {
        match action {
            Action::Write { guest, data } => {
                let at = guest as usize;
                disk[at..at + data.len()].copy_from_slice(&data);
            }
            Action::Zero { guest, len } => {
                disk[guest as usize..(guest + len) as usize].fill(0);
            }
            Action::Inflate { guest, len, input } => {
                decompressor.decompress(&input, &mut cluster).unwrap();
                let at = guest as usize;
                disk[at..at + len as usize].copy_from_slice(&cluster[..len as usize]);
            }
        }
    }
}

fn feed_all(
    mapper: &mut Mapper,
    file: &Bytes,
    rng: &mut Rng,
    mut after: impl FnMut(&mut Vec<Action>),
) -> Result<(), StreamError> {
    let mut actions = Vec::new();
    let mut offset = 0;
    while offset < file.len() {
        let len = (1 + rng.below(300_000) as usize).min(file.len() - offset);
        mapper.feed(
            offset as u64,
            &file.slice(offset..offset + len),
            &mut actions,
        )?;
        after(&mut actions);
        offset += len;
    }
    mapper.finish(&mut actions)?;
    after(&mut actions);
    Ok(())
}

fn map_with_tables_first(file: &Bytes, rng: &mut Rng) -> Vec<u8> {
    let header = Header::parse(file).unwrap();
    let mut disk = vec![MARKER; header.virtual_size as usize];
    let mut decompressor = ClusterDecompressor::new(header.compression);
    let mut mapper = Mapper::new(&header, file, Some(file.len() as u64), 64 << 20).unwrap();
    let mut actions = Vec::new();
    if let Some((offset, len)) = mapper.l1_range() {
        mapper
            .provide_l1(
                &file[offset as usize..(offset + len) as usize],
                &mut actions,
            )
            .unwrap();
    }
    for offset in mapper.unknown_l2_tables() {
        let end = offset as usize + header.cluster_size() as usize;
        mapper
            .provide_l2(offset, &file[offset as usize..end], &mut actions)
            .unwrap();
    }
    assert!(mapper.mappings_known());
    apply(&header, &mut disk, &mut actions, &mut decompressor);
    feed_all(&mut mapper, file, rng, |actions| {
        assert!(
            actions.iter().all(|a| !matches!(a, Action::Zero { .. })),
            "zeros are all known up front"
        );
        apply(&header, &mut disk, actions, &mut decompressor);
    })
    .unwrap();
    assert_eq!(
        mapper.parked_peak(),
        0,
        "nothing is parked when the tables come first"
    );
    disk
}

fn map_forward_only(
    file: &Bytes,
    rng: &mut Rng,
    limit: u64,
) -> Result<(Vec<u8>, u64), StreamError> {
    let header = Header::parse(file).unwrap();
    let mut disk = vec![MARKER; header.virtual_size as usize];
    let mut decompressor = ClusterDecompressor::new(header.compression);
    let mut mapper = Mapper::new(&header, file, None, limit)?;
    feed_all(&mut mapper, file, rng, |actions| {
        apply(&header, &mut disk, actions, &mut decompressor);
    })?;
    Ok((disk, mapper.parked_peak()))
}

#[test]
fn every_qemu_variant_maps_byte_identically_both_ways() {
    let dir = scratch_dir("mapper");
    let mut rng = Rng::new(99);
    for image in corpus(dir.path()) {
        let reference = reference_raw(&image.path, dir.path());
        let file = Bytes::from(std::fs::read(&image.path).unwrap());

        let disk = map_with_tables_first(&file, &mut rng);
        assert!(
            disk == reference,
            "{}: tables-first output differs from qemu-img",
            image.name
        );

        let (disk, parked) = map_forward_only(&file, &mut rng, 256 << 20)
            .unwrap_or_else(|err| panic!("{}: forward-only: {err}", image.name));
        assert!(
            disk == reference,
            "{}: forward-only output differs from qemu-img",
            image.name
        );
        eprintln!(
            "{:>22}: forward-only parked at most {parked} bytes",
            image.name
        );
    }
}

#[test]
fn forward_only_fails_cleanly_when_the_l1_table_is_at_the_end() {
    let dir = scratch_dir("mapper-resized");
    let images = corpus_of(dir.path(), &["resized", "plain-64k"]);
    let resized = images.iter().find(|image| image.name == "resized").unwrap();
    let file = Bytes::from(std::fs::read(&resized.path).unwrap());
    let err = map_forward_only(&file, &mut Rng::new(1), 1 << 20).unwrap_err();
    assert_eq!(err, StreamError::ParkingLimit { limit: 1 << 20 });
    // The same image in qemu-img's usual layout needs no such room.
    let plain = images
        .iter()
        .find(|image| image.name == "plain-64k")
        .unwrap();
    let file = Bytes::from(std::fs::read(&plain.path).unwrap());
    let (_, parked) = map_forward_only(&file, &mut Rng::new(2), 1 << 20).unwrap();
    assert!(parked <= 256 << 10, "plain image parked {parked} bytes");
}
