//! Languages end to end, with the real binary, Whisper and both small models: a
//! Mandarin support call with two English turns (samples/zh-call.mp4, scripts/make-zh-call)
//! gets each window's language, Mandarin windows the Chinese model (multilingual-e5 text
//! features), English ones the English model; a language without a model gets no verdict
//! and says why; `eval --scale sims` prints MMSA's CH-SIMS metrics.

mod common;

use serde_json::Value;

/// The call's turns (samples/zh-call.json).
fn turns() -> Vec<Value> {
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo("samples/zh-call.json")).unwrap(),
    )
    .unwrap();
    truth["turns"].as_array().unwrap().clone()
}

/// The turn a window covers most.
fn turn_of<'a>(turns: &'a [Value], e: &Value) -> &'a Value {
    let (s, t) = (e["start"].as_f64().unwrap(), e["end"].as_f64().unwrap());
    let overlap = |u: &Value| {
        let (a, b) = (u["start"].as_f64().unwrap(), u["end"].as_f64().unwrap());
        (t.min(b) - s.max(a)).max(0.0)
    };
    turns
        .iter()
        .max_by(|a, b| overlap(a).total_cmp(&overlap(b)))
        .unwrap()
}

fn has_models() -> bool {
    [
        "ubm.json",
        "ubm-zh.json",
        "multilingual-e5-small/e5-small-q4.bin",
    ]
    .iter()
    .all(|m| common::model(m).is_some())
}

/// A config file that detects the language on every window, English or Mandarin, with
/// `more` TOML after it.
fn redetect_config(dir: &std::path::Path, more: &str) -> String {
    let p = dir.join("redetect.toml");
    std::fs::write(
        &p,
        format!("[asr]\nredetect_language = true\nlanguages = [\"en\", \"zh\"]\n{more}"),
    )
    .unwrap();
    p.display().to_string()
}

/// The call's window events from `annotate` with `extra` arguments, detecting English
/// or Mandarin on every window (one Whisper thread: the tests run side by side).
fn annotate_call(extra: &[&str]) -> Vec<Value> {
    annotate_call_with("", extra)
}

