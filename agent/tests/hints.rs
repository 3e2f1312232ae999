#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Root-device hints against the disks of a captured QEMU guest (tests/fixtures/agent).

use rivet_agent::hints::{HintError, HintSet, SelectError, select_root_disk};
use rivet_agent::inventory::{DiskInventory, Inventory};
use rivet_agent::sysfs::SysRoot;
use rivet_model::RootDeviceHints;
use rivet_tests::fixture;
use serde_json::json;

fn disks() -> Vec<DiskInventory> {
    Inventory::collect(&SysRoot::at(fixture("agent/qemu-pc")), &[]).storage
}

fn choose(hints: serde_json::Value) -> Result<String, SelectError> {
    let disks = disks();
    let set = HintSet::from_json(&hints).unwrap();
    select_root_disk(&disks, &set).map(|disk| disk.kernel_name.clone())
}

fn bmh(hints: RootDeviceHints) -> Result<String, SelectError> {
    let disks = disks();
    let set = HintSet::from_bmh(&hints).unwrap();
    select_root_disk(&disks, &set).map(|disk| disk.kernel_name.clone())
}

#[test]
fn without_hints_the_smallest_writable_disk_of_4_gib_wins() {
    // 1 GiB vdd is too small, the 4.5 GiB vdc is read-only, the 3 GiB RAID drive too small:
    // the 5 GiB NVMe disk is next.
    assert_eq!(choose(json!({})).unwrap(), "/dev/nvme0n1");
}

#[test]
fn every_bmh_field_selects_its_disk() {
    let cases = [
        (
            RootDeviceHints {
                device_name: Some("/dev/sdc".into()),
                ..Default::default()
            },
            "/dev/sdc",
        ),
        (
            RootDeviceHints {
                device_name: Some("/dev/disk/by-path/pci-0000:00:07.0-ata-1.0".into()),
                ..Default::default()
            },
            "/dev/sdb",
        ),
        (
            RootDeviceHints {
                hctl: Some("9:0:1:0".into()),
                ..Default::default()
            },
            "/dev/sdd",
        ),
        (
            RootDeviceHints {
                model: Some("20000".into()),
                ..Default::default()
            },
            "/dev/sdc",
        ),
        (
            RootDeviceHints {
                vendor: Some("samsung".into()),
                ..Default::default()
            },
            "/dev/sdd",
        ),
        (
            RootDeviceHints {
                serial_number: Some("VIRTIO-ROOT".into()),
                ..Default::default()
            },
            "/dev/vdb",
        ),
        (
            RootDeviceHints {
                min_size_gigabytes: Some(10),
                ..Default::default()
            },
            "/dev/sdc",
        ),
        (
            RootDeviceHints {
                wwn: Some("0x50014ee2b1c2d3e4".into()),
                ..Default::default()
            },
            "/dev/sdb",
        ),
        (
            RootDeviceHints {
                wwn_with_extension: Some("0x5002538E40A1B2C3".into()),
                ..Default::default()
            },
            "/dev/sdd",
        ),
        (
            RootDeviceHints {
                rotational: Some(false),
                min_size_gigabytes: Some(6),
                ..Default::default()
            },
            "/dev/sdb",
        ),
        (
            RootDeviceHints {
                rotational: Some(true),
                min_size_gigabytes: Some(10),
                ..Default::default()
            },
            "/dev/sdc",
        ),
    ];
    for (hints, expected) in cases {
        assert_eq!(bmh(hints.clone()).unwrap(), expected, "{hints:?}");
    }
}

