//! `annotate` end to end on the bundled sample: real GStreamer decode, real Silero VAD,
//! real Whisper, real CLI and JSON output.

mod common;

use serde_json::Value;

fn sample_truth() -> Value {
    serde_json::from_str(&std::fs::read_to_string(common::repo("samples/sample.json")).unwrap())
        .unwrap()
}

#[test]
fn sample_windows_match_the_speech_and_the_words() {
    if common::model("ggml-tiny.en-q8_0.bin").is_none()
        || common::model("ggml-silero-v6.2.0.bin").is_none()
    {
        return;
    }
    let sample = common::repo("samples/sample.mp4");
    let out = common::sentistream(&[
        "annotate",
        sample.to_str().unwrap(),
        "--no-progress",
        "--language",
        "en",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = common::events(&out);
    let truth = sample_truth();
    let sentences = truth["sentences"].as_array().unwrap();
    assert_eq!(
        events.len(),
        sentences.len(),
        "one window per sentence: {events:#?}"
    );
    let mut all_ref = String::new();
    let mut all_hyp = String::new();
    for (i, (e, s)) in events.iter().zip(sentences).enumerate() {
        assert_eq!(e["seq"], i as u64);
        assert_eq!(e["stream"], "sample.mp4");
        let (start, end) = (e["start"].as_f64().unwrap(), e["end"].as_f64().unwrap());
        let (ts, te) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(
            (start - ts).abs() <= 0.3,
            "window {i} starts at {start}, speech at {ts}"
        );
        assert!(
            (end - te).abs() <= 0.3,
            "window {i} ends at {end}, speech at {te}"
        );
        // 5 fps over the window, within a frame or two.
        let frames = e["frames"].as_u64().unwrap() as f64;
        assert!(
            (frames - (end - start) * 5.0).abs() <= 2.0,
            "window {i}: {frames} frames"
        );
        assert!(e["asr_confidence"].as_f64().unwrap() > 0.5);
        assert!(e["latency_ms"]["asr"].as_f64().unwrap() > 0.0);
        assert_eq!(e["language"], "en");
        for k in [
            "score",
            "polarity",
            "probs",
            "uncertainty",
            "stage",
            "ubm",
            "mllm",
        ] {
            assert!(e.get(k).is_some(), "field {k} missing");
        }
        // With the committed default UBM, every window carries a verdict.
        if common::repo("models/ubm.json").is_file() {
            let stage = e["stage"].as_str().unwrap();
            assert!(
                ["ubm", "mllm", "fused", "cross_verified"].contains(&stage),
                "{e}"
            );
            assert_eq!(stage == "ubm", e["mllm"].is_null(), "{e}");
            assert!(e["score"].as_f64().unwrap().abs() <= 3.0);
            assert!(e["uncertainty"].as_f64().unwrap() >= 0.0);
        }
        all_ref.push_str(s["text"].as_str().unwrap());
        all_ref.push(' ');
        all_hyp.push_str(e["text"].as_str().unwrap());
        all_hyp.push(' ');
    }
    let wer = common::wer(&all_ref, &all_hyp);
    eprintln!("WER {wer:.3}: {all_hyp}");
    assert!(wer < 0.15, "word error rate {wer:.3} >= 15%: {all_hyp}");
}

#[test]
fn auto_language_and_tiny_model_work_on_the_sample() {
    if common::model("ggml-tiny.en.bin").is_none()
        || common::model("ggml-silero-v6.2.0.bin").is_none()
    {
        return;
    }
    let sample = common::repo("samples/sample.mp4");
    let out = common::sentistream(&[
        "annotate",
        sample.to_str().unwrap(),
        "--whisper-model",
        "ggml-tiny.en.bin",
        "--stats",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = common::events(&out);
    assert_eq!(events.len(), 4);
    let text: String = events
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string() + " ")
        .collect();
    let truth = sample_truth();
    let reference: String = truth["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_string() + " ")
        .collect();
    assert!(common::wer(&reference, &text) < 0.25, "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("real-time factor"),
        "--stats prints the run figures: {stderr}"
    );
}

#[test]
fn escalated_windows_go_through_the_large_model_in_order() {
    if common::model("ggml-base.bin").is_none()
        || common::model("SmolLM2-135M-Instruct.Q4_1.gguf").is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("all.toml");
    // tau1 = 0: every window is escalated.
    std::fs::write(&cfg, "[cascade]\ntau1 = 0.0\n").unwrap();
    let sample = common::repo("samples/sample.mp4");
    let out = common::sentistream(&[
        "annotate",
        sample.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--language",
        "en",
        "--no-progress",
        "--stats",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = common::events(&out);
    assert_eq!(events.len(), 4);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64);
        let stage = e["stage"].as_str().unwrap();
        assert!(["mllm", "fused", "cross_verified"].contains(&stage), "{e}");
        assert!(e["mllm"]["uncertainty"].as_f64().unwrap() >= 0.0, "{e}");
        assert!(e["ubm"]["score"].is_number());
        assert!(e["latency_ms"]["mllm"].as_f64().unwrap() > 0.0, "{e}");
        let p = &e["probs"];
        let sum: f64 = ["negative", "neutral", "positive"]
            .iter()
            .map(|k| p[k].as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-3, "{e}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("escalated 4"), "{stderr}");
    // --no-cascade: the small model decides every window.
    let out = common::sentistream(&[
        "annotate",
        sample.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--language",
        "en",
        "--no-progress",
        "--no-cascade",
    ]);
    assert!(common::events(&out).iter().all(|e| e["stage"] == "ubm"));
}

/// A 98 s two-speaker call (samples/call.mp4, scripts/make-call): Whisper keeps the cores
/// busy while the audio decoder runs far ahead of the video, and every window must still
/// get its frames (a window once went out with none when audio was 30 s ahead), the same
/// on every run; the words are there (the default models, language detected).
#[test]
fn long_call_windows_get_their_frames_and_words() {
    if common::model("ggml-base-q8_0.bin").is_none() || common::model("ubm.safetensors").is_none() {
        return;
    }
    let call = common::repo("samples/call.mp4");
    let out = common::sentistream(&[
        "annotate",
        call.to_str().unwrap(),
        "--no-progress",
        "--no-cascade",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = common::events(&out);
    assert!(events.len() >= 15, "{} windows for 26 turns", events.len());
    for e in &events {
        let (start, end) = (e["start"].as_f64().unwrap(), e["end"].as_f64().unwrap());
        let frames = e["frames"].as_u64().unwrap() as f64;
        assert!(
            frames >= ((end - start) * 5.0 - 2.0).floor(),
            "window {start:.1}-{end:.1} s has {frames} frames"
        );
        assert_eq!(e["language"], "en");
    }
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(common::repo("samples/call.json")).unwrap())
            .unwrap();
    let reference: Vec<&str> = truth["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    let hyp: Vec<&str> = events.iter().map(|e| e["text"].as_str().unwrap()).collect();
    let wer = common::wer(&reference.join(" "), &hyp.join(" "));
    assert!(wer < 0.3, "WER {wer:.3}");
}
