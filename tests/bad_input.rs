//! Bad input never panics or hangs: each case gives a one-line error naming the input and
//! what to do, with a non-zero exit, or (no video, silence, noise) a correct degraded run.

mod common;

use std::path::Path;
use std::process::Output;

fn have_models() -> bool {
    common::model("ggml-tiny.en.bin").is_some() && common::model("ggml-silero-v6.2.0.bin").is_some()
}

fn annotate(input: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "annotate",
        input.to_str().unwrap(),
        "--no-progress",
        "--whisper-model",
        "ggml-tiny.en.bin",
    ];
    args.extend_from_slice(extra);
    common::sentistream(&args)
}

/// Asserts a clean failure: non-zero exit, one `error:` line naming `needle`, no panic.
fn assert_clean_error(out: &Output, needle: &str, hint: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {stderr}");
    assert!(
        errors[0].contains(needle),
        "error must name {needle}: {}",
        errors[0]
    );
    assert!(
        errors[0].contains(hint),
        "error must say {hint:?}: {}",
        errors[0]
    );
}

#[test]
fn missing_file() {
    if !have_models() {
        return;
    }
    let out = annotate(Path::new("/no/such/clip.mp4"), &[]);
    assert_clean_error(&out, "/no/such/clip.mp4", "no such file");
}

#[test]
fn unreadable_input_directory() {
    if !have_models() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = annotate(dir.path(), &[]);
    assert_clean_error(&out, &dir.path().display().to_string(), "directory");
}

#[test]
fn empty_file() {
    if !have_models() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.mp4");
    std::fs::write(&p, b"").unwrap();
    assert_clean_error(&annotate(&p, &[]), "empty.mp4", "0 bytes");
}

#[test]
fn text_file_renamed_mp4() {
    if !have_models() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.mp4");
    std::fs::write(&p, "these are meeting notes, not a video\n".repeat(50)).unwrap();
    assert_clean_error(&annotate(&p, &[]), "notes.mp4", "cannot decode");
}

#[test]
fn file_without_audio_track() {
    if !have_models() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("video_only.mp4");
    common::make_media(
        "videotestsrc num-buffers=30 ! video/x-raw,width=64,height=48,framerate=15/1 ! x264enc ! mp4mux",
        &p,
    );
    assert_clean_error(&annotate(&p, &[]), "video_only.mp4", "no audio track");
}

#[test]
fn file_without_video_track_runs_audio_only() {
    if !have_models() {
        return;
    }
    // The sample's speech without its picture.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("speech.m4a");
    let sample = common::repo("samples/sample.mp4");
    common::make_media(
        &format!(
            "filesrc location={} ! qtdemux ! aacparse ! mp4mux",
            sample.display()
        ),
        &p,
    );
    let out = annotate(&p, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = common::events(&out);
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events.iter().all(|e| e["frames"] == 0));
    assert!(
        events
            .iter()
            .all(|e| !e["text"].as_str().unwrap().is_empty())
    );
}

#[test]
fn silent_file_gives_no_windows() {
    if !have_models() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("silence.mp4");
    common::make_media(
        "videotestsrc num-buffers=50 ! video/x-raw,width=64,height=48,framerate=10/1 ! x264enc ! m. \
         audiotestsrc wave=silence num-buffers=200 ! audioconvert ! avenc_aac ! aacparse ! mp4mux name=m",
        &p,
    );
    let out = annotate(&p, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        common::events(&out).is_empty(),
        "silence must produce no window"
    );
}

