//! Per-host agent ISOs for virtual-media boot.
//!
//! The agent ISO that `scripts/agent-image.sh` builds carries `rivet/cmdline`: a 4096-byte
//! file that starts with [`SLOT_MARKER`] and is padded with spaces. ISO 9660 keeps a file
//! in one contiguous extent that starts on a 2048-byte sector, so a host's ISO is the
//! template with those 4096 bytes replaced by the host's agent parameters. Nothing is
//! rebuilt or copied: a host's ISO is the shared template bytes around a 4 KiB slot of its
//! own, which is why a thousand hosts booting by virtual media cost a thousand slots, not a
//! thousand ISOs.
//!
//! This module is pure: it finds the slot and renders host ISOs; serving them is the
//! boot driver's business.

use bytes::Bytes;

/// The first word of the template's `rivet/cmdline`.
pub const SLOT_MARKER: &[u8] = b"rivet-cmdline-slot-v1";
/// The size of `rivet/cmdline` in the template.
pub const SLOT_LEN: usize = 4096;
/// ISO 9660's logical sector: every file extent starts on one.
const SECTOR: usize = 2048;

/// A template that cannot carry per-host parameters, or parameters that do not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentIsoError {
    #[error(
        "the agent ISO has no rivet/cmdline slot (rebuild it with `just agent-image`; an ISO from before the slot cannot carry a host's parameters)"
    )]
    NoSlot,
    #[error(
        "the agent ISO has {0} rivet/cmdline slots; a host's parameters must go in exactly one"
    )]
    ManySlots(usize),
    #[error("the agent ISO's rivet/cmdline slot is cut short or is not plain text")]
    DamagedSlot,
    #[error("the agent parameters take {len} bytes; the ISO's slot holds {max}")]
    TooLong { len: usize, max: usize },
    #[error("agent parameters must be printable ASCII words")]
    NotPrintable,
}

/// An agent ISO with a parameter slot.
#[derive(Debug, Clone)]
pub struct AgentIsoTemplate {
    bytes: Bytes,
    slot_at: usize,
    /// Parameters the template's own slot already carries (after the marker); every host
    /// ISO keeps them, after the host's, so a site-built ISO's static settings survive.
    built_in: String,
}

impl AgentIsoTemplate {
    /// Finds the slot in an ISO image.
    pub fn parse(bytes: Bytes) -> Result<Self, AgentIsoError> {
        let mut slots = bytes
            .chunks(SECTOR)
            .enumerate()
            .filter(|(_, sector)| sector.starts_with(SLOT_MARKER))
            .map(|(index, _)| index * SECTOR);
        let slot_at = slots.next().ok_or(AgentIsoError::NoSlot)?;
        let others = slots.count();
        if others > 0 {
            return Err(AgentIsoError::ManySlots(others + 1));
        }
        let slot = bytes
            .get(slot_at..slot_at + SLOT_LEN)
            .ok_or(AgentIsoError::DamagedSlot)?;
        let text = std::str::from_utf8(slot).map_err(|_| AgentIsoError::DamagedSlot)?;
        if !text.ends_with('\n') || !text.bytes().all(|b| b == b'\n' || is_printable(b)) {
            return Err(AgentIsoError::DamagedSlot);
        }
        let built_in = text
            .split_ascii_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Self {
            bytes,
            slot_at,
            built_in,
        })
    }

    /// The ISO's size in bytes (every host ISO has the same).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always `false`: a template holds at least its slot.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The ISO for one host: the template with `params` (white-space separated words)
    /// written into the slot ahead of the template's own parameters.
    pub fn render(&self, params: &str) -> Result<HostIso, AgentIsoError> {
        if !params.bytes().all(|b| b == b' ' || is_printable(b)) {
            return Err(AgentIsoError::NotPrintable);
        }
        let mut text = params
            .split_ascii_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !self.built_in.is_empty() {
            text.push(' ');
            text.push_str(&self.built_in);
        }
        // The agent reads the slot as words; the last byte stays a newline.
        if text.len() >= SLOT_LEN {
            return Err(AgentIsoError::TooLong {
                len: text.len(),
                max: SLOT_LEN - 1,
            });
        }
        let mut slot = text.into_bytes();
        slot.resize(SLOT_LEN - 1, b' ');
        slot.push(b'\n');
        Ok(HostIso {
            head: self.bytes.slice(..self.slot_at),
            slot: Bytes::from(slot),
            tail: self.bytes.slice(self.slot_at + SLOT_LEN..),
        })
    }
}

