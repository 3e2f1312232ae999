//! A small ISO 9660 writer (ECMA-119) with Joliet names, for config drives: one volume, a
//! directory tree of a few files, nothing else. Linux, cloud-init and cloudbase-init read the
//! Joliet tree, which keeps lower-case names like `meta_data.json`; the primary tree carries
//! the same files under upper-case ISO names for readers without Joliet.

use std::collections::BTreeMap;

const SECTOR: usize = 2048;
/// Sectors 0–15 are the system area.
const FIRST_DESCRIPTOR: usize = 16;

/// A file tree: paths with `/` separators → contents. Directories are implied.
pub type Tree = BTreeMap<String, Vec<u8>>;

/// A directory of the tree being laid out, in an arena ordered breadth-first (the order
/// path tables require): index 0 is the root.
#[derive(Debug, Default)]
struct Dir {
    name: String,
    /// Index of the parent (the root is its own parent).
    parent: usize,
    /// Child directories by name → arena index.
    dirs: BTreeMap<String, usize>,
    /// Files by name → index into the data list.
    files: BTreeMap<String, usize>,
    /// Assigned during layout: (extent, size in bytes) in each tree.
    primary: (u32, u32),
    joliet: (u32, u32),
}

/// Builds the image. `volume_id` goes into both volume descriptors; `unix_time` stamps
/// every date (a fixed value makes the image reproducible).
pub fn build(tree: &Tree, volume_id: &str, unix_time: i64) -> Vec<u8> {
    // Nested maps first, then an arena in breadth-first order.
    #[derive(Default)]
    struct Nested<'a> {
        dirs: BTreeMap<String, Nested<'a>>,
        files: BTreeMap<String, &'a [u8]>,
    }
    let mut nested = Nested::default();
    for (path, contents) in tree {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((file, dirs)) = parts.split_last() else {
            continue;
        };
        let mut dir = &mut nested;
        for part in dirs {
            dir = dir.dirs.entry((*part).to_owned()).or_default();
        }
        dir.files.insert((*file).to_owned(), contents);
    }
    let mut arena: Vec<Dir> = Vec::new();
    let mut data: Vec<&[u8]> = Vec::new();
    let mut queue: Vec<(String, usize, &Nested<'_>)> = vec![(String::new(), 0, &nested)];
    let mut head = 0;
    while head < queue.len() {
        let (name, parent, node) = (queue[head].0.clone(), queue[head].1, queue[head].2);
        let index = arena.len();
        let mut dir = Dir {
            name,
            parent,
            ..Dir::default()
        };
        for (file, contents) in &node.files {
            dir.files.insert(file.clone(), data.len());
            data.push(contents);
        }
        for (child_name, child) in &node.dirs {
            dir.dirs.insert(child_name.clone(), queue.len());
            queue.push((child_name.clone(), index, child));
        }
        arena.push(dir);
        head += 1;
    }
    let date = Date::from_unix(unix_time);

    // Sizes first, then positions: descriptors, path tables, directories, file data.
    let primary_pt = path_table(&arena, Names::Primary, Endian::Little);
    let joliet_pt = path_table(&arena, Names::Joliet, Endian::Little);
    let pt_sectors = |table: &[u8]| table.len().div_ceil(SECTOR).max(1);
    let mut next = FIRST_DESCRIPTOR + 3;
    let primary_l = next;
    next += pt_sectors(&primary_pt);
    let primary_m = next;
    next += pt_sectors(&primary_pt);
    let joliet_l = next;
    next += pt_sectors(&joliet_pt);
    let joliet_m = next;
    next += pt_sectors(&joliet_pt);
    for names in [Names::Primary, Names::Joliet] {
        for index in 0..arena.len() {
            let size = dir_size(&arena, index, names);
            let slot = (next as u32, size as u32);
            match names {
                Names::Primary => arena[index].primary = slot,
                Names::Joliet => arena[index].joliet = slot,
            }
            next += size / SECTOR;
        }
    }
    let mut data_extents = Vec::with_capacity(data.len());
    for contents in &data {
        data_extents.push(next as u32);
        next += contents.len().div_ceil(SECTOR);
    }
    let total_sectors = next;

    let mut image = vec![0u8; total_sectors * SECTOR];
    let mut write = |sector: usize, bytes: &[u8]| {
        image[sector * SECTOR..sector * SECTOR + bytes.len()].copy_from_slice(bytes);
    };
    write(
        FIRST_DESCRIPTOR,
        &volume_descriptor(
            Names::Primary,
            volume_id,
            total_sectors,
            primary_pt.len(),
            (primary_l, primary_m),
            arena[0].primary,
            &date,
        ),
    );
    write(
        FIRST_DESCRIPTOR + 1,
        &volume_descriptor(
            Names::Joliet,
            volume_id,
            total_sectors,
            joliet_pt.len(),
            (joliet_l, joliet_m),
            arena[0].joliet,
            &date,
        ),
    );
    let mut terminator = vec![0u8; 7];
    terminator[0] = 255;
    terminator[1..6].copy_from_slice(b"CD001");
    terminator[6] = 1;
    write(FIRST_DESCRIPTOR + 2, &terminator);
    write(primary_l, &primary_pt);
    write(primary_m, &path_table(&arena, Names::Primary, Endian::Big));
    write(joliet_l, &joliet_pt);
    write(joliet_m, &path_table(&arena, Names::Joliet, Endian::Big));
    for names in [Names::Primary, Names::Joliet] {
        for index in 0..arena.len() {
            let (sector, _) = extent(&arena[index], names);
            let records = dir_records(&arena, index, names, &data, &data_extents, &date);
            write(sector as usize, &records);
        }
    }
    for (contents, sector) in data.iter().zip(&data_extents) {
        write(*sector as usize, contents);
    }
    image
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    Primary,
    Joliet,
}

