//! The output disk full while the Parquet views are written: a clear error, no partial file
//! visible, and a rerun after space is freed that completes exactly.
//!
//! The test mounts a small tmpfs (it needs root, as CI has; without it the test fails under
//! `CI=true` and is skipped otherwise) and fills most of it with a filler file.

mod common;

use std::path::Path;
use std::process::Command;

use common::{data_file, read_view, snapshot};
use wattflow_pipelines::Replay;

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Option<Tmpfs<'a>> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs(dir));
        }
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "cannot mount a tmpfs at {} (CI=true: not skipping)",
            dir.display()
        );
        eprintln!("cannot mount a tmpfs (not root?): skipping");
        None
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// Every Parquet file under `dir` reads to its end, every JSON file parses, and no temporary
/// file is left.
fn assert_no_partial_files(dir: &Path) {
    for (name, bytes) in snapshot(dir) {
        assert!(
            !name.contains(".tmp"),
            "temporary file left visible: {name}"
        );
        if name.ends_with(".parquet") {
            let file = std::fs::File::open(dir.join(&name)).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap_or_else(|e| panic!("{name} is not a complete Parquet file: {e}"))
                    .build()
                    .unwrap();
            for batch in reader {
                batch.unwrap_or_else(|e| panic!("{name} does not read to its end: {e}"));
            }
        }
        if name.ends_with(".json") {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("{name} is not complete JSON: {e}"));
        }
    }
}

#[test]
fn a_full_disk_fails_clearly_leaves_no_partial_file_and_a_rerun_after_freeing_space_is_exact() {
    let Some(input) = data_file("uci_first_30_days.txt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    Replay::new(&reference).input(&input).run().unwrap();

    let mnt = dir.path().join("small-disk");
    let Some(_fs) = Tmpfs::mount(&mnt, "4m") else {
        return;
    };
    // Leave about 600 KiB free: less than the views need (about 1.6 MB).
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 3500 * 1024]).unwrap();
    let out = mnt.join("views");
    let err = Replay::new(&out)
        .input(&input)
        .run()
        .expect_err("the views do not fit");
    let message = err.to_string();
    eprintln!("replay on a full disk: {message}");
    assert!(
        message.contains("No space left") || message.contains("space"),
        "the error says the disk is full: {message}"
    );
    assert_no_partial_files(&out);

    std::fs::remove_file(&filler).unwrap();
    let summary = Replay::new(&out)
        .input(&input)
        .run()
        .expect("rerun after freeing space");
    assert!(summary.readings > 0);
    assert_no_partial_files(&out);
    for g in ["minute", "hour", "day"] {
        let (got, want) = (read_view(&out, g), read_view(&reference, g));
        assert!(!want.is_empty());
        assert_eq!(got.len(), want.len(), "{g}: rows after the rerun");
        assert!(
            got == want,
            "{g}: the rerun's view equals an undisturbed run's"
        );
    }
}
