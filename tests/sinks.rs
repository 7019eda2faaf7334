//! Golden files for every file sink (JSONL, WebVTT, SRT), read back with the parsers; the
//! files are valid after every window (a crash leaves a valid file); and `annotate --out`
//! end to end.

mod common;

use sentistream::event::{
    Event, FallbackReason, Latency, Opinion, Output, Polarity, Probs, Stage, StatusEvent,
    StreamStatus,
};
use sentistream::sinks::Sink;
use sentistream::sinks::files::{FileSink, Format, parse_srt, parse_vtt};

fn event(seq: u64, start: f64, end: f64, text: &str, score: f32, stage: Stage) -> Output {
    let pol = if score > 0.1 {
        Polarity::Positive
    } else if score < -0.1 {
        Polarity::Negative
    } else {
        Polarity::Neutral
    };
    Output::Window(Event {
        stream: "call".into(),
        seq,
        start,
        end,
        voiced_s: None,
        no_sentiment: None,
        speaker: None,
        channel: None,
        text: text.into(),
        language: Some("en".into()),
        asr_confidence: 0.9,
        frames: 10,
        score: Some(score),
        polarity: Some(pol),
        probs: Some(Probs {
            negative: 0.1,
            neutral: 0.2,
            positive: 0.7,
        }),
        uncertainty: Some(0.5),
        stage: Some(stage),
        fallback_reason: (stage == Stage::UbmFallback).then_some(FallbackReason::QueueFull),
        ubm: Some(Opinion {
            score,
            uncertainty: 0.5,
        }),
        mllm: None,
        latency_ms: Latency::default(),
        emitted_at_ms: 1000,
    })
}

fn outputs() -> Vec<Output> {
    vec![
        Output::Status(StatusEvent {
            stream: "call".into(),
            status: StreamStatus::Started,
            at: 0.0,
            reason: None,
            emitted_at_ms: 1000,
        }),
        event(
            0,
            1.088,
            5.024,
            "I really love how this turned out.",
            2.768,
            Stage::Ubm,
        ),
        event(
            1,
            6.5,
            9.25,
            "It was not great --> honestly.\n\nSecond line.",
            -1.5,
            Stage::CrossVerified,
        ),
        event(2, 3661.001, 3662.5, "", 0.0, Stage::UbmFallback),
        Output::Status(StatusEvent {
            stream: "call".into(),
            status: StreamStatus::Interrupted,
            at: 3663.0,
            reason: Some("connection reset".into()),
            emitted_at_ms: 1000,
        }),
    ]
}

#[test]
fn file_sinks_match_golden_files_and_parse_back() {
    let dir = tempfile::tempdir().unwrap();
    for (ext, format) in [
        ("jsonl", Format::Jsonl),
        ("vtt", Format::Vtt),
        ("srt", Format::Srt),
    ] {
        let path = dir.path().join(format!("out.{ext}"));
        assert_eq!(Format::from_path(&path), Some(format));
        let mut sink = FileSink::new(&path, format).unwrap();
        for (i, o) in outputs().iter().enumerate() {
            sink.write(o).unwrap();
            // Valid after every write: what a crash would leave.
            let text = std::fs::read_to_string(&path).unwrap();
            match format {
                Format::Vtt => {
                    parse_vtt(&text).unwrap_or_else(|e| panic!("after {i}: {e}\n{text}"));
                }
                Format::Srt => {
                    parse_srt(&text).unwrap_or_else(|e| panic!("after {i}: {e}\n{text}"));
                }
                Format::Jsonl => {
                    for l in text.lines() {
                        serde_json::from_str::<serde_json::Value>(l).unwrap();
                    }
                }
                Format::Summary | Format::Html => unreachable!("not in this loop"),
            }
        }
        sink.close().unwrap();
        let got = std::fs::read_to_string(&path).unwrap();
        let golden = common::repo(&format!("tests/fixtures/golden/sinks.{ext}"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &got).unwrap();
        }
        assert_eq!(
            got,
            std::fs::read_to_string(&golden).unwrap(),
            "{ext} differs from {}",
            golden.display()
        );
    }
    let cues = parse_vtt(&std::fs::read_to_string(dir.path().join("out.vtt")).unwrap()).unwrap();
    assert_eq!(cues.len(), 3);
    assert_eq!((cues[0].start, cues[0].end), (1.088, 5.024));
    assert!(
        cues[0]
            .text
            .starts_with("[positive +2.77 ubm] I really love")
    );
    assert_eq!(
        cues[1].text,
        "[negative -1.50 cross-verified] It was not great -> honestly.\nSecond line."
    );
    assert_eq!(cues[2].start, 3661.001);
    let srt = parse_srt(&std::fs::read_to_string(dir.path().join("out.srt")).unwrap()).unwrap();
    assert_eq!(srt.len(), 3);
    assert_eq!(
        srt[2].text,
        "[neutral +0.00 ubm fallback] (no speech recognised)"
    );
}

#[test]
fn stream_placeholder_splits_files_and_a_bad_folder_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = FileSink::new(&dir.path().join("{stream}.srt"), Format::Srt).unwrap();
    for o in outputs() {
        sink.write(&o).unwrap();
    }
    assert!(dir.path().join("call.srt").is_file());
    let e = FileSink::new(std::path::Path::new("/nonexistent/dir/x.vtt"), Format::Vtt)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("/nonexistent/dir") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn annotate_writes_subtitles_as_it_goes() {
    if common::model("ggml-base.bin").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (vtt, srt, jsonl) = (
        dir.path().join("call.vtt"),
        dir.path().join("call.srt"),
        dir.path().join("call.jsonl"),
    );
    let args = common::annotate_sample(&[&vtt, &srt, &jsonl]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::sentistream(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = common::events(&out);
    assert_eq!(events.len(), 4);
    let cues = parse_vtt(&std::fs::read_to_string(&vtt).unwrap()).unwrap();
    let srt_cues = parse_srt(&std::fs::read_to_string(&srt).unwrap()).unwrap();
    assert_eq!((cues.len(), srt_cues.len()), (4, 4));
    for (c, e) in cues.iter().zip(&events) {
        assert!((c.start - e["start"].as_f64().unwrap()).abs() < 0.0015);
        assert!(c.text.contains(e["text"].as_str().unwrap()), "{c:?}");
    }
    assert_eq!(
        std::fs::read_to_string(&jsonl).unwrap(),
        String::from_utf8_lossy(&out.stdout),
        "the JSONL file equals stdout"
    );
    let sample = common::repo("samples/sample.mp4");
    let bad = common::sentistream(&["annotate", sample.to_str().unwrap(), "--out", "x.txt"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains(".vtt"));
}