#[derive(Debug, Clone, Copy)]
enum Endian {
    Little,
    Big,
}

fn extent(dir: &Dir, names: Names) -> (u32, u32) {
    match names {
        Names::Primary => dir.primary,
        Names::Joliet => dir.joliet,
    }
}

/// A name as the tree spells it: ISO d-characters (upper case, digits, `_`, one dot, 30
/// characters) for the primary tree, UCS-2 big-endian (64 characters) for Joliet.
fn identifier(name: &str, names: Names, file: bool) -> Vec<u8> {
    match names {
        Names::Primary => {
            let upper: String = name
                .chars()
                .map(|c| match c.to_ascii_uppercase() {
                    c @ ('A'..='Z' | '0'..='9' | '_' | '.') => c,
                    _ => '_',
                })
                .collect();
            let (stem, ext) = match upper.rsplit_once('.') {
                Some((stem, ext)) if file => (stem.replace('.', "_"), ext.to_owned()),
                _ => (upper.replace('.', "_"), String::new()),
            };
            let mut text: String = stem.chars().take(30 - ext.len().min(8) - 1).collect();
            if file {
                text.push('.');
                text.push_str(&ext.chars().take(8).collect::<String>());
                text.push_str(";1");
            }
            text.into_bytes()
        }
        Names::Joliet => {
            let mut text: Vec<u16> = name.encode_utf16().take(64).collect();
            if file {
                text.extend(";1".encode_utf16());
            }
            text.iter().flat_map(|u| u.to_be_bytes()).collect()
        }
    }
}

fn record(id: &[u8], extent: u32, size: u32, directory: bool, date: &Date) -> Vec<u8> {
    let mut len = 33 + id.len();
    if len % 2 == 1 {
        len += 1;
    }
    let mut r = vec![0u8; len];
    r[0] = len as u8;
    both32(&mut r[2..10], extent);
    both32(&mut r[10..18], size);
    r[18..25].copy_from_slice(&date.short());
    r[25] = if directory { 0x02 } else { 0 };
    both16(&mut r[28..32], 1);
    r[32] = id.len() as u8;
    r[33..33 + id.len()].copy_from_slice(id);
    r
}

