//! How much disk a kept tree takes: allocated blocks, each inode counted once, symlinks not
//! followed. Unreadable directories count as empty.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub fn disk_usage(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_links_count_once() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        std::fs::write(&a, vec![1u8; 64 * 1024]).unwrap();
        let one = disk_usage(tmp.path());
        std::fs::hard_link(&a, tmp.path().join("b")).unwrap();
        assert_eq!(disk_usage(tmp.path()), one);
        assert!(one >= 64 * 1024);
    }
}
