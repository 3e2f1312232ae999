//! Root-device hints: which disk receives the image.
//!
//! Hints come as a BareMetalHost `rootDeviceHints` ([`RootDeviceHints`]) or as Ironic's
//! `root_device` dictionary with its operator grammar ([`expr`]); both become a [`HintSet`].
//! [`select_root_disk`] applies it to the inventory: every hint must match; without hints the
//! smallest disk of at least 4 GiB wins, as in IPA. Read-only disks and virtual media are
//! never chosen, and when nothing matches the error lists every disk seen.

pub mod expr;

use std::fmt;

use rivet_model::RootDeviceHints;
use serde_json::Value;
use thiserror::Error;

use self::expr::{Expr, ExprError, ValueKind};
use crate::inventory::{DiskInventory, natural_key};

const GIB: f64 = (1u64 << 30) as f64;
/// IPA's minimum size for a disk chosen without hints.
pub const DEFAULT_MIN_BYTES: u64 = 4 << 30;

/// A disk property a hint can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HintField {
    Name,
    ByPath,
    Model,
    Vendor,
    Serial,
    Wwn,
    WwnWithExtension,
    WwnVendorExtension,
    Hctl,
    Transport,
    Size,
    Rotational,
}

impl HintField {
    const ALL: [HintField; 12] = [
        HintField::Name,
        HintField::ByPath,
        HintField::Model,
        HintField::Vendor,
        HintField::Serial,
        HintField::Wwn,
        HintField::WwnWithExtension,
        HintField::WwnVendorExtension,
        HintField::Hctl,
        HintField::Transport,
        HintField::Size,
        HintField::Rotational,
    ];

    /// Ironic's name for the hint.
    pub fn ironic_name(self) -> &'static str {
        match self {
            HintField::Name => "name",
            HintField::ByPath => "by_path",
            HintField::Model => "model",
            HintField::Vendor => "vendor",
            HintField::Serial => "serial",
            HintField::Wwn => "wwn",
            HintField::WwnWithExtension => "wwn_with_extension",
            HintField::WwnVendorExtension => "wwn_vendor_extension",
            HintField::Hctl => "hctl",
            HintField::Transport => "tran",
            HintField::Size => "size",
            HintField::Rotational => "rotational",
        }
    }

    fn from_key(key: &str) -> Option<HintField> {
        let field = match key {
            "name" | "deviceName" => HintField::Name,
            "by_path" | "byPath" => HintField::ByPath,
            "model" => HintField::Model,
            "vendor" => HintField::Vendor,
            "serial" | "serialNumber" => HintField::Serial,
            "wwn" => HintField::Wwn,
            "wwn_with_extension" | "wwnWithExtension" => HintField::WwnWithExtension,
            "wwn_vendor_extension" | "wwnVendorExtension" => HintField::WwnVendorExtension,
            "hctl" => HintField::Hctl,
            "tran" | "transport" => HintField::Transport,
            "size" => HintField::Size,
            "rotational" => HintField::Rotational,
            _ => return None,
        };
        Some(field)
    }

    fn kind(self) -> ValueKind {
        match self {
            HintField::Size => ValueKind::Number,
            _ => ValueKind::Text,
        }
    }
}

/// One hint's test.
#[derive(Debug, Clone, PartialEq)]
pub enum HintTest {
    /// An expression; for list-valued hints (`serial`, `wwn` given as a JSON list) any one
    /// expression may match.
    AnyOf(Vec<Expr>),
    Bool(bool),
}

/// Hints that must all match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HintSet {
    hints: Vec<(HintField, HintTest)>,
}

/// Hints that cannot be used.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum HintError {
    #[error("root-device hint {field}: {source}")]
    Expression {
        field: &'static str,
        #[source]
        source: ExprError,
    },
    #[error("unknown root-device hint {key:?}; valid hints are {valid}")]
    UnknownHint { key: String, valid: String },
    #[error("root-device hint {field} must be {expected}, got {got}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("root-device hints must be a JSON object: {0}")]
    NotAnObject(String),
}

impl HintSet {
    /// True when no hint is given.
    pub fn is_empty(&self) -> bool {
        self.hints.is_empty()
    }