/// The records of a directory, packed into sectors (a record never spans two).
fn dir_records(
    arena: &[Dir],
    index: usize,
    names: Names,
    data: &[&[u8]],
    data_extents: &[u32],
    date: &Date,
) -> Vec<u8> {
    let dir = &arena[index];
    let (own, own_size) = extent(dir, names);
    let (up, up_size) = extent(&arena[dir.parent], names);
    let mut records = vec![
        record(&[0], own, own_size, true, date),
        record(&[1], up, up_size, true, date),
    ];
    // Entries are sorted by identifier, as the standard asks.
    let mut children: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (name, child) in &dir.dirs {
        let id = identifier(name, names, false);
        let (sector, size) = extent(&arena[*child], names);
        children.push((id.clone(), record(&id, sector, size, true, date)));
    }
    for (name, file) in &dir.files {
        let id = identifier(name, names, true);
        let size = data[*file].len() as u32;
        children.push((
            id.clone(),
            record(&id, data_extents[*file], size, false, date),
        ));
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    records.extend(children.into_iter().map(|(_, r)| r));
    pack(&records)
}

fn pack(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut used = 0;
    for r in records {
        if used + r.len() > SECTOR {
            out.resize(out.len() + SECTOR - used, 0);
            used = 0;
        }
        out.extend_from_slice(r);
        used += r.len();
    }
    out.resize(out.len().div_ceil(SECTOR).max(1) * SECTOR, 0);
    out
}

fn dir_size(arena: &[Dir], index: usize, names: Names) -> usize {
    // Record sizes depend on names only, not on where things are.
    let files = arena[index].files.values().max().map_or(0, |m| m + 1);
    let fake_data: Vec<&[u8]> = vec![&[]; files];
    let extents = vec![0u32; files];
    dir_records(
        arena,
        index,
        names,
        &fake_data,
        &extents,
        &Date::from_unix(0),
    )
    .len()
}

fn path_table(arena: &[Dir], names: Names, endian: Endian) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, dir) in arena.iter().enumerate() {
        let id = if index == 0 {
            vec![0u8]
        } else {
            identifier(&dir.name, names, false)
        };
        let (sector, _) = extent(dir, names);
        // Directory numbers in the path table are 1-based.
        let parent_number = dir.parent as u16 + 1;
        out.push(id.len() as u8);
        out.push(0);
        match endian {
            Endian::Little => {
                out.extend_from_slice(&sector.to_le_bytes());
                out.extend_from_slice(&parent_number.to_le_bytes());
            }
            Endian::Big => {
                out.extend_from_slice(&sector.to_be_bytes());
                out.extend_from_slice(&parent_number.to_be_bytes());
            }
        }
        out.extend_from_slice(&id);
        if id.len() % 2 == 1 {
            out.push(0);
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn volume_descriptor(
    names: Names,
    volume_id: &str,
    total_sectors: usize,
    path_table_size: usize,
    (l_table, m_table): (usize, usize),
    (root_extent, root_size): (u32, u32),
    date: &Date,
) -> Vec<u8> {
    let mut d = vec![0u8; SECTOR];
    d[0] = if names == Names::Primary { 1 } else { 2 };
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    let text = |field: &mut [u8], value: &str| match names {
        Names::Primary => {
            field.fill(b' ');
            let bytes = value.as_bytes();
            let n = bytes.len().min(field.len());
            field[..n].copy_from_slice(&bytes[..n]);
        }
        Names::Joliet => {
            for pair in field.chunks_exact_mut(2) {
                pair.copy_from_slice(&[0x00, 0x20]);
            }
            for (i, unit) in value.encode_utf16().take(field.len() / 2).enumerate() {
                field[i * 2..i * 2 + 2].copy_from_slice(&unit.to_be_bytes());
            }
        }
    };
    text(&mut d[8..40], "LINUX");
    text(&mut d[40..72], volume_id);
    both32(&mut d[80..88], total_sectors as u32);
    if names == Names::Joliet {
        // UCS-2 level 3.
        d[88..91].copy_from_slice(b"%/E");
    }
    both16(&mut d[120..124], 1);
    both16(&mut d[124..128], 1);
    both16(&mut d[128..132], SECTOR as u16);
    both32(&mut d[132..140], path_table_size as u32);
    d[140..144].copy_from_slice(&(l_table as u32).to_le_bytes());
    d[148..152].copy_from_slice(&(m_table as u32).to_be_bytes());
    let root = record(&[0], root_extent, root_size, true, date);
    d[156..156 + 34].copy_from_slice(&root);
    text(&mut d[190..318], "");
    text(&mut d[318..446], "");
    text(&mut d[446..574], "");
    text(&mut d[574..702], "RIVET");
    text(&mut d[702..739], "");
    text(&mut d[739..776], "");
    text(&mut d[776..813], "");
    d[813..830].copy_from_slice(&date.long());
    d[830..847].copy_from_slice(&date.long());
    d[847..863].copy_from_slice(b"0000000000000000");
    d[864..880].copy_from_slice(b"0000000000000000");
    d[881] = 1;
    d
}

fn both16(field: &mut [u8], value: u16) {
    field[..2].copy_from_slice(&value.to_le_bytes());
    field[2..4].copy_from_slice(&value.to_be_bytes());
}

fn both32(field: &mut [u8], value: u32) {
    field[..4].copy_from_slice(&value.to_le_bytes());
    field[4..8].copy_from_slice(&value.to_be_bytes());
}

/// A UTC date.
#[derive(Debug, Clone, Copy)]
struct Date {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Date {
    fn from_unix(seconds: i64) -> Self {
        let (year, month, day, hour, minute, second) = super::civil_from_unix(seconds);
        Self {
            year,
            month,
            day,
            hour,
            minute,
            second,
        }
    }

    /// The 7-byte form of directory records (years since 1900, UTC offset 0).
    fn short(&self) -> [u8; 7] {
        [
            (self.year - 1900).clamp(0, 255) as u8,
            self.month as u8,
            self.day as u8,
            self.hour as u8,
            self.minute as u8,
            self.second as u8,
            0,
        ]
    }

    /// The 17-byte form of volume descriptors.
    fn long(&self) -> [u8; 17] {
        let text = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}00",
            self.year.clamp(0, 9999),
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second
        );
        let mut out = [0u8; 17];
        out[..16].copy_from_slice(&text.as_bytes()[..16]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert_from_unix_time() {
        let d = Date::from_unix(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!(
            (d.year, d.month, d.day, d.hour, d.minute, d.second),
            (2023, 11, 14, 22, 13, 20)
        );
        assert_eq!(&Date::from_unix(0).long()[..14], b"19700101000000");
        assert_eq!(Date::from_unix(951_782_400).short()[..3], [100, 2, 29]); // 2000-02-29
    }

    #[test]
    fn primary_names_are_d_characters() {
        assert_eq!(
            identifier("meta_data.json", Names::Primary, true),
            b"META_DATA.JSON;1"
        );
        assert_eq!(
            identifier("user_data", Names::Primary, true),
            b"USER_DATA.;1"
        );
        assert_eq!(
            identifier("2012-08-10", Names::Primary, false),
            b"2012_08_10"
        );
        let joliet = identifier("Ab", Names::Joliet, false);
        assert_eq!(joliet, vec![0, b'A', 0, b'b']);
    }

    #[test]
    fn lays_out_descriptors_tables_directories_and_data() {
        let mut tree = Tree::new();
        tree.insert("openstack/latest/meta_data.json".into(), b"{}".to_vec());
        tree.insert("openstack/latest/user_data".into(), vec![b'x'; 5000]);
        let image = build(&tree, "config-2", 0);
        assert_eq!(image.len() % SECTOR, 0);
        assert_eq!(&image[16 * SECTOR + 1..16 * SECTOR + 6], b"CD001");
        assert_eq!(image[16 * SECTOR], 1);
        assert_eq!(image[17 * SECTOR], 2);
        assert_eq!(image[18 * SECTOR], 255);
        assert_eq!(&image[16 * SECTOR + 40..16 * SECTOR + 48], b"config-2");
        let total = u32::from_le_bytes(
            image[16 * SECTOR + 80..16 * SECTOR + 84]
                .try_into()
                .unwrap_or_default(),
        );
        assert_eq!(total as usize * SECTOR, image.len());
    }
}
