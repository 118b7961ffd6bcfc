//! Files a flake's `.nix` files name by relative path (`./build.sh`, `builtins.path { path =
//! ./pkgs/bash; }`, `./rust-toolchain.toml`): they shape the dev environment as much as the
//! `.nix` files do. A named directory counts when it is small (tool wrappers, patches, a
//! vendored binary); a large one is a source tree, which dev shells rarely depend on, and
//! counting it would re-evaluate on every edit of the project. The flake's own directory
//! (`./.`) and its parents are never counted, for the same reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::util::lexical_normal;

/// A named directory with more files than this is taken as a source tree, not an input.
pub const MAX_FILES_IN_A_NAMED_DIR: usize = 256;

/// The relative path literals in Nix source `text` (`./x`, `../x/y`), without interpolated
/// ones (`./x/${y}`), which cannot be resolved without evaluating.
pub fn path_literals(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let is_path_char = |b: u8| b.is_ascii_alphanumeric() || b"._-+/".contains(&b);
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_start = i == 0 || !is_path_char(bytes[i - 1]);
        let rest = &bytes[i..];
        if !(at_start && (rest.starts_with(b"./") || rest.starts_with(b"../"))) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < bytes.len() && is_path_char(bytes[j]) {
            j += 1;
        }
        if !bytes[j..].starts_with(b"${") {
            out.push(text[i..j].trim_end_matches('/'));
        }
        i = j;
    }
    out
}

/// The paths the `.nix` files in `nix_files` name, resolved; never `root` (the flake's
/// directory) or a directory above it.
pub fn named_paths(nix_files: &[PathBuf], root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for file in nix_files {
        let (Some(dir), Ok(text)) = (file.parent(), std::fs::read_to_string(file)) else {
            continue;
        };
        for lit in path_literals(&text) {
            // Resolved by name, as nix resolves path literals (no symlinks followed).
            let named = lexical_normal(&dir.join(lit));
            if !root.starts_with(&named) {
                out.insert(named);
            }
        }
    }
    out
}

/// The files to count as inputs for the `named` paths: `candidates` are the files nix can see
/// (git-tracked ones in a repository); a named directory brings the candidates below it
/// unless there are more than `MAX_FILES_IN_A_NAMED_DIR`.
pub fn inputs_named(
    named: &BTreeSet<PathBuf>,
    candidates: &BTreeSet<PathBuf>,
) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for path in named {
        if candidates.contains(path) {
            out.insert(path.clone());
            continue;
        }
        let below: Vec<&PathBuf> = candidates
            .range(path.clone()..)
            .take_while(|c| c.starts_with(path))
            .take(MAX_FILES_IN_A_NAMED_DIR + 1)
            .collect();
        if below.len() <= MAX_FILES_IN_A_NAMED_DIR {
            out.extend(below.into_iter().cloned());
        } else {
            tracing::debug!(dir = %path.display(), "a large directory: not an input");
        }
    }
    out
}

/// Outside git, the files that exist at the `named` paths, as candidates for `inputs_named`:
/// a directory is listed up to one file past the limit (enough to tell it is too large).
pub fn existing_below(named: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if out.len() > MAX_FILES_IN_A_NAMED_DIR {
                return;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path(), out),
                Ok(_) => out.push(e.path()),
                Err(_) => {}
            }
        }
    }
    let mut out = BTreeSet::new();
    for path in named {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let mut found = Vec::new();
                walk(path, &mut found);
                out.extend(found);
            }
            Ok(_) => {
                out.insert(path.clone());
            }
            Err(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_literals_are_found_where_nix_would_read_them() {
        let src = r#"{ builder = "${./pkgs/bash}/bin/bash"; args = [ ./build.sh ];
            src=./.; up = ../shared/lib.nix; x = ./gen/${name}; url = "https://a/./b";
            # ./in-a-comment.txt
            cfg = builtins.readFile ./rust-toolchain.toml; dir = ./pkgs/; }"#;
        assert_eq!(
            path_literals(src),
            vec![
                "./pkgs/bash",
                "./build.sh",
                "./.",
                "../shared/lib.nix",
                "./in-a-comment.txt",
                "./rust-toolchain.toml",
                "./pkgs",
            ]
        );
    }

    #[test]
    fn named_files_and_small_directories_count_but_the_flake_and_source_trees_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let nix_file = base.join("flake.nix");
        std::fs::write(
            &nix_file,
            "{ a = ./build.sh; b = ./pkgs; c = ./.; d = ./src; e = ./untracked; f = ../.; }",
        )
        .unwrap();
        let mut candidates: BTreeSet<PathBuf> = [
            base.join("flake.nix"),
            base.join("build.sh"),
            base.join("pkgs/bash/bin/bash"),
            base.join("pkgs/busybox/bin/busybox"),
        ]
        .into_iter()
        .collect();
        for i in 0..=MAX_FILES_IN_A_NAMED_DIR {
            candidates.insert(base.join(format!("src/f{i}.rs")));
        }
        let named = named_paths(&[nix_file], base);
        assert!(!named.contains(base) && !named.iter().any(|n| base.starts_with(n)));
        let found = inputs_named(&named, &candidates);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            vec![
                base.join("build.sh"),
                base.join("pkgs/bash/bin/bash"),
                base.join("pkgs/busybox/bin/busybox"),
            ]
        );
    }

    #[test]
    fn outside_git_the_named_files_that_exist_are_the_candidates() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        std::fs::create_dir_all(base.join("pkgs/bin")).unwrap();
        std::fs::write(base.join("pkgs/bin/tool"), "x").unwrap();
        std::fs::write(base.join("build.sh"), "x").unwrap();
        let named: BTreeSet<PathBuf> =
            [base.join("pkgs"), base.join("build.sh"), base.join("gone")]
                .into_iter()
                .collect();
        let found = existing_below(&named);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            vec![base.join("build.sh"), base.join("pkgs/bin/tool")]
        );
    }
}