    /// The hints of a BareMetalHost, mapped as BMO maps them for Ironic: `deviceName` is a
    /// by-path hint when it names `/dev/disk/by-path/…`, else a name hint; `model` and
    /// `vendor` match substrings; `minSizeGigabytes` is a lower bound (0 means none); the
    /// rest match exactly. A value that already starts with an operator is used as written.
    pub fn from_bmh(hints: &RootDeviceHints) -> Result<Self, HintError> {
        let mut set = HintSet::default();
        let mut text = |field: HintField, value: &Option<String>, default_op: &str| {
            let Some(value) = value else {
                return Ok(());
            };
            let expression = if expr_has_operator(value) {
                value.clone()
            } else {
                format!("{default_op} {value}")
            };
            set.push_expression(field, &expression)
        };
        if let Some(name) = &hints.device_name {
            let field = if name.starts_with("/dev/disk/by-path/") {
                HintField::ByPath
            } else {
                HintField::Name
            };
            text(field, &Some(name.clone()), "s==")?;
        }
        text(HintField::Hctl, &hints.hctl, "s==")?;
        text(HintField::Model, &hints.model, "<in>")?;
        text(HintField::Vendor, &hints.vendor, "<in>")?;
        text(HintField::Serial, &hints.serial_number, "s==")?;
        text(HintField::Wwn, &hints.wwn, "s==")?;
        text(
            HintField::WwnWithExtension,
            &hints.wwn_with_extension,
            "s==",
        )?;
        text(
            HintField::WwnVendorExtension,
            &hints.wwn_vendor_extension,
            "s==",
        )?;
        if let Some(gib) = hints.min_size_gigabytes.filter(|gib| *gib > 0) {
            set.push_expression(HintField::Size, &format!(">= {gib}"))?;
        }
        if let Some(rotational) = hints.rotational {
            set.hints
                .push((HintField::Rotational, HintTest::Bool(rotational)));
        }
        Ok(set)
    }

