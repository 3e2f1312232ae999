//! Test images made by the real tool: qemu-img and qemu-io write every qcow2 variant the
//! pipeline must read, and `qemu-img convert -O raw` gives the reference bytes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rivet_tests::require_tool;

/// A generated image and what it exercises.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) name: &'static str,
    pub(crate) path: PathBuf,
}

/// Runs a command and fails the test with its output if it fails.
pub(crate) fn run(command: &mut Command) -> Vec<u8> {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{:?} failed: {}{}",
        command.get_program(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

pub(crate) fn qemu_img(args: &[&str]) {
    run(Command::new(require_tool("qemu-img")).args(args));
}

pub(crate) fn qemu_io(image: &Path, commands: &[String]) {
    let mut command = Command::new(require_tool("qemu-io"));
    command.args(["-f", "qcow2"]);
    for c in commands {
        command.args(["-c", c]);
    }
    command.arg(image);
    run(&mut command);
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A raw disk of `mib` MiB in 64 KiB blocks: random, compressible text and zeros mixed, like
/// a real filesystem image.
pub(crate) fn mixed_raw(path: &Path, mib: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut data = vec![0u8; mib << 20];
    let text = b"Rivet streams images straight to disk; qcow2 clusters land at guest offsets. ";
    for (index, block) in data.chunks_mut(64 << 10).enumerate() {
        match rng.below(5) {
            0 | 1 => rng.fill(block),
            2 => {
                for (i, byte) in block.iter_mut().enumerate() {
                    *byte = text[(i + index) % text.len()];
                }
            }
            3 => {
                // partly used block: data in one 4 KiB piece only
                let at = (rng.below(16) as usize) * 4096;
                rng.fill(&mut block[at..at + 4096]);
            }
            _ => {}
        }
    }
    std::fs::write(path, data).unwrap();
}

/// `qemu-img convert -O raw` of `image`: the reference output.
pub(crate) fn reference_raw(image: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!(
        "{}.ref.raw",
        image.file_name().unwrap().to_string_lossy()
    ));
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        image.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// `qemu-img convert -f raw -O qcow2 <extra…> base <dir>/<name>.qcow2`.
pub(crate) fn convert(dir: &Path, base: &Path, name: &'static str, extra: &[&str]) -> Image {
    let path = dir.join(format!("{name}.qcow2"));
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(extra);
    args.push(base.to_str().unwrap());
    args.push(path.to_str().unwrap());
    qemu_img(&args);
    Image { name, path }
}

fn create(dir: &Path, name: &'static str, size: &str, options: &str) -> Image {
    let path = dir.join(format!("{name}.qcow2"));
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !options.is_empty() {
        args.extend(["-o", options]);
    }
    args.extend([path.to_str().unwrap(), size]);
    qemu_img(&args);
    Image { name, path }
}

/// Writes, discards and rewrites in random order, as a running VM would: data lands in host
/// clusters far from its guest neighbours, freed clusters are reused, some ranges become zero
/// clusters and some clusters are written compressed.
fn vm_writes(image: &Path, dir: &Path, virtual_mib: u64, cluster: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    let source = dir.join(format!("vm-source-{seed}.bin"));
    let mut random = vec![0u8; 256 << 10];
    rng.fill(&mut random);
    std::fs::write(&source, &random).unwrap();
    let size = virtual_mib << 20;
    let mut commands = Vec::new();
    let unit = 4096u64;
    for round in 0..3 {
        for _ in 0..40 {
            let len = unit * (1 + rng.below(48));
            let off = rng.below((size - len) / unit) * unit;
            if rng.below(3) == 0 {
                commands.push(format!("write -q -s {} {off} {len}", source.display()));
            } else {
                commands.push(format!("write -q -P {} {off} {len}", 1 + rng.below(250)));
            }
        }
        for _ in 0..6 {
            let len = cluster * (1 + rng.below(8));
            let off = rng.below((size - len) / cluster) * cluster;
            commands.push(format!("discard -q {off} {len}"));
        }
        for _ in 0..4 {
            let len = cluster * (1 + rng.below(4));
            let off = rng.below((size - len) / cluster) * cluster;
            let flag = if round % 2 == 0 { "-z" } else { "-z -u" };
            commands.push(format!("write -q {flag} {off} {len}"));
        }
        for _ in 0..4 {
            let off = rng.below(size / cluster) * cluster;
            // QEMU writes compressed clusters only where nothing is allocated yet.
            commands.push(format!("discard -q {off} {cluster}"));
            commands.push(format!(
                "write -q -c -P {} {off} {cluster}",
                1 + rng.below(250)
            ));
        }
    }
    qemu_io(image, &commands);
}

/// Every qcow2 variant the pipeline must write byte-identically to `qemu-img convert -O raw`.
pub(crate) fn corpus(dir: &Path) -> Vec<Image> {
    corpus_of(dir, &[])
}

/// The named variants only (all of them when `names` is empty).
pub(crate) fn corpus_of(dir: &Path, names: &[&str]) -> Vec<Image> {
    let wanted = |name: &str| names.is_empty() || names.contains(&name);
    let base = dir.join("base.raw");
    mixed_raw(&base, 24, 7);
    let small = dir.join("small.raw");
    mixed_raw(&small, 4, 11);

    let converted: [(&'static str, &Path, &[&str]); 14] = [
        ("plain-64k", &base, &[]),
        ("cluster-512", &small, &["-o", "cluster_size=512"]),
        ("cluster-4k", &base, &["-o", "cluster_size=4096"]),
        ("cluster-2m", &base, &["-o", "cluster_size=2M"]),
        ("zlib", &base, &["-c"]),
        ("zstd", &base, &["-c", "-o", "compression_type=zstd"]),
        ("zlib-512", &small, &["-c", "-o", "cluster_size=512"]),
        (
            "zstd-2m",
            &base,
            &["-c", "-o", "compression_type=zstd,cluster_size=2M"],
        ),
        ("out-of-order", &base, &["-W", "-m", "16"]),
        (
            "out-of-order-zstd",
            &base,
            &["-W", "-m", "16", "-c", "-o", "compression_type=zstd"],
        ),
        (
            "prealloc-metadata",
            &base,
            &["-o", "preallocation=metadata"],
        ),
        ("extended-l2", &base, &["-o", "extended_l2=on"]),
        ("extended-l2-zlib", &base, &["-c", "-o", "extended_l2=on"]),
        ("v2", &base, &["-o", "compat=0.10"]),
    ];
    let mut images: Vec<Image> = converted
        .into_iter()
        .filter(|(name, _, _)| wanted(name))
        .map(|(name, source, options)| convert(dir, source, name, options))
        .collect();
    if wanted("empty") {
        images.push(create(dir, "empty", "16M", ""));
    }
    let vm_written: [(&'static str, &str, &str, u64, u64, u64); 3] = [
        ("vm-written", "32M", "", 32, 65536, 21),
        (
            "vm-written-extl2",
            "32M",
            "extended_l2=on,cluster_size=64k",
            32,
            65536,
            22,
        ),
        (
            "vm-written-4k-zstd",
            "16M",
            "cluster_size=4096,compression_type=zstd",
            16,
            4096,
            23,
        ),
    ];
    for (name, size, options, mib, cluster, seed) in vm_written {
        if wanted(name) {
            let image = create(dir, name, size, options);
            vm_writes(&image.path, dir, mib, cluster, seed);
            images.push(image);
        }
    }
    if wanted("resized") {
        images.push(resized(dir));
    }
    if wanted("odd-size") {
        images.push(odd_size(dir));
    }
    if wanted("zero-clusters") {
        images.push(zero_clusters(dir, &base));
    }
    images
}

/// Growing past what the L1 table covers moves it to the end of the file.
fn resized(dir: &Path) -> Image {
    let resized = create(dir, "resized", "12M", "cluster_size=4096");
    vm_writes(&resized.path, dir, 12, 4096, 24);
    qemu_img(&[
        "resize",
        "-q",
        "-f",
        "qcow2",
        resized.path.to_str().unwrap(),
        "40M",
    ]);
    qemu_io(
        &resized.path,
        &[
            "write -q -P 99 38M 64k".into(),
            "write -q -P 98 13M 8k".into(),
        ],
    );
    resized
}

/// A virtual size that is not a multiple of the cluster size, with data in the last cluster.
fn odd_size(dir: &Path) -> Image {
    let odd = create(dir, "odd-size", "10485760", "cluster_size=65536");
    qemu_img(&[
        "resize",
        "-q",
        "-f",
        "qcow2",
        odd.path.to_str().unwrap(),
        "10498560",
    ]);
    qemu_io(
        &odd.path,
        &[
            "write -q -P 7 10420224 78336".into(),
            "write -q -P 8 0 4096".into(),
        ],
    );
    odd
}

fn zero_clusters(dir: &Path, base: &Path) -> Image {
    let zeros = convert(dir, base, "zero-clusters", &[]);
    qemu_io(
        &zeros.path,
        &[
            "write -q -z 1M 1M".into(),
            "write -q -z -u 4M 512k".into(),
            "discard -q 8M 1M".into(),
        ],
    );
    zeros
}
