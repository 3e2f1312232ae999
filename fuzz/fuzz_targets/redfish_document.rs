//! The Redfish document decoder and the inventory mapping: any bytes decode or fail cleanly
//! as every model, and whatever decodes maps to a HardwareDetails that serialises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rivet_bmc::redfish::model::*;
use rivet_bmc::redfish::{assemble_inventory, decode};

fuzz_target!(|data: &[u8]| {
    let system = decode::<ComputerSystem>(data);
    let processor = decode::<Processor>(data);
    let interface = decode::<EthernetInterface>(data);
    let drive = decode::<Drive>(data);
    let simple = decode::<SimpleStorage>(data);
    for result in [
        decode::<ServiceRoot>(data).map(drop),
        decode::<Collection>(data).map(drop),
        decode::<VirtualMediaSlot>(data).map(drop),
        decode::<BiosResource>(data).map(drop),
        decode::<AttributeRegistry>(data).map(drop),
        decode::<Task>(data).map(drop),
        decode::<ErrorBody>(data).map(drop),
        decode::<Manager>(data).map(drop),
    ] {
        // Every model is total over JSON objects: only the JSON itself can fail.
        assert_eq!(result.is_ok(), system.is_ok());
    }
    let Ok(system) = system else { return };
    let details = assemble_inventory(
        &system,
        processor.ok().as_slice(),
        interface.ok().as_slice(),
        drive.ok().as_slice(),
        simple.ok().as_slice(),
    );
    let json = serde_json::to_string(&details).expect("HardwareDetails serialises");
    assert!(json.starts_with('{'));
});
