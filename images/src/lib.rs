//! Rivet's streaming image pipeline: source (HTTP or file) → checksum → gzip/zstd → qcow2 or
//! raw → target, in one forward pass with bounded memory, plus a format safety inspector.
//!
//! Status: not built yet (see the project's issue 3).