fn is_printable(byte: u8) -> bool {
    byte.is_ascii_graphic() || byte == b' '
}

/// One host's ISO, as the three pieces a response streams.
#[derive(Debug, Clone)]
pub struct HostIso {
    head: Bytes,
    slot: Bytes,
    tail: Bytes,
}

impl HostIso {
    /// The ISO's size in bytes.
    pub fn len(&self) -> usize {
        self.head.len() + self.slot.len() + self.tail.len()
    }

    /// Always `false`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pieces in order; they share the template's memory.
    pub fn chunks(&self) -> [Bytes; 3] {
        [self.head.clone(), self.slot.clone(), self.tail.clone()]
    }

    /// Bytes `range` of the ISO as pieces that share the template's memory; BMCs that
    /// mount an ISO over HTTP read it by ranges rather than downloading it.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Vec<Bytes> {
        let mut pieces = Vec::with_capacity(3);
        let mut offset = 0;
        for chunk in self.chunks() {
            let (start, end) = (offset, offset + chunk.len());
            offset = end;
            let from = range.start.max(start);
            let to = range.end.min(end);
            if from < to {
                pieces.push(chunk.slice(from - start..to - start));
            }
        }
        pieces
    }
}

/// What a `Range` header asks of a body of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No range, or one this server answers with the whole body (several ranges).
    Whole,
    /// One satisfiable range.
    Part(std::ops::Range<usize>),
    /// A range wholly past the end (416).
    Unsatisfiable,
}

