//! pqcc-core's dm-verity arithmetic against the vectors in `../shared/data/dm-verity`
//! (cryptsetup's published verity-compat-test root hashes, and hash files made with
//! veritysetup 2.6.1) and `../shared/data/repro-tar` (the recipe's sample archive).

mod common;

use std::fs;

use pqcc_core::verity::{self, Geometry, HashType, Salt, Superblock, TreeBuilder};

const SALT32: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The whole hash device (superblock area + tree) and root hash of `data`, as
/// `veritysetup format` with data and hash block size `bs`.
fn format(
    data: &[u8],
    bs: u32,
    ty: HashType,
    salt: &Salt,
    uuid: Option<[u8; 16]>,
) -> (Vec<u8>, [u8; 32]) {
    let blocks = data.len() as u64 / u64::from(bs);
    let g = Geometry::new(blocks, bs, uuid.is_some()).unwrap();
    let mut out = vec![0u8; usize::try_from(g.hash_device_len()).unwrap()];
    if let Some(uuid) = uuid {
        Superblock {
            hash_type: ty,
            uuid,
            data_block_size: bs,
            hash_block_size: bs,
            data_blocks: blocks,
            salt: *salt,
        }
        .emit(&mut out)
        .unwrap();
    }
    let mut written = vec![false; out.len() / bs as usize];
    let mut emit = |off: u64, block: &[u8]| -> Result<(), verity::VerityError> {
        let o = usize::try_from(off).unwrap();
        assert!(
            !written[o / bs as usize],
            "hash block at {off} emitted twice"
        );
        written[o / bs as usize] = true;
        out[o..o + block.len()].copy_from_slice(block);
        Ok(())
    };
    let mut tb = Box::new(TreeBuilder::new(g, ty, *salt));
    for b in data.chunks_exact(bs as usize) {
        tb.push(&verity::hash_block(ty, salt.as_bytes(), b), &mut emit)
            .unwrap();
    }
    let root = tb.finish(&mut emit).unwrap();
    let skip = usize::try_from(g.tree_offset()).unwrap() / bs as usize;
    assert!(
        written[skip..].iter().all(|&w| w),
        "every tree block emitted once"
    );
    (out, root)
}

fn hex32(s: &str) -> [u8; 32] {
    verity::parse_root_hash(s.trim()).unwrap()
}

/// The root hash in a veritysetup `format` output file.
fn root_in(txt: &str) -> [u8; 32] {
    let line = txt
        .lines()
        .find(|l| l.starts_with("Root hash:"))
        .expect("Root hash line");
    hex32(line.split_whitespace().last().unwrap())
}

#[test]
fn cryptsetup_compat_vectors_8mib_zeros() {
    // cryptsetup tests/verity-compat-test (see dm-verity/README.md (1)).
    let data = vec![0u8; 8 << 20];
    let salt =
        Salt::from_hex("e48da609055204e89ae53b655ca2216dd983cf3cb829f34f63a297d106d53e2d").unwrap();
    let cases: [(u32, HashType, &Salt, &str); 5] = [
        (
            512,
            HashType::Normal,
            &salt,
            "9de18652fe74edfb9b805aaed72ae2aa48f94333f1ba5c452ac33b1c39325174",
        ),
        (
            1024,
            HashType::Normal,
            &salt,
            "54d92778750495d1f80832b486ebd007617d746271511bbf0e295e143da2b3df",
        ),
        (
            4096,
            HashType::Normal,
            &salt,
            "e522df0f97da4febb882ac40f30b37dc0b444bf6df418929463fa25280f09d5c",
        ),
        (
            4096,
            HashType::ChromeOs,
            &salt,
            "cbbf4ebd004ef65e29b935bb635a39cf754d677f3fa10b0126da725bbdf10f7d",
        ),
        (
            4096,
            HashType::Normal,
            &Salt::EMPTY,
            "ef29c902d87350f1da4bfa536e16cebc162a909bf89abe448b81ec500d4fb9bf",
        ),
    ];
    for (bs, ty, salt, want) in cases {
        let (_, root) = format(&data, bs, ty, salt, None);
        assert_eq!(hex::encode(root), want, "bs={bs} {ty:?} salt={salt:?}");
    }
    // (The two SHA-1 vectors of the same test do not apply: pqcc uses SHA-256 only.)
}

#[test]
fn veritysetup_generated_hash_files() {
    let d = common::shared_data().join("dm-verity");
    let data = fs::read(d.join("data_1MiB_mod251.img")).unwrap();
    let salt = Salt::from_hex(SALT32).unwrap();
    let cases = [
        (
            "hash_nosb.img",
            "format_nosb.txt",
            HashType::Normal,
            salt,
            None,
        ),
        (
            "hash_nosalt_nosb.img",
            "format_nosalt_nosb.txt",
            HashType::Normal,
            Salt::EMPTY,
            None,
        ),
        (
            "hash_v0_nosb.img",
            "format_v0_nosb.txt",
            HashType::ChromeOs,
            salt,
            None,
        ),
        (
            "hash_sb.img",
            "format_sb.txt",
            HashType::Normal,
            salt,
            Some(verity::parse_uuid("11111111-2222-3333-4444-555555555555").unwrap()),
        ),
    ];
    for (hash, txt, ty, salt, uuid) in cases {
        let want = fs::read(d.join(hash)).unwrap();
        let (got, root) = format(&data, 4096, ty, &salt, uuid);
        assert_eq!(
            root,
            root_in(&fs::read_to_string(d.join(txt)).unwrap()),
            "{hash}: root hash"
        );
        assert!(got == want, "{hash}: hash file bytes differ");
    }
    // 769 blocks: the last leaf-level block is partly filled.
    let data = fs::read(d.join("data_769blk_mod251.img")).unwrap();
    let want = fs::read(d.join("hash_769blk_nosb.img")).unwrap();
    let (got, root) = format(&data, 4096, HashType::Normal, &salt, None);
    assert_eq!(
        root,
        root_in(&fs::read_to_string(d.join("format_769blk_nosb.txt")).unwrap())
    );
    assert!(got == want, "769-block hash file bytes differ");
    // The superblock parses back to what veritysetup wrote.
    let sb = Superblock::parse(&fs::read(d.join("hash_sb.img")).unwrap()).unwrap();
    assert_eq!(
        (sb.data_blocks, sb.hash_type, sb.salt),
        (256, HashType::Normal, salt)
    );
}

#[test]
fn recipe_sample_archive() {
    let d = common::shared_data().join("repro-tar");
    let tar = fs::read(d.join("sample.tar")).unwrap();
    let (got, root) = format(
        &tar,
        4096,
        HashType::Normal,
        &Salt::from_hex(pqcc_tools::model::DEFAULT_SALT).unwrap(),
        Some(verity::parse_uuid(pqcc_tools::model::DEFAULT_UUID).unwrap()),
    );
    assert_eq!(
        root,
        hex32(&fs::read_to_string(d.join("sample.tar.hash")).unwrap())
    );
    assert!(
        got == fs::read(d.join("sample.tar.verity")).unwrap(),
        "sample.tar.verity differs"
    );
}
