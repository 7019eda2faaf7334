//! `annotate` on many calls: a batch with a corrupt file, the summary table, resuming,
//! the call summary and the HTML reports (rendered in headless Chromium).

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn have_models() -> bool {
    common::model("ggml-base-q8_0.bin").is_some()
        && common::model("ggml-silero-v6.2.0.bin").is_some()
}

fn table(dir: &Path) -> Vec<csv::StringRecord> {
    let mut r = csv::Reader::from_path(dir.join("summary.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    assert_eq!(&h[0], "call");
    assert_eq!(&h[2], "status");
    r.records().map(|x| x.unwrap()).collect()
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn a_batch_of_ten_with_a_corrupt_file_resumes_and_reports() {
    if !have_models() {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let sample = common::repo("samples/sample.mp4");
    for i in 0..9 {
        std::fs::copy(&sample, src.path().join(format!("call{i}.mp4"))).unwrap();
    }
    std::fs::write(src.path().join("broken.mp4"), b"this is not a video at all").unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("batch");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "annotate".to_string(),
            src.path().display().to_string(),
            "--out-dir".into(),
            dir.display().to_string(),
            "--language".into(),
            "en".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let a = args(&["--jobs", "3"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let first = common::sentistream(&a);
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(
        first.status.code(),
        Some(1),
        "a failed call makes the exit code 1: {err}"
    );
    assert!(err.contains("broken"), "{err}");
    let rows = table(&dir);
    assert_eq!(rows.len(), 10, "one row per call");
    let bad: Vec<_> = rows.iter().filter(|r| &r[2] == "error").collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(&bad[0][0], "broken");
    assert!(
        bad[0][3].contains("broken.mp4"),
        "the error names the file: {:?}",
        bad[0]
    );
    for r in rows.iter().filter(|r| &r[2] == "ok") {
        let id = &r[0];
        assert_eq!(&r[5], "4", "{id}: the sample's 4 windows");
        let duration: f64 = r[4].parse().unwrap();
        assert!((20.0..23.0).contains(&duration), "{id}: {duration}");
        let events: Vec<Value> = std::fs::read_to_string(dir.join(format!("{id}.jsonl")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let windows = events.iter().filter(|e| e.get("seq").is_some()).count();
        assert_eq!(windows, 4, "{id}");
        let last = events.last().unwrap();
        let s = &last["summary"];
        assert_eq!(s["complete"], true, "{id}: the summary closes the file");
        assert_eq!(s["windows"], 4);
        // Talk time is the windows' voiced seconds.
        let talk: f64 = events
            .iter()
            .filter(|e| e.get("seq").is_some())
            .map(|e| e["voiced_s"].as_f64().unwrap())
            .sum();
        assert!((s["speakers"][0]["talk_s"].as_f64().unwrap() - talk).abs() < 0.01);
        assert!(dir.join(format!("{id}.html")).is_file());
    }
    let index = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert_eq!(index.matches("<a href=").count(), 9);
    assert!(index.contains("broken.mp4"));
    // Rerun: the nine are skipped, the broken one is tried again.
    let again = common::sentistream(&a);
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{err}");
    assert!(
        err.contains("9 done earlier (skipped), 1 to annotate"),
        "{err}"
    );
    assert_eq!(table(&dir).len(), 10);
    // The report renders in headless Chromium.
    shot(&dir.join("call0.html"), out.path());
}

/// Renders a page in headless Chromium: checks its DOM and screenshot.
fn shot(page: &Path, tmp: &Path) {
    let Some(bin) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        common::skip("chromium (for the report check) is not installed");
        return;
    };
    let url = format!("file://{}", page.display());
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1000,900",
    ];
    let png = tmp.join("report.png");
    let o = Command::new(bin)
        .args(args)
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .unwrap();
    let bytes = std::fs::read(&png)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(png_size(&bytes), (1000, 900));
    assert!(
        bytes.len() > 20_000,
        "a drawn page, not a blank one: {} bytes",
        bytes.len()
    );
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    let _ = std::fs::copy(&png, keep);
    let dom = Command::new(bin)
        .args(args)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<polyline"), "the chart");
    assert_eq!(
        dom.matches("class=\"line\"").count(),
        4,
        "four transcript lines"
    );
    assert!(dom.contains("Most negative moments") || !dom.contains("negative"));
}

#[test]
fn several_inputs_without_an_out_dir_and_a_bad_pattern_say_what_to_do() {
    let o = common::sentistream(&["annotate", "a.mp4", "b.mp4"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("add --out-dir DIR"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let o = common::sentistream(&[
        "annotate",
        "/nonexistent/*.wav",
        "--out-dir",
        dir.path().to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("matches no file"), "{err}");
}