/// Reads a `Range` header value for a body of `len` bytes (RFC 9110 §14.1.2).
pub fn parse_range(header: Option<&str>, len: usize) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |text: &str| text.trim().parse::<usize>().ok();
    let range = match (first.trim().is_empty(), number(first), number(last)) {
        // `-n`: the last n bytes.
        (true, _, Some(suffix)) if suffix > 0 => len.saturating_sub(suffix)..len,
        (true, _, _) => return RangeRequest::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => start..len,
        (false, Some(start), Some(end)) if end >= start => start..end.saturating_add(1).min(len),
        // Syntactically wrong ranges are ignored, as the RFC asks.
        _ => return RangeRequest::Whole,
    };
    if range.start >= len {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Part(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image laid out like an ISO: sectors of filler with the slot at `sector`.
    fn image(sector: usize, built_in: &str) -> Vec<u8> {
        let mut bytes = vec![0xAA; SECTOR * 8];
        let mut slot = format!("rivet-cmdline-slot-v1 {built_in}").into_bytes();
        slot.resize(SLOT_LEN - 1, b' ');
        slot.push(b'\n');
        bytes[sector * SECTOR..sector * SECTOR + SLOT_LEN].copy_from_slice(&slot);
        bytes
    }

    fn assembled(iso: &HostIso) -> Vec<u8> {
        iso.chunks()
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect()
    }

    #[test]
    fn a_host_iso_differs_from_the_template_only_in_the_slot() {
        let template_bytes = image(3, "ip=dhcp");
        let template = AgentIsoTemplate::parse(Bytes::from(template_bytes.clone())).unwrap();
        let iso = template
            .render("rivet.url=https://10.0.0.1:6385   rivet.token=abc")
            .unwrap();
        let bytes = assembled(&iso);
        assert_eq!(bytes.len(), template_bytes.len());
        assert_eq!(iso.len(), template.len());
        let slot = 3 * SECTOR..3 * SECTOR + SLOT_LEN;
        assert_eq!(bytes[..slot.start], template_bytes[..slot.start]);
        assert_eq!(bytes[slot.end..], template_bytes[slot.end..]);
        let text = std::str::from_utf8(&bytes[slot]).unwrap();
        assert!(text.ends_with(" \n"));
        assert_eq!(
            text.split_whitespace().collect::<Vec<_>>(),
            [
                "rivet.url=https://10.0.0.1:6385",
                "rivet.token=abc",
                "ip=dhcp"
            ]
        );
    }

    #[test]
    fn templates_without_exactly_one_intact_slot_are_refused() {
        assert_eq!(
            AgentIsoTemplate::parse(Bytes::from(vec![0; SECTOR * 4])).unwrap_err(),
            AgentIsoError::NoSlot
        );
        // The marker counts only at a sector start, where a file begins.
        let mut unaligned = vec![0; SECTOR * 4];
        unaligned[100..100 + SLOT_MARKER.len()].copy_from_slice(SLOT_MARKER);
        assert_eq!(
            AgentIsoTemplate::parse(Bytes::from(unaligned)).unwrap_err(),
            AgentIsoError::NoSlot
        );
        let mut two = image(1, "");
        two[5 * SECTOR..5 * SECTOR + SLOT_LEN].copy_from_slice(&image(1, "")[SECTOR..3 * SECTOR]);
        assert_eq!(
            AgentIsoTemplate::parse(Bytes::from(two)).unwrap_err(),
            AgentIsoError::ManySlots(2)
        );
        let cut = image(6, "")[..7 * SECTOR].to_vec();
        assert_eq!(
            AgentIsoTemplate::parse(Bytes::from(cut)).unwrap_err(),
            AgentIsoError::DamagedSlot
        );
        let mut binary = image(2, "");
        binary[2 * SECTOR + 50] = 0;
        assert_eq!(
            AgentIsoTemplate::parse(Bytes::from(binary)).unwrap_err(),
            AgentIsoError::DamagedSlot
        );
    }

    #[test]
    fn ranges_read_the_same_bytes_as_the_whole_iso() {
        let template = AgentIsoTemplate::parse(Bytes::from(image(2, ""))).unwrap();
        let iso = template.render("rivet.host=7").unwrap();
        let whole = assembled(&iso);
        let len = whole.len();
        for (header, expected) in [
            ("bytes=0-0", 0..1),
            ("bytes=4000-4200", 4000..4201),
            ("bytes=4096-8191", 4096..8192),
            ("bytes=8000-", 8000..len),
            ("bytes=-10", len - 10..len),
            ("bytes=-999999", 0..len),
            ("bytes=100-999999", 100..len),
        ] {
            let RangeRequest::Part(range) = parse_range(Some(header), len) else {
                panic!("{header} should be one range");
            };
            assert_eq!(range, expected, "{header}");
            let bytes: Vec<u8> = iso.slice(range.clone()).iter().flatten().copied().collect();
            assert_eq!(bytes, whole[range], "{header}");
        }
        assert_eq!(parse_range(None, len), RangeRequest::Whole);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), len), RangeRequest::Whole);
        assert_eq!(parse_range(Some("bytes=9-3"), len), RangeRequest::Whole);
        assert_eq!(parse_range(Some("lines=1-2"), len), RangeRequest::Whole);
        assert_eq!(
            parse_range(Some(&format!("bytes={len}-")), len),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-0"), len),
            RangeRequest::Unsatisfiable
        );
    }

    #[test]
    fn parameters_that_do_not_fit_or_are_not_words_are_refused() {
        let template = AgentIsoTemplate::parse(Bytes::from(image(0, "a=b"))).unwrap();
        let long = "x".repeat(SLOT_LEN - 4);
        assert_eq!(
            template.render(&long).unwrap_err(),
            AgentIsoError::TooLong {
                len: SLOT_LEN,
                max: SLOT_LEN - 1
            }
        );
        assert!(template.render(&"y".repeat(SLOT_LEN - 5)).is_ok());
        assert_eq!(
            template.render("a=b\nc=d").unwrap_err(),
            AgentIsoError::NotPrintable
        );
        assert_eq!(
            template.render("rivet.token=é").unwrap_err(),
            AgentIsoError::NotPrintable
        );
    }
}
