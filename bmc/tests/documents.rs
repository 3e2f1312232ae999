//! Every recorded Redfish document in the fixtures — real vendor captures and DMTF
//! mockups — decodes with Rivet's lenient models, whatever model it is read as.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use rivet_bmc::redfish::decode;
use rivet_bmc::redfish::model::*;

fn documents(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            documents(&path, found);
        } else if path.file_name().is_some_and(|n| n == "index.json") {
            found.push(path);
        }
    }
}

/// Decodes `bytes` as every model; any failure names the model.
fn decode_as_everything(bytes: &[u8]) -> Result<(), String> {
    macro_rules! each {
        ($($model:ty),* $(,)?) => {
            $(decode::<$model>(bytes).map_err(|e| format!("{}: {e}", stringify!($model)))?;)*
        };
    }
    each!(
        ServiceRoot,
        Collection,
        SessionService,
        ComputerSystem,
        ActionInfo,
        Processor,
        EthernetInterface,
        Storage,
        Drive,
        SimpleStorage,
        Manager,
        VirtualMediaSlot,
        BiosResource,
        RegistryFile,
        AttributeRegistry,
        SecureBootResource,
        UpdateService,
        SoftwareInventory,
        Task,
        EventService,
        ErrorBody,
        SettingsBoot,
    );
    Ok(())
}

#[test]
fn every_recorded_document_decodes_as_every_model() {
    let mut found = Vec::new();
    documents(&rivet_tests::fixture("redfish"), &mut found);
    assert!(found.len() > 600, "only {} documents", found.len());
    for path in &found {
        let bytes = std::fs::read(path).unwrap();
        decode_as_everything(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn documents_decode_as_what_they_say_they_are() {
    let mut found = Vec::new();
    documents(&rivet_tests::fixture("redfish"), &mut found);
    let mut systems = 0;
    let mut media = 0;
    for path in &found {
        let bytes = std::fs::read(path).unwrap();
        let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let kind = raw["@odata.type"].as_str().unwrap_or_default();
        if kind.starts_with("#ComputerSystem.") {
            systems += 1;
            let system: ComputerSystem = decode(&bytes).unwrap();
            assert_eq!(
                system.odata_id.as_deref(),
                raw["@odata.id"].as_str(),
                "{}",
                path.display()
            );
            assert_eq!(system.power_state.as_deref(), raw["PowerState"].as_str());
        }
        if kind.starts_with("#VirtualMedia.") {
            media += 1;
            let slot: VirtualMediaSlot = decode(&bytes).unwrap();
            let types = raw["MediaTypes"].as_array().map_or(0, Vec::len);
            assert_eq!(slot.media_types.len(), types, "{}", path.display());
        }
    }
    assert!(systems >= 15, "{systems} systems");
    assert!(media >= 20, "{media} virtual-media slots");
}
