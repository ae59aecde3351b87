//! Walking a dataset: a directory tree (or one file) becomes a sorted list of paths.
//!
//! Symlinks are recorded as links and never followed; names are raw bytes (non-UTF-8 is fine);
//! sockets, FIFOs and devices are skipped with a warning; anything unreadable is reported by
//! path.

use std::{
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

/// What the walk found at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkKind {
    /// A regular file of `size` bytes.
    File {
        /// Size when walked.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symlink, not followed.
    Symlink {
        /// Its target.
        target: Vec<u8>,
    },
}

/// One path found by the walk.
#[derive(Debug, Clone)]
pub struct WalkEntry {
    /// Path relative to the dataset root, `/`-separated bytes.
    pub rel: Vec<u8>,
    /// Where it is on disk.
    pub abs: PathBuf,
    /// Unix mode bits.
    pub mode: u32,
    /// Modification time in ns since the epoch.
    pub mtime_ns: i64,
    /// What it is.
    pub kind: WalkKind,
}

/// A path the walk could not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkIssue {
    /// Where.
    pub path: PathBuf,
    /// Why, for a person.
    pub reason: String,
}

/// The result of walking a dataset.
#[derive(Debug, Default)]
pub struct Walk {
    /// Paths sorted by their bytes (parents before children).
    pub entries: Vec<WalkEntry>,
    /// Paths that could not be read (their subtree is missing from `entries`).
    pub unreadable: Vec<WalkIssue>,
    /// Paths skipped on purpose (special files).
    pub skipped: Vec<WalkIssue>,
}

/// The walk could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalkError {
    /// The dataset root does not exist or cannot be examined.
    #[error("cannot read {path}: {source}")]
    Root {
        /// The root.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The root is neither a file nor a directory.
    #[error("{path} is not a regular file or a directory")]
    RootKind {
        /// The root.
        path: PathBuf,
    },
}

fn mtime_ns(md: &fs::Metadata) -> i64 {
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

/// Walks `root`: a directory (its contents become the dataset) or a single file.
pub fn walk(root: &Path) -> Result<Walk, WalkError> {
    let md = fs::symlink_metadata(root).map_err(|source| WalkError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let mut out = Walk::default();
    if md.is_file() {
        let name = root
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_else(|| b"file".to_vec());
        out.entries.push(WalkEntry {
            rel: name,
            abs: root.to_path_buf(),
            mode: md.mode() & 0o7777,
            mtime_ns: mtime_ns(&md),
            kind: WalkKind::File { size: md.len() },
        });
        return Ok(out);
    }
    if !md.is_dir() {
        return Err(WalkError::RootKind {
            path: root.to_path_buf(),
        });
    }
    walk_dir(root, &mut Vec::new(), &mut out);
    out.entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn walk_dir(dir: &Path, rel: &mut Vec<u8>, out: &mut Walk) {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            out.unreadable.push(WalkIssue {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            });
            return;
        }
    };
    let mut children: Vec<_> = Vec::new();
    for item in rd {
        match item {
            Ok(item) => children.push(item),
            Err(e) => out.unreadable.push(WalkIssue {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let abs = child.path();
        let name = child.file_name();
        let base = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        match fs::symlink_metadata(&abs) {
            Err(e) => out.unreadable.push(WalkIssue {
                path: abs.clone(),
                reason: e.to_string(),
            }),
            Ok(md) => {
                let ft = md.file_type();
                let entry = |kind| WalkEntry {
                    rel: rel.clone(),
                    abs: abs.clone(),
                    mode: md.mode() & 0o7777,
                    mtime_ns: mtime_ns(&md),
                    kind,
                };
                if ft.is_symlink() {
                    match fs::read_link(&abs) {
                        Ok(t) => out.entries.push(entry(WalkKind::Symlink {
                            target: t.as_os_str().as_bytes().to_vec(),
                        })),
                        Err(e) => out.unreadable.push(WalkIssue {
                            path: abs.clone(),
                            reason: e.to_string(),
                        }),
                    }
                } else if ft.is_dir() {
                    out.entries.push(entry(WalkKind::Dir));
                    walk_dir(&abs, rel, out);
                } else if ft.is_file() {
                    out.entries.push(entry(WalkKind::File { size: md.len() }));
                } else {
                    out.skipped.push(WalkIssue {
                        path: abs.clone(),
                        reason: "not a regular file, directory or symlink (socket, FIFO or device)"
                            .into(),
                    });
                }
            }
        }
        rel.truncate(base);
    }
}

/// Checks that a stored path is safe to create under a destination directory: relative, no
/// `..`, `.` or empty components, no NUL bytes.
pub fn check_relative_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path[0] == b'/' {
        return Err("absolute path");
    }
    if path.contains(&0) {
        return Err("NUL byte in path");
    }
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" => return Err("empty path component"),
            b"." | b".." => return Err("`.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    #[test]
    fn walks_links_odd_names_and_empty_dirs() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("d/empty")).unwrap();
        fs::write(r.join("d/f"), b"x").unwrap();
        fs::write(r.join("zero"), b"").unwrap();
        let odd = std::ffi::OsString::from_vec(vec![b'n', 0xff, b'x']);
        fs::write(r.join(&odd), b"odd").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("link")).unwrap();
        let w = walk(r).unwrap();
        let paths: Vec<&[u8]> = w.entries.iter().map(|e| e.rel.as_slice()).collect();
        assert_eq!(
            paths,
            vec![
                &b"d"[..],
                b"d/empty",
                b"d/f",
                b"link",
                &[b'n', 0xff, b'x'],
                b"zero"
            ]
        );
        assert!(
            matches!(&w.entries[3].kind, WalkKind::Symlink { target } if target == b"/etc/passwd")
        );
        assert!(w.unreadable.is_empty());
    }

    #[test]
    fn path_checks() {
        assert!(check_relative_path(b"a/b").is_ok());
        for bad in [&b""[..], b"/a", b"a/../b", b"a//b", b"./a", b"a\0b", b"a/"] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
        }
    }
}