#[test]
fn noise_produces_no_hallucinated_text() {
    if !have_models() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("noise.wav");
    common::make_media(
        "audiotestsrc wave=pink-noise volume=0.3 num-buffers=250 ! audio/x-raw,rate=16000,channels=1 ! wavenc",
        &p,
    );
    let out = annotate(&p, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for e in common::events(&out) {
        assert_eq!(e["text"], "", "noise transcribed as {e}");
    }
}

#[test]
fn missing_model_file() {
    let out = common::sentistream(&[
        "annotate",
        common::repo("samples/sample.mp4").to_str().unwrap(),
        "--whisper-model",
        "/no/such/ggml-model.bin",
        "--no-progress",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("ggml-silero") {
        common::skip("the VAD model is not installed");
        return;
    }
    assert_clean_error(&out, "/no/such/ggml-model.bin", "models install");
}

#[test]
fn corrupt_model_file() {
    if !have_models() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.bin");
    let real = std::fs::read(common::model("ggml-tiny.en.bin").unwrap()).unwrap();
    std::fs::write(&p, &real[..1_000_000]).unwrap();
    let out = common::sentistream(&[
        "annotate",
        common::repo("samples/sample.mp4").to_str().unwrap(),
        "--whisper-model",
        p.to_str().unwrap(),
        "--no-progress",
    ]);
    assert_clean_error(&out, "broken.bin", "corrupt");
    let vad = dir.path().join("vad.bin");
    std::fs::write(&vad, b"garbage garbage garbage").unwrap();
    let out = annotate(
        &common::repo("samples/sample.mp4"),
        &["--vad-model", vad.to_str().unwrap()],
    );
    assert_clean_error(&out, "vad.bin", "corrupt");
}

#[test]
fn invalid_config_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[source]\nvideo_fps = 0\n[asr]\nthreads = 0\nlanguage = \"xx\"\n",
    )
    .unwrap();
    let out = common::sentistream(&["--config", p.to_str().unwrap(), "validate-config"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["source.video_fps", "asr.threads", "asr.language"] {
        assert!(stderr.contains(key), "{key} not reported: {stderr}");
    }
    let ok = common::sentistream(&[
        "--config",
        common::repo("configs/default.toml").to_str().unwrap(),
        "validate-config",
    ]);
    assert!(ok.status.success());
}

#[test]
fn ten_config_mistakes_of_five_kinds_are_reported_in_one_run_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "\
[source]
video_fps = 0
video_widht = 320
[asr]
threads = \"two\"
language = 42
no_speech_threshold = 2.0
[segment]
neg_threshold = 0.9
[cascade]
backend = \"gpu\"
when_full = \"sometimes\"
queue = 0
[sink]
notices = true
",
    )
    .unwrap();
    // Every command that reads the config reports the same; validate-config and run.
    for args in [vec!["validate-config"], vec!["run", "x.mp4"]] {
        let mut all = vec!["--config", p.to_str().unwrap()];
        all.extend(args);
        let out = common::sentistream(&all);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        for expected in [
            "line 2: source.video_fps = 0",
            "line 3: unknown key `source.video_widht`; did you mean `video_width`?",
            "line 5: asr.threads = \"two\": invalid type",
            "line 6: asr.language = 42: invalid type",
            "line 7: asr.no_speech_threshold = 2",
            "line 9: segment.neg_threshold = 0.9",
            "line 11: cascade.backend = \"gpu\": unknown variant",
            "line 12: cascade.when_full = \"sometimes\": unknown variant",
            "line 13: cascade.queue = 0",
            "line 14: unknown key `sink`; did you mean `sinks`?",
        ] {
            assert!(
                stderr.contains(expected),
                "{expected:?} not reported:\n{stderr}"
            );
        }
    }
}

#[test]
fn an_output_that_cannot_be_written_fails_before_any_work() {
    if !have_models() {
        return;
    }
    // /proc refuses new files even to root, like a read-only folder to a user.
    let sample = common::repo("samples/sample.mp4");
    let out = annotate(&sample, &["--out", "/proc/sentistream-out.vtt"]);
    assert_clean_error(&out, "/proc/sentistream-out.vtt", "output");
    assert!(out.stdout.is_empty(), "nothing was processed first");
    let out = common::sentistream(&[
        "run",
        sample.to_str().unwrap(),
        "--live",
        "--sink",
        "/proc/{stream}.jsonl",
    ]);
    assert_clean_error(&out, "/proc/{stream}.jsonl", "output");
}

#[test]
fn when_every_output_fails_the_run_stops_with_an_error() {
    use std::io::{BufRead, BufReader};
    if !have_models() {
        return;
    }
    let looped = format!(
        "{}?location={}",
        common::repo("pipelines/realtime-file.gst").display(),
        common::repo("samples/sample.mp4").display()
    );
    // A live, looping source would run forever; stdout is its only output.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sentistream"))
        .args([
            "run",
            &looped,
            "--live",
            "--language",
            "en",
            "--whisper-model",
            "ggml-tiny.en.bin",
        ])
        .env("SENTISTREAM_MODELS", common::models_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first line (the stream started), then close the reading end.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("started"), "{first}");
    // The run must stop by itself; a hang fails the test instead of blocking it.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("the run did not stop after its only output failed");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("every output failed"), "{stderr}");
    assert!(stderr.contains("error: output stdout"), "{stderr}");
}

#[test]
fn unreadable_file_permissions() {
    use std::os::unix::fs::PermissionsExt;
    if !have_models() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("locked.mp4");
    std::fs::copy(common::repo("samples/sample.mp4"), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&p).is_ok() {
        eprintln!(
            "SKIPPED: running as root, file permissions do not stop reads (the directory case covers unreadable input)"
        );
        return;
    }
    assert_clean_error(&annotate(&p, &[]), "locked.mp4", "permissions");
}