    /// Hints as JSON: a BareMetalHost `rootDeviceHints` object or Ironic's `root_device`
    /// dictionary (`{"size": ">= 100", "model": "<in> ACME", "serial": ["A", "B"]}`), keys in
    /// either spelling. `minSizeGigabytes` means "at least N GiB" as in BMO; `size` follows
    /// Ironic (a plain number means exactly N GiB).
    pub fn from_json(value: &Value) -> Result<Self, HintError> {
        let Value::Object(map) = value else {
            return Err(HintError::NotAnObject(value.to_string()));
        };
        let mut set = HintSet::default();
        for (key, value) in map {
            if key == "minSizeGigabytes" {
                match value.as_u64() {
                    Some(0) => continue,
                    Some(gib) => set.push_expression(HintField::Size, &format!(">= {gib}"))?,
                    None => {
                        return Err(HintError::WrongType {
                            field: "minSizeGigabytes",
                            expected: "a non-negative integer",
                            got: value.to_string(),
                        });
                    }
                }
                continue;
            }
            let field = HintField::from_key(key).ok_or_else(|| HintError::UnknownHint {
                key: key.clone(),
                valid: HintField::ALL
                    .iter()
                    .map(|f| f.ironic_name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            set.push_json(field, key, value)?;
        }
        set.hints.sort_by_key(|(field, _)| *field);
        Ok(set)
    }

    fn push_json(&mut self, field: HintField, key: &str, value: &Value) -> Result<(), HintError> {
        let wrong = |expected: &'static str| HintError::WrongType {
            field: field.ironic_name(),
            expected,
            got: value.to_string(),
        };
        match (field, value) {
            (HintField::Rotational, Value::Bool(b)) => {
                self.hints.push((field, HintTest::Bool(*b)));
                Ok(())
            }
            (HintField::Rotational, Value::String(s)) => {
                let b = parse_bool(s).ok_or_else(|| wrong("true or false"))?;
                self.hints.push((field, HintTest::Bool(b)));
                Ok(())
            }
            (HintField::Rotational, _) => Err(wrong("true or false")),
            (HintField::Size, Value::Number(n)) => self.push_expression(field, &n.to_string()),
            (_, Value::String(s)) => {
                let s = if field == HintField::Name && key == "deviceName" && !expr_has_operator(s)
                {
                    format!("s== {s}")
                } else {
                    s.clone()
                };
                self.push_expression(field, &s)
            }
            (HintField::Serial | HintField::Wwn, Value::Array(items)) => {
                let mut any = Vec::new();
                for item in items {
                    let text = item
                        .as_str()
                        .ok_or_else(|| wrong("a string or a list of strings"))?;
                    any.push(self.parse_for(field, text)?);
                }
                if any.is_empty() {
                    return Err(wrong("a non-empty list"));
                }
                self.hints.push((field, HintTest::AnyOf(any)));
                Ok(())
            }
            (HintField::Size, _) => Err(wrong("an integer number of GiB or an expression")),
            _ => Err(wrong("a string")),
        }
    }

    fn parse_for(&self, field: HintField, text: &str) -> Result<Expr, HintError> {
        let text = if field == HintField::Name {
            normalise_device_name(text)
        } else {
            text.to_owned()
        };
        expr::parse(&text, field.kind()).map_err(|source| HintError::Expression {
            field: field.ironic_name(),
            source,
        })
    }

    fn push_expression(&mut self, field: HintField, text: &str) -> Result<(), HintError> {
        let parsed = self.parse_for(field, text)?;
        self.hints.push((field, HintTest::AnyOf(vec![parsed])));
        Ok(())
    }

    /// Whether `disk` satisfies every hint.
    pub fn matches(&self, disk: &DiskInventory) -> bool {
        self.hints.iter().all(|(field, test)| match test {
            HintTest::Bool(expected) => {
                field_is_rotational(*field) && disk.storage.rotational == Some(*expected)
            }
            HintTest::AnyOf(exprs) => exprs.iter().any(|e| matches_field(*field, e, disk)),
        })
    }
}

fn field_is_rotational(field: HintField) -> bool {
    field == HintField::Rotational
}

fn matches_field(field: HintField, expr: &Expr, disk: &DiskInventory) -> bool {
    let storage = &disk.storage;
    let text =
        |value: Option<&str>| value.is_some_and(|v| !v.trim().is_empty() && expr.matches_text(v));
    match field {
        HintField::Name => {
            // A `/dev/disk/…` name is compared with the disk's stable names, anything else
            // with its kernel name.
            if expr_mentions_dev_disk(expr) {
                disk.names()
                    .filter(|name| name.starts_with("/dev/disk/"))
                    .any(|name| expr.matches_text(name))
            } else {
                expr.matches_text(&disk.kernel_name)
            }
        }
        HintField::ByPath => disk.by_path.iter().any(|name| expr.matches_text(name)),
        HintField::Model => text(storage.model.as_deref()),
        HintField::Vendor => text(storage.vendor.as_deref()),
        HintField::Serial => text(storage.serial_number.as_deref()),
        HintField::Wwn => text(storage.wwn.as_deref()),
        HintField::WwnWithExtension => text(storage.wwn_with_extension.as_deref()),
        HintField::WwnVendorExtension => text(storage.wwn_vendor_extension.as_deref()),
        HintField::Hctl => text(storage.hctl.as_deref()),
        HintField::Transport => {
            let transport = disk
                .transport
                .and_then(|t| serde_json::to_value(t).ok())
                .and_then(|v| v.as_str().map(str::to_owned));
            text(transport.as_deref())
        }
        HintField::Size => storage
            .size_bytes
            .is_some_and(|bytes| expr.matches_number(bytes as f64 / GIB)),
        HintField::Rotational => false,
    }
}

fn expr_mentions_dev_disk(expr: &Expr) -> bool {
    match expr {
        Expr::Text(_, value) | Expr::Contains(value) => value.starts_with("/dev/disk/"),
        Expr::AnyOf(values) => values.iter().any(|v| v.starts_with("/dev/disk/")),
        Expr::Number(..) => false,
    }
}

/// `sda` means `/dev/sda` (IPA adds the prefix the same way).
fn normalise_device_name(text: &str) -> String {
    let trimmed = text.trim();
    match expr::parse(trimmed, ValueKind::Text) {
        Ok(Expr::Text(op, value)) if !value.starts_with('/') => {
            Expr::Text(op, format!("/dev/{value}")).to_string()
        }
        Ok(Expr::AnyOf(values)) => Expr::AnyOf(
            values
                .into_iter()
                .map(|v| {
                    if v.starts_with('/') {
                        v
                    } else {
                        format!("/dev/{v}")
                    }
                })
                .collect(),
        )
        .to_string(),
        _ => trimmed.to_owned(),
    }
}

fn expr_has_operator(value: &str) -> bool {
    let value = value.trim_start();
    [
        "<in>",
        "<or>",
        "<all-in>",
        "<range-in>",
        "s==",
        "s!=",
        "s<",
        "s>",
        "==",
        "!=",
        ">=",
        "<=",
        ">",
        "<",
        "=",
    ]
    .iter()
    .any(|op| value.starts_with(op))
}

/// oslo's strict boolean spellings.
fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

impl fmt::Display for HintSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hints.is_empty() {
            return f.write_str("(no hints)");
        }
        for (i, (field, test)) in self.hints.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match test {
                HintTest::Bool(b) => write!(f, "{}: {b}", field.ironic_name())?,
                HintTest::AnyOf(exprs) => {
                    let rendered: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
                    write!(f, "{}: {}", field.ironic_name(), rendered.join(" | "))?;
                }
            }
        }
        Ok(())
    }
}