#[test]
fn a_wwn_vendor_extension_hint_matches_only_disks_that_have_one() {
    let err = bmh(RootDeviceHints {
        wwn_vendor_extension: Some("0x1".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, SelectError::NoMatch { .. }));
}

#[test]
fn ironic_operators_select_disks() {
    assert_eq!(choose(json!({"size": ">= 7"})).unwrap(), "/dev/sdc");
    assert_eq!(
        choose(json!({"size": "<= 6", "rotational": false})).unwrap(),
        "/dev/nvme0n1"
    );
    assert_eq!(choose(json!({"size": 7})).unwrap(), "/dev/sdd");
    assert_eq!(
        choose(json!({"serial": "<or> NOPE <or> sata-1"})).unwrap(),
        "/dev/sdb"
    );
    assert_eq!(
        choose(json!({"model": "<in> nvme"})).unwrap(),
        "/dev/nvme0n1"
    );
    assert_eq!(
        choose(json!({"vendor": "s== seagate"})).unwrap(),
        "/dev/sdc"
    );
    assert_eq!(choose(json!({"name": "vdb"})).unwrap(), "/dev/vdb");
    assert_eq!(
        choose(json!({"name": "s!= /dev/nvme0n1", "size": "< 6"})).unwrap(),
        "/dev/sda"
    );
    assert_eq!(
        choose(json!({"by_path": "/dev/disk/by-path/pci-0000:00:06.0-scsi-0:0:1:0"})).unwrap(),
        "/dev/sdd"
    );
    assert_eq!(choose(json!({"tran": "sata"})).unwrap(), "/dev/sdb");
    assert_eq!(choose(json!({"hctl": "0:2:2:0"})).unwrap(), "/dev/sda");
    assert_eq!(
        choose(json!({"serial": ["MISSING", "SCSI-SSD-1"]})).unwrap(),
        "/dev/sdd",
        "a list of serials matches any of them"
    );
    assert_eq!(
        choose(json!({"name": "/dev/disk/by-id/wwn-0x5000c500a0b1c2d3"})).unwrap(),
        "/dev/sdc"
    );
}

#[test]
fn read_only_disks_are_never_chosen_and_the_error_says_so() {
    let err = choose(json!({"serial": "READ-ONLY"})).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("no disk matches"), "{message}");
    assert!(
        message.contains("/dev/vdc") && message.contains("[matches, but read-only]"),
        "{message}"
    );
    // Every disk is listed so the operator can fix the hints.
    for name in ["/dev/nvme0n1", "/dev/sda", "/dev/sdd", "/dev/vdd"] {
        assert!(message.contains(name), "{message}");
    }
}

#[test]
fn virtual_media_is_never_chosen() {
    let disks = Inventory::collect(&SysRoot::at(fixture("agent/qemu-q35-uefi")), &[]).storage;
    let set = HintSet::from_json(&json!({"vendor": "AMI"})).unwrap();
    let err = select_root_disk(&disks, &set).unwrap_err().to_string();
    assert!(err.contains("[matches, but virtual media]"), "{err}");
    // Without hints the 4 GiB minimum and the virtual-media rule leave the NVMe disk.
    let chosen = select_root_disk(&disks, &HintSet::default()).unwrap();
    assert_eq!(chosen.kernel_name, "/dev/nvme0n1");
}

#[test]
fn no_disk_large_enough_lists_the_disks() {
    let small: Vec<DiskInventory> = disks()
        .into_iter()
        .filter(|d| d.size_bytes() < 4 << 30)
        .collect();
    let err = select_root_disk(&small, &HintSet::default()).unwrap_err();
    assert!(matches!(err, SelectError::NoneLargeEnough { .. }));
    assert!(err.to_string().contains("/dev/vdd"));
    let none = select_root_disk(&[], &HintSet::default()).unwrap_err();
    assert!(none.to_string().contains("storage drivers"), "{none}");
}

#[test]
fn bad_hints_are_refused_with_a_reason() {
    let refuse = |value: serde_json::Value| HintSet::from_json(&value).unwrap_err();
    assert!(matches!(
        refuse(json!({"colour": "red"})),
        HintError::UnknownHint { .. }
    ));
    assert!(
        refuse(json!({"colour": "red"}))
            .to_string()
            .contains("valid hints are")
    );
    assert!(matches!(
        refuse(json!({"size": "big"})),
        HintError::Expression { .. }
    ));
    assert!(matches!(
        refuse(json!({"size": -3})),
        HintError::Expression { .. }
    ));
    assert!(matches!(
        refuse(json!({"rotational": "maybe"})),
        HintError::WrongType { .. }
    ));
    assert!(matches!(
        refuse(json!({"model": 7})),
        HintError::WrongType { .. }
    ));
    assert!(matches!(
        refuse(json!({"model": ">= 3"})),
        HintError::Expression { .. }
    ));
    assert!(matches!(
        refuse(json!({"minSizeGigabytes": "x"})),
        HintError::WrongType { .. }
    ));
    assert!(matches!(refuse(json!(["sda"])), HintError::NotAnObject(_)));
    assert!(matches!(
        refuse(json!({"serial": []})),
        HintError::WrongType { .. }
    ));
}

#[test]
fn bmh_values_may_carry_the_operator_grammar() {
    assert_eq!(
        bmh(RootDeviceHints {
            model: Some("<or> PM893 <or> nothing".into()),
            ..Default::default()
        })
        .unwrap(),
        "/dev/sdd"
    );
    assert_eq!(
        HintSet::from_bmh(&RootDeviceHints {
            min_size_gigabytes: Some(0),
            ..Default::default()
        })
        .unwrap(),
        HintSet::default(),
        "0 GiB means no size hint, as in BMO"
    );
}