/// [`annotate_call`] with more configuration (TOML).
fn annotate_call_with(config: &str, extra: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = redetect_config(dir.path(), config);
    let call = common::repo("samples/zh-call.mp4").display().to_string();
    let mut args = vec![
        "annotate",
        &call,
        "--no-progress",
        "--config",
        &cfg,
        "--threads",
        "1",
    ];
    args.extend(extra);
    let out = common::sentistream(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::events(&out)
}

#[test]
fn each_window_is_scored_by_the_model_of_its_language() {
    if !has_models() {
        return;
    }
    let events = annotate_call(&[]);
    let turns = turns();
    assert_eq!(
        events.len(),
        turns.len(),
        "one window per turn: {events:#?}"
    );
    // espeak-ng's Mandarin is rough: Whisper may take a Mandarin turn for English now and
    // then (the last one), so most, not all, Mandarin turns must be heard as such.
    let (mut zh_right, mut zh_turns) = (0, 0);
    for e in &events {
        let turn = turn_of(&turns, e);
        // Every window has a verdict, from the model of the language it was heard in.
        assert!(e["score"].is_number(), "{e}");
        assert!(e.get("no_sentiment").is_none(), "{e}");
        assert!(e["score"].as_f64().unwrap().abs() <= 3.0, "{e}");
        if turn["language"] == "en" {
            assert_eq!(e["language"], "en", "an English turn: {e}");
            continue;
        }
        zh_turns += 1;
        if e["language"] == "zh" {
            zh_right += 1;
            let text = e["text"].as_str().unwrap();
            assert!(
                text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
                "a Mandarin transcript: {text}"
            );
            // The built-in large model is English and no [[cascade.languages]] entry is
            // configured: Mandarin windows stay with the small model.
            assert_eq!(e["stage"], "ubm", "{e}");
        }
    }
    assert!(zh_turns == 4 && zh_right >= 3, "{events:#?}");
    // The Chinese model reads the angry complaint as negative.
    let complaint = events
        .iter()
        .find(|e| turn_of(&turns, e)["grade"].as_f64() == Some(-0.8))
        .unwrap();
    assert_eq!(complaint["language"], "zh");
    assert!(complaint["score"].as_f64().unwrap() < 0.0, "{complaint}");
}

/// The Chinese large model (Qwen2.5-Coder-0.5B-Instruct, installed by setup) and
/// llama.cpp's server to serve it, or `None` (skip; a failure under CI).
fn qwen() -> Option<std::path::PathBuf> {
    let py = common::repo("third_party/xllamacpp/bin/python");
    if !py.is_file() {
        common::skip(&format!("{} is not installed", py.display()));
        return None;
    }
    common::model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
}

#[test]
fn mandarin_windows_escalate_to_the_chinese_large_model() {
    if !has_models() {
        return;
    }
    let Some(gguf) = qwen() else {
        return;
    };
    let server = common::LlmServer::start(&gguf, common::free_port());
    // tau1 = 0: every Mandarin window goes to the Chinese large model.
    let lane = format!(
        "[[cascade.languages]]\nlanguages = [\"zh\"]\nurl = \"{}\"\ntau1 = 0.0\n",
        server.url()
    );
    let events = annotate_call_with(&lane, &[]);
    let turns = turns();
    let mut zh = 0;
    for e in events.iter().filter(|e| e["language"] == "zh") {
        zh += 1;
        let stage = e["stage"].as_str().unwrap();
        assert!(
            ["mllm", "fused", "cross_verified"].contains(&stage),
            "answered by the large model: {e}"
        );
        assert!(e["fallback_reason"].is_null(), "{e}");
        let large = e["mllm"]["score"].as_f64().unwrap();
        assert!(large.abs() <= 3.0, "on the events' scale: {e}");
    }
    assert!(zh >= 3, "{events:#?}");
    let complaint = events
        .iter()
        .find(|e| turn_of(&turns, e)["grade"].as_f64() == Some(-0.8))
        .unwrap();
    assert!(
        complaint["mllm"]["score"].as_f64().unwrap() < 0.0,
        "{complaint}"
    );
    assert!(complaint["score"].as_f64().unwrap() < 0.0, "{complaint}");
    // With the endpoint gone, Mandarin windows keep the small model's verdict and say
    // why; nothing is lost.
    drop(server);
    let events = annotate_call_with(&lane, &[]);
    assert_eq!(events.len(), turns.len(), "{events:#?}");
    for e in events.iter().filter(|e| e["language"] == "zh") {
        assert_eq!(e["stage"], "ubm_fallback", "{e}");
        assert_eq!(e["fallback_reason"], "backend_unreachable", "{e}");
        assert!(e["score"].is_number(), "{e}");
    }
}

#[test]
fn a_language_without_a_model_gets_no_verdict_and_says_why() {
    if !has_models() {
        return;
    }
    let english = common::models_dir().join("ubm").display().to_string();
    let events = annotate_call(&["--ubm", &english]);
    let (mut zh, mut en) = (0, 0);
    for e in &events {
        if e["language"] == "zh" {
            zh += 1;
            assert!(e["score"].is_null() && e["stage"].is_null(), "{e}");
            let why = e["no_sentiment"].as_str().unwrap();
            assert!(
                why.contains("\"zh\"") && why.contains("train ubm --languages zh"),
                "{why}"
            );
            assert!(
                !e["text"].as_str().unwrap().is_empty(),
                "the transcript is kept"
            );
        } else {
            en += 1;
            assert!(e["score"].is_number(), "{e}");
        }
    }
    assert!(zh >= 3 && en >= 1, "{events:#?}");
    // Two models for one language cannot both be meant.
    let call = common::repo("samples/zh-call.mp4").display().to_string();
    let out = common::sentistream(&["annotate", &call, "--ubm", &english, "--ubm", &english]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("both for language \"en\""), "{err}");
}

#[test]
fn eval_prints_the_ch_sims_metrics() {
    if !has_models() {
        return;
    }
    // A small CH-SIMS-style dataset: the call's recording under three labels.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("Raw/call");
    std::fs::create_dir_all(&raw).unwrap();
    let mut csv =
        String::from("video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n");
    for (i, label) in ["-0.8", "0.2", "0.6"].iter().enumerate() {
        std::fs::copy(
            common::repo("samples/zh-call.mp4"),
            raw.join(format!("{i}.mp4")),
        )
        .unwrap();
        csv.push_str(&format!("call,{i},您好。,{label},{label},0,0,x,test\n"));
    }
    std::fs::write(dir.path().join("label.csv"), csv).unwrap();
    let data = dir.path().display().to_string();
    let zh = common::models_dir().join("ubm-zh").display().to_string();
    let args = [
        "eval", "--data", &data, "--scale", "sims", "--split", "test", "--ubm", &zh,
    ];
    let out = common::sentistream(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CH-SIMS metrics (MMSA)"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("| UBM T+A+V | "))
        .unwrap_or_else(|| panic!("{text}"));
    // Acc2 .. Corr: six numbers, the accuracies in [0, 1].
    let nums: Vec<f64> = row
        .split('|')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    assert_eq!(nums.len(), 6, "{row}");
    assert!(nums[..4].iter().all(|v| (0.0..=1.0).contains(v)), "{row}");
    // A bad language is a clear error.
    let mut bad = args.to_vec();
    bad.extend(["--text", "asr", "--language", "klingon"]);
    let out = common::sentistream(&bad);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--language \"klingon\""));
}