/// Why no disk was chosen.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum SelectError {
    #[error("no disk matches the root-device hints ({hints}); disks seen:\n{disks}")]
    NoMatch { hints: String, disks: String },
    #[error(
        "no writable disk of at least 4 GiB to choose without root-device hints; disks seen:\n{disks}"
    )]
    NoneLargeEnough { disks: String },
}

/// The disk the image goes to.
pub fn select_root_disk<'a>(
    disks: &'a [DiskInventory],
    hints: &HintSet,
) -> Result<&'a DiskInventory, SelectError> {
    let usable = |disk: &&DiskInventory| !disk.read_only && !disk.virtual_media;
    if hints.is_empty() {
        let mut candidates: Vec<&DiskInventory> = disks
            .iter()
            .filter(usable)
            .filter(|disk| disk.size_bytes() >= DEFAULT_MIN_BYTES)
            .collect();
        candidates.sort_by_key(|disk| (disk.size_bytes(), natural_key(&disk.kernel_name)));
        return candidates
            .first()
            .copied()
            .ok_or_else(|| SelectError::NoneLargeEnough {
                disks: describe_disks(disks, hints),
            });
    }
    disks
        .iter()
        .filter(usable)
        .find(|disk| hints.matches(disk))
        .ok_or_else(|| SelectError::NoMatch {
            hints: hints.to_string(),
            disks: describe_disks(disks, hints),
        })
}

/// One line per disk with what hints test, and why a matching one was still excluded.
pub fn describe_disks(disks: &[DiskInventory], hints: &HintSet) -> String {
    if disks.is_empty() {
        return "  (none: the kernel found no disks; are the storage drivers loaded?)".to_owned();
    }
    disks
        .iter()
        .map(|disk| {
            let s = &disk.storage;
            let mut line = format!(
                "  {} ({}): {:.1} GiB, model {}, vendor {}, serial {}, wwn {}, hctl {}, {}",
                disk.kernel_name,
                s.name.as_deref().unwrap_or("-"),
                disk.size_bytes() as f64 / GIB,
                s.model.as_deref().unwrap_or("-"),
                s.vendor.as_deref().unwrap_or("-"),
                s.serial_number.as_deref().unwrap_or("-"),
                s.wwn_with_extension.as_deref().unwrap_or("-"),
                s.hctl.as_deref().unwrap_or("-"),
                if s.rotational == Some(true) {
                    "rotational"
                } else {
                    "non-rotational"
                },
            );
            let matched = !hints.is_empty() && hints.matches(disk);
            if disk.read_only {
                line.push_str(if matched {
                    " [matches, but read-only]"
                } else {
                    " [read-only]"
                });
            }
            if disk.virtual_media {
                line.push_str(if matched {
                    " [matches, but virtual media]"
                } else {
                    " [virtual media]"
                });
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}
